package codecbench

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/internal/kveval"
	"github.com/kvtier/kvtier/internal/kvfile"
)

// Input is one KV block to measure and the queries that judge attention error.
type Input struct {
	Name   string
	Layout codec.Layout
	Raw    []byte
	// Queries[l] are the queries of layer l of the block (nil: no attention metrics).
	Queries []kveval.Queries
}

// LoadFixture reads a kvfile dump and builds one KVSeparate fp16 block from
// k_post_rope followed by v (all layers, all tokens), with the dump's
// q_post_rope as queries (causal: row r sees tokens 0 … query_positions[r]).
func LoadFixture(path string) (Input, error) {
	f, err := kvfile.Open(path)
	if err != nil {
		return Input{}, err
	}
	return FromDump(strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)), f)
}

// FromDump is LoadFixture on a parsed dump.
func FromDump(name string, f *kvfile.File) (Input, error) {
	kb, kt, err := f.Raw(kvfile.KPostRoPE)
	if err != nil {
		return Input{}, err
	}
	vb, vt, err := f.Raw(kvfile.V)
	if err != nil {
		return Input{}, err
	}
	if kt.DType != "float16" || vt.DType != "float16" || len(kt.Shape) != 4 || fmt.Sprint(kt.Shape) != fmt.Sprint(vt.Shape) {
		return Input{}, fmt.Errorf("%w: %s: want fp16 K and V of one [layer, kv_head, token, head_dim] shape", ErrInput, name)
	}
	L, H, T, D := kt.Shape[0], kt.Shape[1], kt.Shape[2], kt.Shape[3]
	l := codec.Layout{DType: codec.FP16, Order: codec.KVSeparate, Layers: uint16(L), KVHeads: uint16(H), HeadDim: uint16(D), Tokens: uint32(T)}
	if err := l.Validate(); err != nil {
		return Input{}, fmt.Errorf("%w: %s: %v", ErrInput, name, err)
	}
	raw := make([]byte, 0, len(kb)+len(vb))
	raw = append(append(raw, kb...), vb...)
	in := Input{Name: name, Layout: l, Raw: raw}
	q, qt, err := f.Float32(kvfile.QPostRoPE)
	if err != nil {
		return in, nil // no queries: attention metrics are skipped
	}
	if len(qt.Shape) != 4 || qt.Shape[0] != L || qt.Shape[3] != D || qt.Shape[1]%H != 0 {
		return Input{}, fmt.Errorf("%w: %s: q_post_rope shape %v", ErrInput, name, qt.Shape)
	}
	QH, R := qt.Shape[1], qt.Shape[2]
	vis := make([]int, R)
	for r := range vis {
		vis[r] = T
		if r < len(qt.QueryPositions) {
			vis[r] = min(qt.QueryPositions[r]+1, T)
		}
	}
	per := QH * R * D
	for ly := 0; ly < L; ly++ {
		in.Queries = append(in.Queries, kveval.Queries{Q: q[ly*per : (ly+1)*per], Heads: QH, Rows: R, Visible: vis})
	}
	return in, nil
}

// SyntheticConfig shapes a synthetic block.
type SyntheticConfig struct {
	Layers, KVHeads, Tokens, HeadDim int
	QueryHeads, QueryRows            int
	DType                            codec.DType
	Seed                             uint64
}

// DefaultSynthetic is a Llama-like block: 4 layers, 8 KV heads of 128
// channels, 256 tokens, fp16 (4 MiB), 4 query heads per KV head.
var DefaultSynthetic = SyntheticConfig{Layers: 4, KVHeads: 8, Tokens: 256, HeadDim: 128, QueryHeads: 32, QueryRows: 8, DType: codec.FP16, Seed: 1}

// Synthetic builds a block whose keys have what real LLM keys have: a few
// outlier channels 5–20× larger than the rest with a consistent offset,
// log-normal channel scales, and RoPE rotation of channel pairs by position;
// values are Gaussian with mild channel scales. Queries are random with the
// keys' channel scales (queries and keys are large on the same channels), and
// see every token.
func Synthetic(c SyntheticConfig) Input {
	rng := rand.New(rand.NewPCG(c.Seed, 0x6b76))
	L, H, T, D := c.Layers, c.KVHeads, c.Tokens, c.HeadDim
	l := codec.Layout{DType: c.DType, Order: codec.KVSeparate, Layers: uint16(L), KVHeads: uint16(H), HeadDim: uint16(D), Tokens: uint32(T)}
	n := L * H * T * D
	k := make([]float32, n)
	v := make([]float32, n)
	qh := max(c.QueryHeads, H)
	in := Input{Name: fmt.Sprintf("synthetic-%dL%dH%dT%dD-%v", L, H, T, D, c.DType), Layout: l}
	for ly := 0; ly < L; ly++ {
		for h := 0; h < H; h++ {
			scale := make([]float64, D)
			off := make([]float64, D)
			for d := range scale {
				scale[d] = math.Exp(0.5 * rng.NormFloat64())
				if rng.IntN(32) == 0 { // ~3% outlier channels
					scale[d] *= 5 + 15*rng.Float64()
					off[d] = scale[d] * (rng.Float64() - 0.5)
				}
			}
			base := (ly*H + h) * T * D
			for t := 0; t < T; t++ {
				for d := 0; d < D; d += 2 {
					a := off[d] + scale[d]*rng.NormFloat64()
					j := min(d+1, D-1)
					b := off[j] + scale[j]*rng.NormFloat64()
					th := float64(t) * math.Pow(10000, -float64(d)/float64(D))
					s, co := math.Sincos(th)
					k[base+t*D+d] = float32(a*co - b*s)
					if d+1 < D {
						k[base+t*D+d+1] = float32(a*s + b*co)
					}
				}
				for d := 0; d < D; d++ {
					v[base+t*D+d] = float32((0.5 + 0.5*float64(d%7)/7) * rng.NormFloat64())
				}
			}
		}
		// Queries share the keys' channel scales so that attention is peaked.
		R := max(c.QueryRows, 1)
		q := make([]float32, qh*R*D)
		for i := range q {
			h := (i / (R * D)) / (qh / H)
			d := i % D
			kbase := (ly*H + h) * T * D
			// channel RMS of the keys of this head
			var s float64
			for t := 0; t < T; t += max(T/16, 1) {
				x := float64(k[kbase+t*D+d])
				s += x * x
			}
			s = math.Sqrt(s / 16)
			q[i] = float32(rng.NormFloat64() * s / math.Sqrt(float64(D)) * 2)
		}
		in.Queries = append(in.Queries, kveval.Queries{Q: q, Heads: qh, Rows: R})
	}
	in.Raw = encodeFloats(l, k, v)
	return in
}

func encodeFloats(l codec.Layout, k, v []float32) []byte {
	es := l.DType.Size()
	out := make([]byte, 0, (len(k)+len(v))*es)
	for _, src := range [][]float32{k, v} {
		for _, x := range src {
			switch l.DType {
			case codec.FP16:
				out = binary.LittleEndian.AppendUint16(out, codec.Float32ToHalf(x))
			case codec.BF16:
				out = binary.LittleEndian.AppendUint16(out, codec.Float32ToBFloat16(x))
			default:
				out = binary.LittleEndian.AppendUint32(out, math.Float32bits(x))
			}
		}
	}
	return out
}
