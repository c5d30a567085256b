package kveval

import (
	"fmt"
	"math"

	"github.com/kvtier/kvtier/codec"
)

// Quality metrics comparing a reference tensor with its decoded copy. They work
// on float32 slices; SplitKV converts a block.

// RelError returns the relative Frobenius error ‖got − ref‖ / ‖ref‖. It is 0 when
// both are all zeros and +Inf when only ref is. Lengths must match.
func RelError(ref, got []float32) float64 {
	if len(ref) != len(got) {
		return math.NaN()
	}
	var num, den float64
	for i, r := range ref {
		d := float64(got[i]) - float64(r)
		num += d * d
		den += float64(r) * float64(r)
	}
	switch {
	case num == 0:
		return 0
	case den == 0:
		return math.Inf(1)
	}
	return math.Sqrt(num / den)
}

// CosineStats summarises the cosine similarity of corresponding vectors.
type CosineStats struct {
	Mean, Min float64
	N         int // vectors compared
}

// VectorCosine splits ref and got into vectors of dim elements (a key or value
// of one token and head) and returns the mean and minimum cosine similarity.
// Two zero vectors count as 1; one zero vector against a non-zero one as 0.
func VectorCosine(ref, got []float32, dim int) CosineStats {
	if dim <= 0 || len(ref) != len(got) || len(ref)%dim != 0 {
		return CosineStats{Mean: math.NaN(), Min: math.NaN()}
	}
	s := CosineStats{Min: 1}
	var sum float64
	for off := 0; off < len(ref); off += dim {
		var dot, nr, ng float64
		for i := off; i < off+dim; i++ {
			r, g := float64(ref[i]), float64(got[i])
			dot += r * g
			nr += r * r
			ng += g * g
		}
		var c float64
		switch {
		case nr == 0 && ng == 0:
			c = 1
		case nr == 0 || ng == 0:
			c = 0
		default:
			c = dot / math.Sqrt(nr*ng)
		}
		sum += c
		s.Min = math.Min(s.Min, c)
		s.N++
	}
	if s.N > 0 {
		s.Mean = sum / float64(s.N)
	}
	return s
}

// Queries are the attention queries of one layer, used to judge how much a
// codec's error changes attention.
type Queries struct {
	// Q holds [Heads][Rows][headDim] query vectors (post-RoPE, as the model uses them).
	Q []float32
	// Heads is the number of query heads; it must be a multiple of the KV heads
	// (grouped-query attention: query head h reads KV head h / (Heads/KVHeads)).
	Heads int
	// Rows is the number of query positions per head.
	Rows int
	// Visible[r] is how many tokens (0 … Visible[r]-1) row r attends to (a
	// causal mask); nil means all tokens.
	Visible []int
}

// AttnStats accumulates attention-output error over rows (and layers). The
// zero value is ready; use Add to merge and the methods to read.
type AttnStats struct {
	errSq  float64 // Σ ‖o' − o‖²
	refSq  float64 // Σ ‖o‖²
	klSum  float64 // Σ KL(p ‖ p')
	rowRel float64 // Σ ‖o' − o‖ / ‖o‖
	Rows   int
}

// Add merges o into s.
func (s *AttnStats) Add(o AttnStats) {
	s.errSq += o.errSq
	s.refSq += o.refSq
	s.klSum += o.klSum
	s.rowRel += o.rowRel
	s.Rows += o.Rows
}

// RelErr is the relative error of the attention output softmax(qKᵀ/√d)·V over
// all rows: sqrt(Σ‖o' − o‖² / Σ‖o‖²).
func (s AttnStats) RelErr() float64 {
	if s.errSq == 0 {
		return 0
	}
	if s.refSq == 0 {
		return math.Inf(1)
	}
	return math.Sqrt(s.errSq / s.refSq)
}

// MeanRowRelErr is the mean over rows of ‖o' − o‖ / ‖o‖.
func (s AttnStats) MeanRowRelErr() float64 {
	if s.Rows == 0 {
		return 0
	}
	return s.rowRel / float64(s.Rows)
}

// KL is the mean over rows of KL(p ‖ p') in nats, p the reference attention
// distribution and p' the one computed from the decoded keys.
func (s AttnStats) KL() float64 {
	if s.Rows == 0 {
		return 0
	}
	return s.klSum / float64(s.Rows)
}

// Attention compares attention computed with reference K and V with attention
// computed with decoded K' and V' for one layer. K, V, K', V' are
// [kvHeads][tokens][headDim]. Scores are q·k/√headDim in float64.
func Attention(q Queries, k, v, k2, v2 []float32, kvHeads, tokens, headDim int) (AttnStats, error) {
	var s AttnStats
	n := kvHeads * tokens * headDim
	switch {
	case kvHeads <= 0 || tokens <= 0 || headDim <= 0:
		return s, fmt.Errorf("%w: attention shape %d×%d×%d", codec.ErrLayout, kvHeads, tokens, headDim)
	case len(k) != n || len(v) != n || len(k2) != n || len(v2) != n:
		return s, fmt.Errorf("%w: K/V lengths %d/%d/%d/%d, want %d", codec.ErrSize, len(k), len(v), len(k2), len(v2), n)
	case q.Heads <= 0 || q.Heads%kvHeads != 0 || q.Rows <= 0 || len(q.Q) != q.Heads*q.Rows*headDim:
		return s, fmt.Errorf("%w: %d query heads × %d rows in %d values", codec.ErrSize, q.Heads, q.Rows, len(q.Q))
	case q.Visible != nil && len(q.Visible) != q.Rows:
		return s, fmt.Errorf("%w: %d visible counts for %d rows", codec.ErrSize, len(q.Visible), q.Rows)
	}
	group := q.Heads / kvHeads
	scale := 1 / math.Sqrt(float64(headDim))
	p := make([]float64, tokens)
	p2 := make([]float64, tokens)
	o := make([]float64, headDim)
	o2 := make([]float64, headDim)
	for h := 0; h < q.Heads; h++ {
		kh := h / group
		base := kh * tokens * headDim
		for r := 0; r < q.Rows; r++ {
			vis := tokens
			if q.Visible != nil {
				vis = min(max(q.Visible[r], 1), tokens)
			}
			qv := q.Q[(h*q.Rows+r)*headDim : (h*q.Rows+r+1)*headDim]
			softmaxScores(p[:vis], qv, k[base:], headDim, scale)
			softmaxScores(p2[:vis], qv, k2[base:], headDim, scale)
			clear(o)
			clear(o2)
			var kl float64
			for t := 0; t < vis; t++ {
				row := base + t*headDim
				for d := 0; d < headDim; d++ {
					o[d] += p[t] * float64(v[row+d])
					o2[d] += p2[t] * float64(v2[row+d])
				}
				if p[t] > 0 {
					kl += p[t] * math.Log(p[t]/math.Max(p2[t], 1e-300))
				}
			}
			var e, rs float64
			for d := range o {
				e += (o2[d] - o[d]) * (o2[d] - o[d])
				rs += o[d] * o[d]
			}
			s.errSq += e
			s.refSq += rs
			if rs > 0 {
				s.rowRel += math.Sqrt(e / rs)
			}
			s.klSum += math.Max(kl, 0)
			s.Rows++
		}
	}
	return s, nil
}

// softmaxScores fills p with softmax(q·k_t·scale) over the len(p) first keys.
func softmaxScores(p []float64, q []float32, k []float32, headDim int, scale float64) {
	m := math.Inf(-1)
	for t := range p {
		kt := k[t*headDim : (t+1)*headDim]
		var dot float64
		for d, qd := range q {
			dot += float64(qd) * float64(kt[d])
		}
		p[t] = dot * scale
		m = math.Max(m, p[t])
	}
	var sum float64
	for t := range p {
		p[t] = math.Exp(p[t] - m)
		sum += p[t]
	}
	for t := range p {
		p[t] /= sum
	}
}

// SplitKV converts a block to float32 and returns its keys and values, each
// [layers][kv_heads][tokens][head_dim] whatever the block's Order.
func SplitKV(l codec.Layout, raw []byte) (k, v []float32, err error) {
	if err := l.CheckLen(len(raw)); err != nil {
		return nil, nil, err
	}
	n := int(l.Elems())
	if l.DType == codec.FP8 {
		return nil, nil, fmt.Errorf("%w: fp8 has no float32 view", codec.ErrMode)
	}
	all := make([]float32, n)
	for i := range all {
		switch l.DType {
		case codec.FP16:
			all[i] = codec.HalfToFloat32(uint16(raw[2*i]) | uint16(raw[2*i+1])<<8)
		case codec.BF16:
			all[i] = codec.BFloat16ToFloat32(uint16(raw[2*i]) | uint16(raw[2*i+1])<<8)
		case codec.FP32:
			all[i] = math.Float32frombits(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24)
		}
	}
	half := n / 2
	if l.Order.Effective() == codec.KVSeparate {
		return all[:half], all[half:], nil
	}
	k, v = make([]float32, half), make([]float32, half)
	per := int(l.KVHeads) * int(l.Tokens) * int(l.HeadDim)
	for ly := 0; ly < l.NumLayers(); ly++ {
		copy(k[ly*per:(ly+1)*per], all[2*ly*per:(2*ly+1)*per])
		copy(v[ly*per:(ly+1)*per], all[(2*ly+1)*per:(2*ly+2)*per])
	}
	return k, v, nil
}
