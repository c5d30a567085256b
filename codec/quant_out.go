package codec

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// Outliers (Options.Outliers, frame flag flagOutliers). A few values far
// outside their group set the group's range, and so the step of every other
// value in it. With outliers on, the encoder takes at most one value out of
// a group: the group's minimum or maximum, whichever leaves the smaller
// range. It ranks the groups by how much the squared step shrinks (times the
// group's size and, for keys, the channel's weight), keeps the best
// fraction·T·D of them, and stores each removed value on the 255-step grid
// of its channel (keys) or unit (values); the group's codes then cover the
// narrower range, and the removed value's own code is overwritten on decode.
//
// Every packed unit body then starts with the outlier section:
//
//	uvarint count
//	if count > 0: u8 k, then a bit string (LSB first, padded to a byte) of
//	count × { gap: Rice code with parameter k (gap>>k one bits, a zero bit,
//	          then the k low bits); position in the group: p bits; grid code: 8 bits }
//
// Groups are numbered in payload order (keys: group·D + channel; values:
// token·groups-per-token + group); the gap is the difference to the previous
// entry's group minus one (the first: the group itself), so groups are
// strictly increasing. p is the bit length of the largest group size − 1
// (keys: kg, values: vg). About 2 bytes per outlier.

// Outlier fractions (Options.Outliers).
const (
	DefaultOutliers = 0.01     // what the "out" spec flag sets
	MaxOutliers     = 1.0 / 16 // the largest fraction an encoder accepts
)

// outCand is one group's best removal.
type outCand struct {
	gain float64 // drop in weighted squared step
	grp  int32   // group number
	pos  int32   // position of the removed value in the group
	key  int32   // the group's new min or max key
	max  bool    // the removed value is the group's max
}

// extremes2 scans n values x[0], x[stride], … and returns the positions of
// the smallest and largest and the second smallest and largest keys (ties:
// the first position). Branch-free: which value is an extreme is random.
func extremes2(x []float32, stride, n int) (imin, imax int, min2, max2 int32) {
	k0 := floatKey(x[0])
	m1, m2, M1, M2 := k0, int32(math.MaxInt32), k0, int32(math.MinInt32)
	for i := 1; i < n; i++ {
		k := floatKey(x[i*stride])
		if k < m1 {
			imin = i
		}
		if k > M1 {
			imax = i
		}
		m2 = min(m2, max(m1, k))
		m1 = min(m1, k)
		M2 = max(M2, min(M1, k))
		M1 = max(M1, k)
	}
	return imin, imax, m2, M2
}

// candidate returns the better removal from a group of n ≥ 2 values with
// min/max keys mn, mx, second keys mn2, mx2 and positions imin, imax, with
// gain n·(r² − r'²)·w.
func candidate(grp int32, n int, mn, mx, mn2, mx2 int32, imin, imax int, w float64) outCand {
	lo, hi := float64(keyFloat(mn)), float64(keyFloat(mx))
	lo2, hi2 := float64(keyFloat(mn2)), float64(keyFloat(mx2))
	r := hi - lo
	c := outCand{grp: grp, pos: int32(imax), key: mx2, max: true}
	r2 := hi2 - lo
	if hi-lo2 < r2 {
		r2 = hi - lo2
		c.pos, c.key, c.max = int32(imin), mn2, false
	}
	c.gain = float64(n) * (r*r - r2*r2) * w
	if !(c.gain > 0) { // no gain, or NaN from an infinite weight
		c.gain = 0
	}
	return c
}

// pickOutliers keeps the k candidates with the largest gains (> 0; ties
// to the lower group), in group order; gains is scratch of len(c).
func pickOutliers(c []outCand, k int, gains []float64) []outCand {
	k = min(k, len(c))
	if k == 0 {
		return c[:0]
	}
	for i := range c {
		gains[i] = c[i].gain
	}
	slices.Sort(gains)
	thr := gains[len(c)-k]
	if !(thr > 0) {
		thr = math.SmallestNonzeroFloat64
	}
	above := 0 // candidates strictly above the threshold all stay
	for _, o := range c {
		if o.gain > thr {
			above++
		}
	}
	ties := k - above
	out := c[:0]
	for _, o := range c {
		switch {
		case o.gain > thr:
		case o.gain == thr && ties > 0:
			ties--
		default:
			continue
		}
		out = append(out, o)
	}
	return out
}

// narrowGroups gives each group that loses an outlier its new min or max
// key, so that the group's range no longer spans the outlier.
func narrowGroups(outs []outCand, gmn, gmx []int32) {
	for _, o := range outs {
		if o.max {
			gmx[o.grp] = o.key
		} else {
			gmn[o.grp] = o.key
		}
	}
}

// appendOutliers writes the section; code(i) gives entry i's grid code and
// pb is the position width.
func appendOutliers(dst []byte, c []outCand, pb int, code func(i int) uint8) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(c)))
	if len(c) == 0 {
		return dst
	}
	// The Rice parameter with the fewest bits.
	bestK, best := 0, math.MaxInt
	for k := 0; k <= 24; k++ {
		bits, prev := 0, int32(-1)
		for _, o := range c {
			bits += int(uint32(o.grp-prev-1)>>k) + 1 + k
			prev = o.grp
		}
		if bits < best {
			bestK, best = k, bits
		}
	}
	dst = append(dst, uint8(bestK))
	var w bitWriter
	prev := int32(-1)
	for i, o := range c {
		gap := uint64(o.grp - prev - 1)
		for q := gap >> bestK; q > 0; q-- {
			dst = w.put(dst, 1, 1)
		}
		dst = w.put(dst, 0, 1)
		dst = w.put(dst, gap&(1<<bestK-1), bestK)
		dst = w.put(dst, uint64(o.pos), pb)
		dst = w.put(dst, uint64(code(i)), 8)
		prev = o.grp
	}
	return w.flush(dst)
}

// bitWriter appends an LSB-first bit string.
type bitWriter struct {
	acc uint64
	n   int
}

func (w *bitWriter) put(dst []byte, v uint64, n int) []byte {
	w.acc |= v << w.n
	w.n += n
	for w.n >= 8 {
		dst = append(dst, byte(w.acc))
		w.acc >>= 8
		w.n -= 8
	}
	return dst
}

func (w *bitWriter) flush(dst []byte) []byte {
	if w.n > 0 {
		dst = append(dst, byte(w.acc))
	}
	return dst
}

// bitReader reads an LSB-first bit string.
type bitReader struct {
	s   []byte
	acc uint64
	n   int // bits in acc
	p   int // next byte of s
}

// get returns the next n ≤ 32 bits, or false past the end.
func (r *bitReader) get(n int) (uint64, bool) {
	for r.n < n {
		if r.p >= len(r.s) {
			return 0, false
		}
		r.acc |= uint64(r.s[r.p]) << r.n
		r.p++
		r.n += 8
	}
	v := r.acc & (1<<n - 1)
	r.acc >>= n
	r.n -= n
	return v, true
}

// posBits is the width of a position in groups of at most n values.
func posBits(n int) int { return bits.Len(uint(max(n-1, 0))) }

// gridCode is x on the 255-step grid of [lo, hi].
func gridCode(x, lo, hi float32) uint8 {
	if hi <= lo {
		return 0
	}
	q := math.Round(float64((x - lo) / ((hi - lo) / 255)))
	return uint8(min(max(q, 0), 255))
}

// outEntry is one parsed outlier.
type outEntry struct {
	grp, pos int32
	code     uint8
}

// parseOutliers reads a section of at most groups groups whose sizes size(g)
// bound the positions (pb bits wide); it returns the entries (in e's
// storage) and the bytes read.
func parseOutliers(src []byte, groups, pb int, size func(g int) int, e []outEntry) ([]outEntry, int, error) {
	n, p := binary.Uvarint(src)
	if p <= 0 || n > uint64(groups) {
		return nil, 0, fmt.Errorf("%w: outlier count", ErrCorrupt)
	}
	e = e[:0]
	if n == 0 {
		return e, p, nil
	}
	if p >= len(src) || src[p] > 24 {
		return nil, 0, fmt.Errorf("%w: outlier gap code", ErrCorrupt)
	}
	k := int(src[p])
	r := bitReader{s: src[p+1:]}
	g := int64(-1)
	for i := uint64(0); i < n; i++ {
		var q uint64
		for {
			b, ok := r.get(1)
			if !ok {
				return nil, 0, errShort("outliers")
			}
			if b == 0 {
				break
			}
			if q++; q<<k >= uint64(groups) {
				return nil, 0, fmt.Errorf("%w: outlier gap", ErrCorrupt)
			}
		}
		low, ok1 := r.get(k)
		pos, ok2 := r.get(pb)
		code, ok3 := r.get(8)
		if !ok1 || !ok2 || !ok3 {
			return nil, 0, errShort("outliers")
		}
		g += int64(q<<k|low) + 1
		if g >= int64(groups) {
			return nil, 0, fmt.Errorf("%w: outlier group %d of %d", ErrCorrupt, g, groups)
		}
		if pos >= uint64(size(int(g))) {
			return nil, 0, fmt.Errorf("%w: outlier position %d", ErrCorrupt, pos)
		}
		e = append(e, outEntry{grp: int32(g), pos: int32(pos), code: uint8(code)})
	}
	return e, p + 1 + r.p, nil
}
