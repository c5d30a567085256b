package prefetch

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"

	"github.com/kvtier/kvtier/internal/kvfile"
)

// Trace is one attention trace: a prompt's post-RoPE keys and values, the
// queries of its last positions and the attention probabilities of the
// last of those, as the KV dumps in shared/testdata/kv hold them.
type Trace struct {
	Name                             string
	Layers, QHeads, KVHeads, HeadDim int
	Tokens                           int

	kRaw, vRaw []byte    // fp16 [Layers][KVHeads][Tokens][HeadDim]
	k          []float32 // k_post_rope, same shape
	q          []float32 // q_post_rope [Layers][QHeads][len(qPos)][HeadDim]
	qPos       []int
	p          []float32 // attn_probs [Layers][QHeads][len(pPos)][Tokens]
	pPos       []int
}

// LoadTrace reads a KV dump (kv-pNN.bin, its sidecar beside it).
func LoadTrace(path string) (*Trace, error) {
	f, err := kvfile.Open(path)
	if err != nil {
		return nil, err
	}
	m := f.Meta.Model
	t := &Trace{
		Name:   strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)),
		Layers: m.NLayers, QHeads: m.NHeads, KVHeads: m.NKVHeads, HeadDim: m.HeadDim,
	}
	if t.Layers <= 0 || t.QHeads <= 0 || t.KVHeads <= 0 || t.HeadDim <= 0 || t.QHeads%t.KVHeads != 0 {
		return nil, fmt.Errorf("%w: %s: model shape %d layers, %d/%d heads, head dim %d", ErrTrace, path, t.Layers, t.QHeads, t.KVHeads, t.HeadDim)
	}
	var kt, qt, pt kvfile.Tensor
	if t.kRaw, kt, err = f.Raw("k_post_rope"); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrTrace, path, err)
	}
	var vt kvfile.Tensor
	if t.vRaw, vt, err = f.Raw("v"); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrTrace, path, err)
	}
	if kt.DType != "float16" || vt.DType != "float16" || len(kt.Shape) != 4 || !equalInts(kt.Shape, vt.Shape) {
		return nil, fmt.Errorf("%w: %s: k_post_rope %s %v and v %s %v: want matching float16 [layer, kv_head, token, head_dim]", ErrTrace, path, kt.DType, kt.Shape, vt.DType, vt.Shape)
	}
	t.Tokens = kt.Shape[2]
	if !equalInts(kt.Shape, []int{t.Layers, t.KVHeads, t.Tokens, t.HeadDim}) {
		return nil, fmt.Errorf("%w: %s: k_post_rope shape %v does not match the model", ErrTrace, path, kt.Shape)
	}
	if t.k, _, err = f.Float32("k_post_rope"); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrTrace, path, err)
	}
	if t.q, qt, err = f.Float32("q_post_rope"); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrTrace, path, err)
	}
	if t.p, pt, err = f.Float32("attn_probs"); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrTrace, path, err)
	}
	t.qPos, t.pPos = qt.QueryPositions, pt.QueryPositions
	switch {
	case len(qt.Shape) != 4 || !equalInts(qt.Shape, []int{t.Layers, t.QHeads, len(t.qPos), t.HeadDim}):
		return nil, fmt.Errorf("%w: %s: q_post_rope shape %v with %d query positions", ErrTrace, path, qt.Shape, len(t.qPos))
	case len(pt.Shape) != 4 || !equalInts(pt.Shape, []int{t.Layers, t.QHeads, len(t.pPos), t.Tokens}):
		return nil, fmt.Errorf("%w: %s: attn_probs shape %v with %d query positions", ErrTrace, path, pt.Shape, len(t.pPos))
	case len(t.pPos) == 0:
		return nil, fmt.Errorf("%w: %s: no attention rows", ErrTrace, path)
	}
	for _, p := range append(append([]int(nil), t.qPos...), t.pPos...) {
		if p < 0 || p >= t.Tokens {
			return nil, fmt.Errorf("%w: %s: query position %d outside %d tokens", ErrTrace, path, p, t.Tokens)
		}
	}
	for _, p := range t.pPos {
		if t.qRow(p) < 0 {
			return nil, fmt.Errorf("%w: %s: attention row at %d has no query", ErrTrace, path, p)
		}
	}
	return t, nil
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// qRow returns the q_post_rope row of position pos, -1 if none.
func (t *Trace) qRow(pos int) int {
	for i, p := range t.qPos {
		if p == pos {
			return i
		}
	}
	return -1
}

// query copies the query of layer l at position pos ([QHeads][HeadDim]) to dst.
func (t *Trace) query(dst []float32, l, pos int) ([]float32, bool) {
	r := t.qRow(pos)
	if r < 0 {
		return dst, false
	}
	dst = dst[:0]
	n := len(t.qPos)
	for h := range t.QHeads {
		off := ((l*t.QHeads+h)*n + r) * t.HeadDim
		dst = append(dst, t.q[off:off+t.HeadDim]...)
	}
	return dst, true
}

// blockMass writes to dst, per block of bt tokens, the head-averaged
// attention mass of layer l at position pos: from attn_probs when the trace
// holds that row, otherwise recomputed from the query and the keys (float64
// softmax, causal, scale 1/sqrt(head_dim)).
func (t *Trace) blockMass(dst []float64, l, pos, bt int) []float64 {
	nb := pos/bt + 1
	dst = append(dst[:0], make([]float64, nb)...)
	if row := indexOf(t.pPos, pos); row >= 0 {
		n := len(t.pPos)
		for h := range t.QHeads {
			off := ((l*t.QHeads+h)*n + row) * t.Tokens
			for tok := 0; tok <= pos; tok++ {
				dst[tok/bt] += float64(t.p[off+tok])
			}
		}
	} else {
		r, n, D := t.qRow(pos), len(t.qPos), t.HeadDim
		logits := make([]float64, pos+1)
		scale := 1 / math.Sqrt(float64(D))
		for h := range t.QHeads {
			q := t.q[((l*t.QHeads+h)*n+r)*D:][:D]
			g := h / (t.QHeads / t.KVHeads)
			mx := math.Inf(-1)
			for tok := range logits {
				k := t.k[((l*t.KVHeads+g)*t.Tokens+tok)*D:][:D]
				var s float64
				for c := range D {
					s += float64(q[c]) * float64(k[c])
				}
				logits[tok] = s * scale
				mx = max(mx, logits[tok])
			}
			var sum float64
			for tok, v := range logits {
				logits[tok] = math.Exp(v - mx)
				sum += logits[tok]
			}
			for tok, v := range logits {
				dst[tok/bt] += v / sum
			}
		}
	}
	for b := range dst {
		dst[b] /= float64(t.QHeads)
	}
	return dst
}

func indexOf(xs []int, v int) int {
	for i, x := range xs {
		if x == v {
			return i
		}
	}
	return -1
}

// block writes the fp16 bytes of block b (tokens b·bt … b·bt+bt-1) of layer
// l to dst, K then V (codec.KVSeparate), and returns it.
func (t *Trace) block(dst []byte, l, b, bt int) []byte {
	dst = dst[:0]
	row := t.HeadDim * 2
	for _, src := range [][]byte{t.kRaw, t.vRaw} {
		for g := range t.KVHeads {
			off := ((l*t.KVHeads+g)*t.Tokens + b*bt) * row
			dst = append(dst, src[off:off+bt*row]...)
		}
	}
	return dst
}
