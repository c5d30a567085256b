package codec

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Keys: per channel over groups of kg tokens (format in quant.go). A unit is
// [T][D] token-major; the codes are channel-major within a group, so the
// encoder and decoder walk one channel (a column, stride D) at a time and
// keep that channel's bounds in registers.

func (g *qgeom) encodeK(dst []byte, f []float32, b int, sc *scratch) []byte {
	T, D, dt, hs, kg := g.T, g.D, g.dt, g.hs, g.q.kg
	ng := (T + kg - 1) / kg
	// One pass: per group and channel min/max (as order-preserving integer
	// keys, which compile to branch-free code), per channel energy.
	gmn, gmx := resize(&sc.kmin, ng*D), resize(&sc.kmax, ng*D)
	energy := resize(&sc.glo, D)
	clear(energy)
	for gi := 0; gi < ng; gi++ {
		t0 := gi * kg
		n := min(kg, T-t0)
		mn, mx := gmn[gi*D:(gi+1)*D], gmx[gi*D:(gi+1)*D]
		if g.simdK {
			for c := range mn {
				mn[c], mx[c] = math.MaxInt32, math.MinInt32
			}
			statsRows(f[t0*D:(t0+n)*D], D, n, mn, mx, energy)
			continue
		}
		colStats(f[t0*D:(t0+n)*D], D, mn, mx, energy)
	}
	cmin, cmax := resize(&sc.cmin, D), resize(&sc.cmax, D)
	for c := 0; c < D; c++ {
		mn, mx := gmn[c], gmx[c]
		for gi := 1; gi < ng; gi++ {
			mn = min(mn, gmn[gi*D+c])
			mx = max(mx, gmx[gi*D+c])
		}
		cmin[c], cmax[c] = keyFloat(mn), keyFloat(mx)
	}
	bits := resize(&sc.bits, D)
	for c := range bits {
		bits[c] = uint8(b)
	}
	w := resize(&sc.w, D)
	for c := 0; c < D; c++ {
		cmin[c], cmax[c] = floorTo(dt, cmin[c]), ceilTo(dt, cmax[c])
		r := float64(cmax[c]) - float64(cmin[c])
		w[c] = math.Sqrt(float64(energy[c])/float64(T)) * r * r
	}
	if g.q.flags&flagAlloc != 0 {
		allocBits(bits, w, b, resize(&sc.ctr, D))
	}
	if g.q.flags&flagOutliers != 0 {
		dst = g.keyOutliers(dst, f, gmn, gmx, energy, cmin, cmax, bits, sc)
	}
	n0 := len(dst)
	dst = grow(dst, D*(2*hs+1))
	for c := 0; c < D; c++ {
		p := dst[n0+c*(2*hs+1):]
		putBound(p, dt, cmin[c])
		putBound(p[hs:], dt, cmax[c])
		p[2*hs] = bits[c]
	}
	clip := g.q.flags&flagClip != 0 && b <= 4
	// The size of a group's codes is known: grow dst once per group and
	// write into it (and, 8 bytes at a time, into its spare capacity).
	var codeBytes, tailBytes int
	nLast := T - (ng-1)*kg
	for c := 0; c < D; c++ {
		codeBytes += packedLen(kg, int(bits[c]))
		tailBytes += packedLen(nLast, int(bits[c]))
	}
	pa, pinv, pm := resize(&sc.pa, D), resize(&sc.pb, D), resize(&sc.pm, D)
	for c := 0; c < D; c++ {
		pm[c] = int32(1)<<bits[c] - 1
	}
	for gi := 0; gi < ng; gi++ {
		t0 := gi * kg
		n := min(kg, T-t0)
		gb := len(dst)
		if ng > 1 {
			dst = grow(dst, 2*D)
		}
		// Per channel: group bounds on the channel's 255-step grid, then
		// the levels' base and reciprocal step.
		for c := 0; c < D; c++ {
			u := (cmax[c] - cmin[c]) / 255
			lo, hi := 0, 255
			if ng > 1 {
				lo, hi = gridBounds(keyFloat(gmn[gi*D+c]), keyFloat(gmx[gi*D+c]), cmin[c], u)
				if clip {
					lo, hi = clipSearch(f[t0*D+c:], D, n, cmin[c], u, lo, hi, int(bits[c]))
				}
				dst[gb+2*c], dst[gb+2*c+1] = uint8(lo), uint8(hi)
			}
			a := cmin[c] + float32(float32(lo)*u)
			z := cmin[c] + float32(float32(hi)*u)
			pa[c], pinv[c] = a, 0
			if z > a {
				pinv[c] = float32(pm[c]) / (z - a)
			}
		}
		size := codeBytes
		if gi == ng-1 {
			size = tailBytes
		}
		o := len(dst)
		dst = grow(dst, size)
		buf := dst[:cap(dst)]
		if g.simdK {
			n8 := (n + 7) &^ 7
			codes := resize(&sc.ccodes, n8*D)
			quantRows(codes[:n*D], f[t0*D:(t0+n)*D], D, n, pa, pinv, pm)
			clear(codes[n*D:])
			packKeyCodes(buf, o, codes, D, n, bits, resize(&sc.t64, n8))
			continue
		}
		for c := 0; c < D; c++ {
			o = quantCol(buf, o, f[t0*D+c:], D, n, pa[c], pinv[c], &swars[bits[c]])
		}
	}
	return dst
}

// keyOutliers picks the key outliers (narrowing gmn, gmx) and appends the
// outlier section.
func (g *qgeom) keyOutliers(dst []byte, f []float32, gmn, gmx []int32, energy, cmin, cmax []float32, bits []uint8, sc *scratch) []byte {
	T, D, kg := g.T, g.D, g.q.kg
	ng := (T + kg - 1) / kg
	cands := reserve(&sc.cands, ng*D)
	// With one group per channel the group range is the channel's range,
	// which the outliers do not narrow: no candidates.
	for gi := 0; gi < ng && ng > 1; gi++ {
		t0 := gi * kg
		n := min(kg, T-t0)
		if n < 2 {
			continue
		}
		for c := 0; c < D; c++ {
			imin, imax, mn2, mx2 := extremes2(f[t0*D+c:], D, n)
			// Weight: the channel's RMS (queries are large where keys are)
			// over the squared number of steps.
			lv := float64(int(1)<<bits[c] - 1)
			w := math.Sqrt(float64(energy[c])/float64(T)) / (lv * lv)
			k := gi*D + c
			cands = append(cands, candidate(int32(k), n, gmn[k], gmx[k], mn2, mx2, imin, imax, w))
		}
	}
	outs := pickOutliers(cands, int(g.q.out*float64(T*D)), resize(&sc.gains, len(cands)))
	narrowGroups(outs, gmn, gmx)
	return appendOutliers(dst, outs, posBits(kg), func(i int) uint8 {
		o := outs[i]
		c, t := int(o.grp)%D, int(o.grp)/D*kg+int(o.pos)
		return gridCode(f[t*D+c], cmin[c], cmax[c])
	})
}

// colStats folds the rows (n×D, token-major) into per-channel min/max keys
// (mn, mx: overwritten) and energy (e: added to, in token order).
func colStats(rows []float32, D int, mn, mx []int32, e []float32) {
	n := len(rows) / D
	mn, mx, e = mn[:D], mx[:D], e[:D]
	c := 0
	for ; c+4 <= D; c += 4 {
		r := rows[c : c+4]
		l0, l1, l2, l3 := floatKey(r[0]), floatKey(r[1]), floatKey(r[2]), floatKey(r[3])
		h0, h1, h2, h3 := l0, l1, l2, l3
		e0, e1, e2, e3 := e[c], e[c+1], e[c+2], e[c+3]
		for t := 0; t < n; t++ {
			r := rows[t*D+c : t*D+c+4]
			x0, x1, x2, x3 := r[0], r[1], r[2], r[3]
			k0, k1, k2, k3 := floatKey(x0), floatKey(x1), floatKey(x2), floatKey(x3)
			l0, l1, l2, l3 = min(l0, k0), min(l1, k1), min(l2, k2), min(l3, k3)
			h0, h1, h2, h3 = max(h0, k0), max(h1, k1), max(h2, k2), max(h3, k3)
			e0 += x0 * x0
			e1 += x1 * x1
			e2 += x2 * x2
			e3 += x3 * x3
		}
		mn[c], mn[c+1], mn[c+2], mn[c+3] = l0, l1, l2, l3
		mx[c], mx[c+1], mx[c+2], mx[c+3] = h0, h1, h2, h3
		e[c], e[c+1], e[c+2], e[c+3] = e0, e1, e2, e3
	}
	for ; c < D; c++ {
		l := floatKey(rows[c])
		h, s := l, e[c]
		for t := 0; t < n; t++ {
			x := rows[t*D+c]
			k := floatKey(x)
			l, h = min(l, k), max(h, k)
			s += x * x
		}
		mn[c], mx[c], e[c] = l, h, s
	}
}

// quantCol quantizes n values of one column (f[0], f[D], …) on the levels
// a + q/inv, q = 0 … 2^b−1, and packs the codes at buf[o:]; it returns the
// offset after them. Codes are clamped: clipped bounds leave values outside.
func quantCol(buf []byte, o int, f []float32, D, n int, a, inv float32, w *swar) int {
	m := int32(1)<<w.b - 1
	i := 0
	for ; i+8 <= n; i += 8 {
		c := f[i*D : i*D+7*D+1]
		v := uint64(clampCode(int32((c[0]-a)*inv+0.5), m)) |
			uint64(clampCode(int32((c[D]-a)*inv+0.5), m))<<8 |
			uint64(clampCode(int32((c[2*D]-a)*inv+0.5), m))<<16 |
			uint64(clampCode(int32((c[3*D]-a)*inv+0.5), m))<<24 |
			uint64(clampCode(int32((c[4*D]-a)*inv+0.5), m))<<32 |
			uint64(clampCode(int32((c[5*D]-a)*inv+0.5), m))<<40 |
			uint64(clampCode(int32((c[6*D]-a)*inv+0.5), m))<<48 |
			uint64(clampCode(int32((c[7*D]-a)*inv+0.5), m))<<56
		store8(buf, o, w.pack(v), w.n)
		o += w.n
	}
	if i < n {
		var v uint64
		for j := 0; i+j < n; j++ {
			v |= uint64(clampCode(int32((f[(i+j)*D]-a)*inv+0.5), m)) << (8 * j)
		}
		nb := packedLen(n-i, int(w.b))
		store8(buf, o, w.pack(v), nb)
		o += nb
	}
	return o
}

// clampCode limits a rounded level index to 0 … m.
func clampCode(q, m int32) uint32 { return uint32(min(max(q, 0), m)) }

// packKeyCodes packs one group's codes, token-major in codes (n rounded up
// to 8 rows of D bytes, the extra rows zero), channel-major at buf[o:]:
// channel c takes packedLen(n, bits[c]) bytes. t holds n8 words.
func packKeyCodes(buf []byte, o int, codes []byte, D, n int, bits []uint8, t []uint64) {
	nb := len(t) / 8 // token blocks
	for cb := 0; cb+8 <= D; cb += 8 {
		for ib := 0; ib < nb; ib++ {
			var r [8]uint64
			rows := codes[ib*8*D+cb:]
			for k := range r {
				r[k] = binary.LittleEndian.Uint64(rows[k*D:])
			}
			transpose8x8(&r)
			for j, v := range r {
				t[j*nb+ib] = v
			}
		}
		// Channel by channel, in address order: store8's spill past a
		// channel's bytes is overwritten by the next channel.
		for j := 0; j < 8; j++ {
			w := &swars[bits[cb+j]]
			col := t[j*nb : (j+1)*nb]
			for _, v := range col[:nb-1] {
				store8(buf, o, w.pack(v), w.n)
				o += w.n
			}
			k := packedLen(n-(nb-1)*8, int(w.b))
			store8(buf, o, w.pack(col[nb-1]), k)
			o += k
		}
	}
}

// unpackKeyCodes is the inverse of packKeyCodes: it reads one group's
// channel-major codes from src and stores them token-major in codes (n
// rounded up to 8 rows of D bytes; the extra rows get garbage).
func unpackKeyCodes(codes []byte, src []byte, D, n int, bits []uint8, t []uint64) {
	nb := len(t) / 8
	p := 0
	for cb := 0; cb+8 <= D; cb += 8 {
		for j := 0; j < 8; j++ {
			w := &swars[bits[cb+j]]
			col := t[j*nb : (j+1)*nb]
			for ib := range col {
				col[ib] = w.unpack(load8(src, p) & w.full)
				p += w.n
			}
			p += packedLen(n-(nb-1)*8, int(w.b)) - w.n
		}
		for ib := 0; ib < nb; ib++ {
			var r [8]uint64
			for j := range r {
				r[j] = t[j*nb+ib]
			}
			transpose8x8(&r)
			rows := codes[ib*8*D+cb:]
			for k, v := range r {
				binary.LittleEndian.PutUint64(rows[k*D:], v)
			}
		}
	}
}

// transpose8x8 transposes the 8×8 byte matrix whose row i is r[i] (byte j
// of r[i] is element (i, j)).
func transpose8x8(r *[8]uint64) {
	for i := 0; i < 8; i += 2 {
		a, b := r[i], r[i+1]
		t := (a>>8 ^ b) & 0x00ff00ff00ff00ff
		r[i], r[i+1] = a^t<<8, b^t
	}
	for i := 0; i < 8; i += 4 {
		for k := i; k < i+2; k++ {
			a, b := r[k], r[k+2]
			t := (a>>16 ^ b) & 0x0000ffff0000ffff
			r[k], r[k+2] = a^t<<16, b^t
		}
	}
	for k := 0; k < 4; k++ {
		a, b := r[k], r[k+4]
		t := (a>>32 ^ b) & 0x00000000ffffffff
		r[k], r[k+4] = a^t<<32, b^t
	}
}

// gridBounds returns the codes of [mn, mx] on the grid base + k·u, k = 0..255,
// rounded outward.
func gridBounds(mn, mx, base, u float32) (int, int) {
	if u <= 0 {
		return 0, 0
	}
	lo := int(math.Floor(float64((mn - base) / u)))
	hi := int(math.Ceil(float64((mx - base) / u)))
	lo = min(max(lo, 0), 255)
	hi = min(max(hi, lo), 255)
	return lo, hi
}

// clipSearch tries narrower group bounds (clipping the extremes) and keeps
// the pair with the smallest squared error over the n strided values.
func clipSearch(x []float32, stride, n int, base, u float32, lo, hi, b int) (int, int) {
	lv := float32(int(1)<<b - 1)
	eval := func(l, h int) float64 {
		a := base + float32(float32(l)*u)
		z := base + float32(float32(h)*u)
		if z <= a {
			return math.Inf(1)
		}
		s := (z - a) / lv
		inv := lv / (z - a)
		var e float64
		for i := 0; i < n; i++ {
			v := x[i*stride]
			q := float32(int32(min(max((v-a)*inv+0.5, 0), lv)))
			d := float64(a + q*s - v)
			e += d * d
		}
		return e
	}
	best := eval(lo, hi)
	bl, bh := lo, hi
	span := hi - lo
	for _, fl := range [3]int{0, 6, 12} {
		for _, fh := range [3]int{0, 6, 12} {
			if fl == 0 && fh == 0 {
				continue
			}
			l, h := lo+span*fl/100, hi-span*fh/100
			if e := eval(l, h); e < best {
				best, bl, bh = e, l, h
			}
		}
	}
	return bl, bh
}

// allocBits spreads the budget b·len(bits) over the channels by greedy
// reverse water-filling on weights w (distortion ∝ w·4^−bits), 1..8 bits
// each: every step gives one more bit to the channel that gains most (the
// lowest channel on ties). w is overwritten (it becomes each channel's gain
// of one more bit); h is scratch of len(bits) entries. A max-heap of the
// channels by gain makes a step O(log D).
func allocBits(bits []uint8, w []float64, b int, h []int32) {
	D := len(bits)
	lo := max(1, b-3)
	gain := w[:D]
	h = h[:0]
	for c := range bits {
		bits[c] = uint8(lo)
		gain[c] = math.Ldexp(gain[c], -2*lo)
		if lo < 8 && gain[c] == gain[c] { // a NaN weight gets no more bits
			h = append(h, int32(c))
		}
	}
	// before reports whether channel a is picked before channel b.
	before := func(a, b int32) bool { return gain[a] > gain[b] || gain[a] == gain[b] && a < b }
	down := func(i int) {
		for {
			l := 2*i + 1
			if l >= len(h) {
				return
			}
			if r := l + 1; r < len(h) && before(h[r], h[l]) {
				l = r
			}
			if !before(h[l], h[i]) {
				return
			}
			h[i], h[l] = h[l], h[i]
			i = l
		}
	}
	for i := len(h)/2 - 1; i >= 0; i-- {
		down(i)
	}
	for budget := (b - lo) * D; budget > 0 && len(h) > 0; budget-- {
		c := h[0]
		bits[c]++
		gain[c] *= 0.25 // exact: the same as Ldexp(w, −2·bits) while it stays normal
		if bits[c] >= 8 {
			h[0] = h[len(h)-1]
			h = h[:len(h)-1]
		}
		down(0)
	}
}

func (g *qgeom) decodeK(out, src []byte, b int, outs []outEntry, sc *scratch) error {
	T, D, dt, hs, es, kg := g.T, g.D, g.dt, g.hs, g.es, g.q.kg
	hdr := D * (2*hs + 1)
	if len(src) < hdr {
		return errShort("key header")
	}
	cmin, cmax := resize(&sc.cmin, D), resize(&sc.cmax, D)
	bits := resize(&sc.bits, D)
	sum := 0
	for c := 0; c < D; c++ {
		p := src[c*(2*hs+1):]
		cmin[c], cmax[c] = getBound(p, dt), getBound(p[hs:], dt)
		bits[c] = p[2*hs]
		if bits[c] < 1 || bits[c] > 8 {
			return fmt.Errorf("%w: key channel %d has %d bits", ErrCorrupt, c, bits[c])
		}
		if !isFinite32(cmin[c]) || !isFinite32(cmax[c]) || cmin[c] > cmax[c] {
			return fmt.Errorf("%w: key channel %d bounds", ErrCorrupt, c)
		}
		sum += int(bits[c])
	}
	if sum > b*D {
		return fmt.Errorf("%w: key bits sum to %d, budget %d", ErrCorrupt, sum, b*D)
	}
	p := hdr
	ng := (T + kg - 1) / kg
	var codeBytes, tailBytes int
	nLast := T - (ng-1)*kg
	for c := 0; c < D; c++ {
		codeBytes += packedLen(kg, int(bits[c]))
		tailBytes += packedLen(nLast, int(bits[c]))
	}
	lut := resize(&sc.lut, 256)
	pa, ps := resize(&sc.pa, D), resize(&sc.pb, D)
	for t0 := 0; t0 < T; t0 += kg {
		n := min(kg, T-t0)
		gb := p // group bounds, 2 bytes per channel
		if ng > 1 {
			if len(src)-p < 2*D {
				return errShort("key group bounds")
			}
			p += 2 * D
		}
		for c := 0; c < D; c++ {
			u := (cmax[c] - cmin[c]) / 255
			lo, hi := 0, 255
			if ng > 1 {
				lo, hi = int(src[gb+2*c]), int(src[gb+2*c+1])
				if lo > hi {
					return fmt.Errorf("%w: key group bounds %d > %d", ErrCorrupt, lo, hi)
				}
			}
			a := cmin[c] + float32(float32(lo)*u)
			z := cmin[c] + float32(float32(hi)*u)
			pa[c], ps[c] = a, (z-a)/float32(int(1)<<bits[c]-1)
		}
		size := codeBytes
		if n < kg {
			size = tailBytes
		}
		if len(src)-p < size {
			return errShort("key codes")
		}
		grp := src[p : p+size]
		p += size
		if g.simdK {
			n8 := (n + 7) &^ 7
			codes := resize(&sc.ccodes, n8*D)
			unpackKeyCodes(codes, grp, D, n, bits, resize(&sc.t64, n8))
			dequantRows(out[t0*D*2:(t0+n)*D*2], codes[:n*D], D, n, pa, ps)
			continue
		}
		q := 0
		for c := 0; c < D; c++ {
			bc := int(bits[c])
			k := packedLen(n, bc)
			col := out[(t0*D+c)*es:]
			w := &swars[bc]
			if 1<<bc <= 2*n {
				// Fewer levels than values: convert each level once.
				l := lut[:1<<bc]
				fillLevels(l, dt, pa[c], ps[c])
				if es == 2 {
					unpackCol16(col, grp[q:q+k], n, D, w, l)
				} else {
					unpackCol32(col, grp[q:q+k], n, D, w, l)
				}
			} else {
				directCol(col, grp[q:q+k], n, D, es, dt, w, pa[c], ps[c])
			}
			q += k
		}
	}
	if p != len(src) {
		return fmt.Errorf("%w: %d trailing key bytes", ErrCorrupt, len(src)-p)
	}
	for _, o := range outs {
		c, t := int(o.grp)%D, int(o.grp)/D*kg+int(o.pos)
		u := (cmax[c] - cmin[c]) / 255
		putElem(out, t*D+c, es, levelBits(dt, cmin[c]+float32(float32(o.code)*u)))
	}
	return nil
}

// fillLevels sets l[q] to the element bits of a + q·s in dt.
func fillLevels(l []uint32, dt DType, a, s float32) {
	switch dt {
	case FP16:
		for q := range l {
			l[q] = uint32(f32ToF16(a + float32(float32(q)*s)))
		}
	default:
		for q := range l {
			l[q] = levelBits(dt, a+float32(float32(q)*s))
		}
	}
}

// unpackCol16 decodes n codes of one column into 2-byte elements
// out[0], out[2D], … through the level table l.
func unpackCol16(out, packed []byte, n, D int, w *swar, l []uint32) {
	st := 2 * D
	m := uint8(len(l) - 1)
	i, p := 0, 0
	for ; i+8 <= n; i += 8 {
		v := w.unpack(load8(packed, p) & w.full)
		p += w.n
		o := out[i*st : i*st+7*st+2]
		binary.LittleEndian.PutUint16(o[0:], uint16(l[uint8(v)&m]))
		binary.LittleEndian.PutUint16(o[st:], uint16(l[uint8(v>>8)&m]))
		binary.LittleEndian.PutUint16(o[2*st:], uint16(l[uint8(v>>16)&m]))
		binary.LittleEndian.PutUint16(o[3*st:], uint16(l[uint8(v>>24)&m]))
		binary.LittleEndian.PutUint16(o[4*st:], uint16(l[uint8(v>>32)&m]))
		binary.LittleEndian.PutUint16(o[5*st:], uint16(l[uint8(v>>40)&m]))
		binary.LittleEndian.PutUint16(o[6*st:], uint16(l[uint8(v>>48)&m]))
		binary.LittleEndian.PutUint16(o[7*st:], uint16(l[uint8(v>>56)&m]))
	}
	if i < n {
		v := w.unpack(load8(packed, p) & w.full)
		for ; i < n; i++ {
			binary.LittleEndian.PutUint16(out[i*st:], uint16(l[uint8(v)&m]))
			v >>= 8
		}
	}
}

// unpackCol32 is unpackCol16 for 4-byte elements.
func unpackCol32(out, packed []byte, n, D int, w *swar, l []uint32) {
	st := 4 * D
	m := uint8(len(l) - 1)
	p := 0
	for i := 0; i < n; i += 8 {
		v := w.unpack(load8(packed, p) & w.full)
		p += w.n
		for j := i; j < min(i+8, n); j++ {
			binary.LittleEndian.PutUint32(out[j*st:], l[uint8(v)&m])
			v >>= 8
		}
	}
}

// directCol decodes n codes of one column converting every value (used
// where a channel has more levels than values).
func directCol(out, packed []byte, n, D, es int, dt DType, w *swar, a, s float32) {
	p := 0
	for i := 0; i < n; i += 8 {
		v := w.unpack(load8(packed, p) & w.full)
		p += w.n
		for j := i; j < min(i+8, n); j++ {
			x := a + float32(float32(uint8(v))*s)
			v >>= 8
			if dt == FP16 {
				binary.LittleEndian.PutUint16(out[j*D*2:], f32ToF16(x))
			} else {
				putElem(out, j*D, es, levelBits(dt, x))
			}
		}
	}
}
