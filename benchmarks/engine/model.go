package engine

import (
	_ "embed"
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/kvtier/kvtier/codec"
)

// Config is a model's shape (llama2.c's header).
type Config struct {
	Dim, Hidden, Layers, Heads, KVHeads, Vocab, SeqLen int
}

// HeadDim is the dimension of one attention head.
func (c Config) HeadDim() int { return c.Dim / c.Heads }

// KVDim is the width of one token's K (or V) in one layer.
func (c Config) KVDim() int { return c.KVHeads * c.HeadDim() }

// Params is the number of parameters up to the final norm.
func (c Config) Params() int {
	kv := c.KVDim()
	per := 2*c.Dim + c.Dim*c.Dim*2 + 2*kv*c.Dim + 3*c.Hidden*c.Dim
	return c.Vocab*c.Dim + c.Layers*per + c.Dim
}

func (c Config) validate() error {
	switch {
	case c.Dim <= 0 || c.Hidden <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.Vocab <= 0 || c.SeqLen <= 0:
		return fmt.Errorf("%w: non-positive dimension in %+v", ErrModel, c)
	case c.Dim > 1<<14 || c.Hidden > 1<<16 || c.Layers > 1024 || c.Vocab > 1<<20 || c.SeqLen > 1<<20:
		return fmt.Errorf("%w: dimensions too large in %+v", ErrModel, c)
	case c.Dim%c.Heads != 0 || c.Heads%c.KVHeads != 0 || c.HeadDim()%2 != 0:
		return fmt.Errorf("%w: heads do not divide the dimensions in %+v", ErrModel, c)
	}
	return nil
}

// Layer holds one transformer layer's weights, matrices row-major [out][in].
type Layer struct {
	AttNorm, FFNNorm []float32
	Wq, Wk, Wv, Wo   []float32
	W1, W2, W3       []float32
}

// Model is a loaded Llama-architecture model with a tied classifier.
type Model struct {
	Config
	Name      string
	Embedding []float32 // [vocab][dim]
	Weights   []Layer
	FinalNorm []float32
	cos, sin  []float32 // [seq][headDim/2]
}

// f16Magic starts the project's fp16 model file: the magic, llama2.c's
// 7-int32 header, then items 1-11 of llama2.c's version-0 layout as
// little-endian IEEE binary16.
const f16Magic = "KVTLMF16"

//go:embed models/tiny.f16
var tinyF16 []byte

var tiny struct {
	once sync.Once
	m    *Model
	err  error
}

// Tiny returns the model shipped in the project (shared; do not modify it).
func Tiny() (*Model, error) {
	tiny.once.Do(func() {
		tiny.m, tiny.err = Load(tinyF16)
		if tiny.m != nil {
			tiny.m.Name = "tiny"
		}
	})
	return tiny.m, tiny.err
}

// Load parses a model: llama2.c's model.bin (version 0, float32, a positive
// vocab_size meaning a tied classifier) or the project's fp16 file.
func Load(b []byte) (*Model, error) {
	elem := 4
	if len(b) >= len(f16Magic) && string(b[:len(f16Magic)]) == f16Magic {
		b, elem = b[len(f16Magic):], 2
	}
	if len(b) < 28 {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the header", ErrModel, len(b))
	}
	h := make([]int, 7)
	for i := range h {
		h[i] = int(int32(binary.LittleEndian.Uint32(b[4*i:])))
	}
	c := Config{Dim: h[0], Hidden: h[1], Layers: h[2], Heads: h[3], KVHeads: h[4], Vocab: h[5], SeqLen: h[6]}
	if c.Vocab < 0 {
		return nil, fmt.Errorf("%w: untied classifier (negative vocab_size) not supported", ErrModel)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	need := c.Params() * elem
	b = b[28:]
	if len(b) < need {
		return nil, fmt.Errorf("%w: %d bytes of weights, the header needs %d", ErrModel, len(b), need)
	}
	if elem == 2 && len(b) != need {
		return nil, fmt.Errorf("%w: %d bytes of fp16 weights, the header needs exactly %d", ErrModel, len(b), need)
	}
	r := reader{b: b, elem: elem}
	m := &Model{Config: c}
	kv := c.KVDim()
	m.Embedding = r.take(c.Vocab * c.Dim)
	m.Weights = make([]Layer, c.Layers)
	each := func(n int, set func(*Layer, []float32)) {
		for l := range m.Weights {
			set(&m.Weights[l], r.take(n))
		}
	}
	each(c.Dim, func(l *Layer, v []float32) { l.AttNorm = v })
	each(c.Dim*c.Dim, func(l *Layer, v []float32) { l.Wq = v })
	each(kv*c.Dim, func(l *Layer, v []float32) { l.Wk = v })
	each(kv*c.Dim, func(l *Layer, v []float32) { l.Wv = v })
	each(c.Dim*c.Dim, func(l *Layer, v []float32) { l.Wo = v })
	each(c.Dim, func(l *Layer, v []float32) { l.FFNNorm = v })
	each(c.Hidden*c.Dim, func(l *Layer, v []float32) { l.W1 = v })
	each(c.Dim*c.Hidden, func(l *Layer, v []float32) { l.W2 = v })
	each(c.Hidden*c.Dim, func(l *Layer, v []float32) { l.W3 = v })
	m.FinalNorm = r.take(c.Dim)
	for _, v := range m.Embedding {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("%w: non-finite embedding weight", ErrModel)
		}
	}
	m.initRoPE(10000)
	return m, nil
}

type reader struct {
	b    []byte
	elem int
}

func (r *reader) take(n int) []float32 {
	out := make([]float32, n)
	if r.elem == 4 {
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(r.b[4*i:]))
		}
	} else {
		for i := range out {
			out[i] = codec.HalfToFloat32(binary.LittleEndian.Uint16(r.b[2*i:]))
		}
	}
	r.b = r.b[n*r.elem:]
	return out
}

// EncodeF16 writes the model in the project's fp16 format.
func (m *Model) EncodeF16() []byte {
	out := append([]byte(nil), f16Magic...)
	c := m.Config
	for _, v := range []int{c.Dim, c.Hidden, c.Layers, c.Heads, c.KVHeads, c.Vocab, c.SeqLen} {
		out = binary.LittleEndian.AppendUint32(out, uint32(int32(v)))
	}
	put := func(v []float32) {
		for _, f := range v {
			out = binary.LittleEndian.AppendUint16(out, codec.Float32ToHalf(f))
		}
	}
	put(m.Embedding)
	for _, sel := range []func(*Layer) []float32{
		func(l *Layer) []float32 { return l.AttNorm }, func(l *Layer) []float32 { return l.Wq },
		func(l *Layer) []float32 { return l.Wk }, func(l *Layer) []float32 { return l.Wv },
		func(l *Layer) []float32 { return l.Wo }, func(l *Layer) []float32 { return l.FFNNorm },
		func(l *Layer) []float32 { return l.W1 }, func(l *Layer) []float32 { return l.W2 },
		func(l *Layer) []float32 { return l.W3 },
	} {
		for i := range m.Weights {
			put(sel(&m.Weights[i]))
		}
	}
	put(m.FinalNorm)
	return out
}

// initRoPE precomputes the rotation of interleaved pairs (2i, 2i+1):
// angle = pos · theta^(−2i/headDim).
func (m *Model) initRoPE(theta float64) {
	hd := m.HeadDim()
	m.cos = make([]float32, m.SeqLen*hd/2)
	m.sin = make([]float32, m.SeqLen*hd/2)
	for p := 0; p < m.SeqLen; p++ {
		for i := 0; i < hd/2; i++ {
			freq := math.Pow(theta, -float64(2*i)/float64(hd))
			a := float64(p) * freq
			m.cos[p*hd/2+i] = float32(math.Cos(a))
			m.sin[p*hd/2+i] = float32(math.Sin(a))
		}
	}
}
