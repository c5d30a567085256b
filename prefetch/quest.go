package prefetch

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/kvtier/kvtier/tiers"
)

// Combine says how the Quest bounds of the query heads that share a KV
// head are turned into one score per block.
type Combine uint8

const (
	// CombineMass: per query head, the bounds over the request's blocks go
	// through the attention softmax (scaled by 1/sqrt(headDim)) and the
	// results are averaged over heads: an estimate of each block's share of
	// the head-averaged attention mass, the quantity recall is measured on.
	CombineMass Combine = iota
	// CombineSum: the sum of the bounds over all query heads. It needs one
	// dot product per block and KV head (the query heads of a group are
	// summed first, see Scorer), so it is about four times cheaper for
	// llama-style grouping, at some cost in recall when heads disagree.
	CombineSum
)

func (c Combine) String() string {
	switch c {
	case CombineMass:
		return "mass"
	case CombineSum:
		return "sum"
	}
	return fmt.Sprintf("combine(%d)", uint8(c))
}

// Scorer ranks the blocks of one layer of one request by the Quest bound
// of their attention logits (Tang et al., "Quest: Query-Aware Sparsity for
// Efficient Long-Context LLM Inference", ICML 2024, arXiv:2406.10774).
//
// For a query q and a block whose keys have per-channel minima m and maxima
// M, every key k of the block satisfies
//
//	q·k ≤ Σ_c max(q_c·m_c, q_c·M_c) = q⁺·M + q⁻·m
//
// with q⁺ = max(q, 0) and q⁻ = min(q, 0) channel-wise. The bound is thus one
// dot product of [q⁺ | q⁻] with [M | m], the layout of a key summary entry
// (see tiers.SummarizeKeys), and the sum of the bounds of the query heads
// that share a KV head (grouped-query attention: query head h reads KV head
// h / (QHeads/KVHeads)) is one dot product with the sum of their [q⁺ | q⁻].
//
// A Scorer keeps scratch space between calls: one Scorer per goroutine.
type Scorer struct {
	QHeads, KVHeads, HeadDim int
	Combine                  Combine

	qpm    []float32 // per query head (or KV head for CombineSum): [q⁺ | q⁻]
	bounds []float32 // CombineMass: [qHead][block]
	dots   [4]float32
}

// NewScorer returns a scorer for a model's attention shape.
func NewScorer(qHeads, kvHeads, headDim int, c Combine) (*Scorer, error) {
	switch {
	case qHeads <= 0 || kvHeads <= 0 || headDim <= 0:
		return nil, fmt.Errorf("%w: scorer: %d query heads, %d KV heads, head dim %d", ErrInvalid, qHeads, kvHeads, headDim)
	case qHeads%kvHeads != 0:
		return nil, fmt.Errorf("%w: scorer: %d query heads do not group over %d KV heads", ErrInvalid, qHeads, kvHeads)
	case headDim > 1<<12:
		return nil, fmt.Errorf("%w: scorer: head dim %d", ErrInvalid, headDim)
	case c > CombineSum:
		return nil, fmt.Errorf("%w: scorer: unknown %v", ErrInvalid, c)
	}
	return &Scorer{QHeads: qHeads, KVHeads: kvHeads, HeadDim: headDim, Combine: c}, nil
}

// SummaryStride is the bytes one block's summary takes for one layer.
func (s *Scorer) SummaryStride() int { return s.KVHeads * tiers.KeySummaryEntrySize(s.HeadDim) }

// Score writes one score per block to dst[:nBlocks] (higher: more
// attention expected) for query q, laid out [QHeads][HeadDim], against
// sums, the blocks' key summaries for this layer back to back
// (SummaryStride bytes each, in block order).
func (s *Scorer) Score(dst []float32, q []float32, sums []byte, nBlocks int) ([]float32, error) {
	D, G := s.HeadDim, s.QHeads/s.KVHeads
	switch {
	case len(q) != s.QHeads*D:
		return nil, fmt.Errorf("%w: scorer: query of %d values, want %d heads × %d", ErrInvalid, len(q), s.QHeads, D)
	case nBlocks < 0 || len(sums) != nBlocks*s.SummaryStride():
		return nil, fmt.Errorf("%w: scorer: %d summary bytes for %d blocks of %d", ErrInvalid, len(sums), nBlocks, s.SummaryStride())
	}
	if cap(dst) < nBlocks {
		dst = make([]float32, nBlocks)
	}
	dst = dst[:nBlocks]
	es := tiers.KeySummaryEntrySize(D)
	if s.Combine == CombineSum {
		s.qpm = grow(s.qpm, s.KVHeads*2*D)
		clear(s.qpm)
		for h := range s.QHeads {
			addSplit(s.qpm[(h/G)*2*D:][:2*D], q[h*D:][:D])
		}
		for b := range nBlocks {
			var sc float32
			for g := range s.KVHeads {
				e := sums[(b*s.KVHeads+g)*es:][:es]
				sc += entryScale(e) * dotI8(s.qpm[g*2*D:][:2*D], e[4:])
			}
			dst[b] = sc
		}
		return dst, nil
	}
	s.qpm = grow(s.qpm, s.QHeads*2*D)
	clear(s.qpm)
	for h := range s.QHeads {
		addSplit(s.qpm[h*2*D:][:2*D], q[h*D:][:D])
	}
	s.bounds = grow(s.bounds, s.QHeads*nBlocks)
	for b := range nBlocks {
		for g := range s.KVHeads {
			e := sums[(b*s.KVHeads+g)*es:][:es]
			sc := entryScale(e)
			for h0 := g * G; h0 < (g+1)*G; {
				if (g+1)*G-h0 >= 4 {
					dotI8x4(&s.dots, s.qpm[h0*2*D:][:4*2*D], e[4:])
					for j := range 4 {
						s.bounds[(h0+j)*nBlocks+b] = sc * s.dots[j]
					}
					h0 += 4
					continue
				}
				s.bounds[h0*nBlocks+b] = sc * dotI8(s.qpm[h0*2*D:][:2*D], e[4:])
				h0++
			}
		}
	}
	softmaxMean(dst, s.bounds, s.QHeads, nBlocks, float32(1/math.Sqrt(float64(D))))
	return dst, nil
}

// softmaxMean sets dst[b] to the mean over heads of softmax_b(scale·x[h][b]).
func softmaxMean(dst, x []float32, heads, n int, scale float32) {
	clear(dst)
	if n == 0 {
		return
	}
	inv := 1 / float32(heads)
	for h := range heads {
		row := x[h*n:][:n]
		mx := row[0]
		for _, v := range row[1:] {
			mx = max(mx, v)
		}
		var sum float32
		for i, v := range row {
			e := exp32((v - mx) * scale)
			row[i] = e
			sum += e
		}
		w := inv / sum
		for i, e := range row {
			dst[i] += e * w
		}
	}
}

// addSplit adds [max(q,0) | min(q,0)] to dst (2·len(q) values).
func addSplit(dst, q []float32) {
	D := len(q)
	pos, neg := dst[:D], dst[D:2*D]
	for c, v := range q {
		if v > 0 {
			pos[c] += v
		} else {
			neg[c] += v
		}
	}
}

func entryScale(e []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(e)) }

func grow(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

// dotI8Go is Σ q[i]·int8(x[i]), the portable kernel.
func dotI8Go(q []float32, x []byte) float32 {
	x = x[:len(q)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(q); i += 4 {
		s0 += q[i] * float32(int8(x[i]))
		s1 += q[i+1] * float32(int8(x[i+1]))
		s2 += q[i+2] * float32(int8(x[i+2]))
		s3 += q[i+3] * float32(int8(x[i+3]))
	}
	for ; i < len(q); i++ {
		s0 += q[i] * float32(int8(x[i]))
	}
	return (s0 + s1) + (s2 + s3)
}

// dotI8x4Go computes four dots of x with the consecutive vectors of q.
func dotI8x4Go(dst *[4]float32, q []float32, x []byte) {
	n := len(q) / 4
	for j := range 4 {
		dst[j] = dotI8Go(q[j*n:][:n], x[:n])
	}
}

// exp32 is e^x for x ≤ 0 to about 1e-5 relative error (a degree-6
// polynomial for 2^f after range reduction); it returns 0 below -87.
func exp32(x float32) float32 {
	if x < -87 {
		return 0
	}
	t := x * 1.4426950408889634 // log2(e)
	k := float32(math.Floor(float64(t)))
	f := t - k // in [0, 1)
	// 2^f on [0,1): minimax-style Taylor in f·ln2.
	y := f * 0.6931471805599453
	p := 1 + y*(1+y*(0.5+y*(1.0/6+y*(1.0/24+y*(1.0/120+y*(1.0/720))))))
	return p * math.Float32frombits(uint32(int32(k)+127)<<23)
}
