package tiers

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/kvtier/kvtier/codec"
)

// Key summaries: for each layer and KV head of a block, the per-channel
// minimum and maximum of the block's (post-RoPE) keys, which is what the
// prefetcher's Quest scorer needs to bound q·k over the block without
// reading it.
//
// One entry per (layer, KV head), entries in layer-major order, each
// KeySummaryEntrySize(headDim) bytes:
//
//	scale float32 (little-endian)
//	max   [headDim]int8   ceil(max_c / scale)
//	min   [headDim]int8   floor(min_c / scale)
//
// scale is the largest |min_c| or |max_c| of the entry over 127, so the codes
// fit in -127..127. Rounding max up and min down keeps the summary a
// bound: scale·max_c ≥ the true maximum and scale·min_c ≤ the true minimum
// (up to float32 rounding), so the Quest score stays an upper bound. For
// head dim 128 an entry is 260 bytes against the 4096 bytes of K and V a
// 16-token fp16 block holds per head: 3.2%.

// KeySummaryEntrySize is the size of one (layer, KV head) entry.
func KeySummaryEntrySize(headDim int) int { return 4 + 2*headDim }

// KeySummarySize is the size of the key summary of a block with layout l.
func KeySummarySize(l Layout) int {
	return l.NumLayers() * int(l.KVHeads) * KeySummaryEntrySize(int(l.HeadDim))
}

// SummarizeKeys writes the key summary of data, a block with layout l, to
// dst (KeySummarySize(l) bytes) and returns it. Only fp16, bf16 and fp32
// blocks can be summarized (an fp8 block does not say which format it
// holds); anything else, or a length that does not match, is ErrInvalid.
func SummarizeKeys(dst []byte, l Layout, data []byte) ([]byte, error) {
	if err := l.CheckLen(len(data)); err != nil {
		return nil, invalidLayout(err)
	}
	var load func(b []byte, i int) float32
	switch l.DType {
	case codec.FP16:
		load = func(b []byte, i int) float32 { return codec.HalfToFloat32(binary.LittleEndian.Uint16(b[2*i:])) }
	case codec.BF16:
		load = func(b []byte, i int) float32 { return codec.BFloat16ToFloat32(binary.LittleEndian.Uint16(b[2*i:])) }
	case codec.FP32:
		load = func(b []byte, i int) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])) }
	default:
		return nil, fmt.Errorf("%w: key summary: %v blocks cannot be summarized", ErrInvalid, l.DType)
	}
	n := KeySummarySize(l)
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	H, T, D := int(l.KVHeads), int(l.Tokens), int(l.HeadDim)
	es := KeySummaryEntrySize(D)
	var mn, mx [codec.MaxHeadDim]float32
	for li := range l.NumLayers() {
		for h := range H {
			var base int // element index of K[li][h][0][0]
			if l.Order.Effective() == codec.KVInterleaved {
				base = ((li*2)*H + h) * T * D
			} else {
				base = (li*H + h) * T * D
			}
			if l.DType == codec.FP16 && minMaxHalf(mn[:D], mx[:D], data[2*base:2*(base+T*D)], T, D) {
				encodeKeySummary(dst[(li*H+h)*es:][:es], mn[:D], mx[:D])
				continue
			}
			for c := range D {
				mn[c], mx[c] = float32(math.Inf(1)), float32(math.Inf(-1))
			}
			for t := range T {
				row := base + t*D
				for c := range D {
					v := load(data, row+c)
					if v != v { // NaN carries no bound; skip it
						continue
					}
					mn[c] = min(mn[c], v)
					mx[c] = max(mx[c], v)
				}
			}
			encodeKeySummary(dst[(li*H+h)*es:][:es], mn[:D], mx[:D])
		}
	}
	return dst, nil
}

// encodeKeySummary writes one entry from the channel minima and maxima.
func encodeKeySummary(dst []byte, mn, mx []float32) {
	D := len(mn)
	var amax float64
	for c := range D {
		if !math.IsInf(float64(mn[c]), 0) {
			amax = max(amax, math.Abs(float64(mn[c])), math.Abs(float64(mx[c])))
		}
	}
	if math.IsInf(amax, 0) || amax > math.MaxFloat32 {
		amax = math.MaxFloat32
	}
	scale := float32(amax / 127)
	binary.LittleEndian.PutUint32(dst, math.Float32bits(scale))
	maxq, minq := dst[4:4+D], dst[4+D:4+2*D]
	for c := range D {
		if scale == 0 || math.IsInf(float64(mn[c]), 1) { // all zero, or no finite key
			maxq[c], minq[c] = 0, 0
			continue
		}
		hi := math.Ceil(float64(mx[c]) / float64(scale))
		lo := math.Floor(float64(mn[c]) / float64(scale))
		maxq[c] = byte(int8(min(max(hi, -127), 127)))
		minq[c] = byte(int8(min(max(lo, -127), 127)))
	}
}

// minMaxHalf computes per-channel minima and maxima of T rows of D fp16
// values by comparing their bits mapped to an order-preserving uint16 (no
// conversion per element), converting only the results. It reports false,
// leaving the work to the general path, when an extreme is a NaN.
func minMaxHalf(mn, mx []float32, b []byte, T, D int) bool {
	var lo, hi [codec.MaxHeadDim]uint16
	for c := range D {
		lo[c], hi[c] = 0xFFFF, 0
	}
	for t := range T {
		row := b[2*t*D : 2*(t+1)*D]
		for c := range D {
			h := binary.LittleEndian.Uint16(row[2*c:])
			u := h ^ (uint16(int16(h)>>15) | 0x8000) // order-preserving
			lo[c] = min(lo[c], u)
			hi[c] = max(hi[c], u)
		}
	}
	for c := range D {
		mn[c] = codec.HalfToFloat32(unorderHalf(lo[c]))
		mx[c] = codec.HalfToFloat32(unorderHalf(hi[c]))
		if mn[c] != mn[c] || mx[c] != mx[c] {
			return false
		}
	}
	return true
}

// unorderHalf inverts the order-preserving map of minMaxHalf.
func unorderHalf(u uint16) uint16 {
	if u&0x8000 != 0 {
		return u ^ 0x8000
	}
	return ^u
}
