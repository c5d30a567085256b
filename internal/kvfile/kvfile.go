package kvfile

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
)

// Format is the sidecar "format" value this package reads.
const Format = "tinylm-kv-dump/1"

// Tensor names present in every dump of this format.
const (
	KPreRoPE  = "k_pre_rope"
	KPostRoPE = "k_post_rope"
	V         = "v"
	QPostRoPE = "q_post_rope"
	AttnProbs = "attn_probs"
)

// Limits that keep a hostile sidecar from asking for absurd work.
const (
	maxRank    = 8
	maxTensors = 64
	maxElems   = 1 << 30
)

// Tensor describes one tensor of a dump.
type Tensor struct {
	Name   string   `json:"name"`
	DType  string   `json:"dtype"`
	Shape  []int    `json:"shape"`
	Dims   []string `json:"dims"`
	Offset int64    `json:"offset"`
	NBytes int64    `json:"nbytes"`
	// QueryPositions lists the absolute token position of each query row
	// (q_post_rope, attn_probs); empty for K and V.
	QueryPositions []int `json:"query_positions,omitempty"`
}

// Elems returns the number of elements (the product of Shape).
func (t Tensor) Elems() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= int64(d)
	}
	return n
}

// ElemSize returns the bytes per element of the tensor's dtype, 0 if unknown.
func (t Tensor) ElemSize() int {
	switch t.DType {
	case "float16":
		return 2
	case "float32":
		return 4
	}
	return 0
}

// Model is the sidecar's description of the model that produced the dump.
type Model struct {
	Arch      string  `json:"arch"`
	Dim       int     `json:"dim"`
	NLayers   int     `json:"n_layers"`
	NHeads    int     `json:"n_heads"`
	NKVHeads  int     `json:"n_kv_heads"`
	HeadDim   int     `json:"head_dim"`
	SeqLen    int     `json:"seq_len"`
	RoPETheta float64 `json:"rope_theta"`
}

// Prompt is the sidecar's description of the prompt.
type Prompt struct {
	Index      int     `json:"index"`
	SourceFile string  `json:"source_file"`
	NTokens    int     `json:"n_tokens"`
	Text       string  `json:"text"`
	ModelNLL   float64 `json:"model_nll_nats_per_byte"`
}

// Meta is the parsed sidecar.
type Meta struct {
	Format    string   `json:"format"`
	ByteOrder string   `json:"byte_order"`
	File      string   `json:"file"`
	FileSize  int64    `json:"file_size"`
	Model     Model    `json:"model"`
	Prompt    Prompt   `json:"prompt"`
	NTokens   int      `json:"n_tokens"`
	Tensors   []Tensor `json:"tensors"`
}

// File is a parsed dump: its sidecar and the whole data file.
type File struct {
	Meta Meta
	Data []byte
}

// SidecarPath returns the sidecar path for a data file path (x.bin → x.json).
func SidecarPath(binPath string) string {
	return strings.TrimSuffix(binPath, ".bin") + ".json"
}

// Open reads a dump: binPath (kv-pNN.bin) and its sidecar beside it. binPath
// may also name the sidecar; the data file is then the .bin beside it.
func Open(binPath string) (*File, error) {
	if strings.HasSuffix(binPath, ".json") {
		binPath = strings.TrimSuffix(binPath, ".json") + ".bin"
	}
	meta, err := os.ReadFile(SidecarPath(binPath))
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(binPath)
	if err != nil {
		return nil, err
	}
	return Parse(meta, data)
}

// Parse validates a sidecar against its data file. Every tensor must be a
// known dtype, lie inside data and have nbytes = product(shape) × dtype size.
func Parse(sidecar, data []byte) (*File, error) {
	var m Meta
	if err := json.Unmarshal(sidecar, &m); err != nil {
		return nil, fmt.Errorf("%w: sidecar: %v", ErrFormat, err)
	}
	if m.Format != Format {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrFormat, m.Format, Format)
	}
	if m.ByteOrder != "" && m.ByteOrder != "little" {
		return nil, fmt.Errorf("%w: byte order %q", ErrFormat, m.ByteOrder)
	}
	if m.FileSize != 0 && m.FileSize != int64(len(data)) {
		return nil, fmt.Errorf("%w: data is %d bytes, sidecar says %d", ErrFormat, len(data), m.FileSize)
	}
	if len(m.Tensors) > maxTensors {
		return nil, fmt.Errorf("%w: %d tensors", ErrFormat, len(m.Tensors))
	}
	for _, t := range m.Tensors {
		if err := checkTensor(t, int64(len(data))); err != nil {
			return nil, err
		}
	}
	return &File{Meta: m, Data: data}, nil
}

func checkTensor(t Tensor, size int64) error {
	es := t.ElemSize()
	if es == 0 {
		return fmt.Errorf("%w: tensor %q: dtype %q", ErrFormat, t.Name, t.DType)
	}
	if len(t.Shape) == 0 || len(t.Shape) > maxRank {
		return fmt.Errorf("%w: tensor %q: rank %d", ErrFormat, t.Name, len(t.Shape))
	}
	if len(t.Dims) != 0 && len(t.Dims) != len(t.Shape) {
		return fmt.Errorf("%w: tensor %q: %d dims for %d axes", ErrFormat, t.Name, len(t.Dims), len(t.Shape))
	}
	n := int64(1)
	for _, d := range t.Shape {
		if d <= 0 || d > maxElems {
			return fmt.Errorf("%w: tensor %q: axis of %d", ErrFormat, t.Name, d)
		}
		n *= int64(d)
		if n > maxElems {
			return fmt.Errorf("%w: tensor %q: too many elements", ErrFormat, t.Name)
		}
	}
	if t.NBytes != n*int64(es) {
		return fmt.Errorf("%w: tensor %q: nbytes %d, shape needs %d", ErrFormat, t.Name, t.NBytes, n*int64(es))
	}
	if t.Offset < 0 || t.Offset > size || t.NBytes > size-t.Offset {
		return fmt.Errorf("%w: tensor %q: [%d, +%d) outside the %d-byte data", ErrFormat, t.Name, t.Offset, t.NBytes, size)
	}
	return nil
}

// Tensor returns the description of the named tensor.
func (f *File) Tensor(name string) (Tensor, error) {
	for _, t := range f.Meta.Tensors {
		if t.Name == name {
			return t, nil
		}
	}
	return Tensor{}, fmt.Errorf("%w: %q", ErrNoTensor, name)
}

// Raw returns the named tensor's bytes (aliasing f.Data) and its description.
func (f *File) Raw(name string) ([]byte, Tensor, error) {
	t, err := f.Tensor(name)
	if err != nil {
		return nil, t, err
	}
	return f.Data[t.Offset : t.Offset+t.NBytes], t, nil
}

// Float32 returns the named tensor converted to float32, in C order.
func (f *File) Float32(name string) ([]float32, Tensor, error) {
	b, t, err := f.Raw(name)
	if err != nil {
		return nil, t, err
	}
	out := make([]float32, t.Elems())
	switch t.DType {
	case "float16":
		for i := range out {
			out[i] = HalfToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case "float32":
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	}
	return out, t, nil
}

// HalfToFloat32 converts an IEEE 754 binary16 value to float32 (exactly).
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0:
		f := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}
