package codec

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Values: per token over groups of vg channels (format in quant.go). Groups
// are contiguous runs of a row, so both directions stream through the unit.

func (g *qgeom) encodeV(dst []byte, f []float32, b int, sc *scratch) []byte {
	T, D, dt, hs, vg := g.T, g.D, g.dt, g.hs, g.q.vg
	nv := (D + vg - 1) / vg // groups per token
	// Pass 1: every group's min/max keys, and the unit's from them.
	gmn, gmx := resize(&sc.kmin, T*nv), resize(&sc.kmax, T*nv)
	umn, umx := int32(math.MaxInt32), int32(math.MinInt32)
	if g.simdV {
		g.eachGroupSpan(func(x0, k0, gs, k1 int) {
			minMaxGroups(f[x0:x0+(k1-k0)*gs], gs, gmn[k0:k1], gmx[k0:k1])
		})
		for k := range gmn {
			umn, umx = min(umn, gmn[k]), max(umx, gmx[k])
		}
	} else {
		for t := 0; t < T; t++ {
			row := f[t*D : (t+1)*D]
			for j := 0; j < nv; j++ {
				l, h := minMaxKeys(row[j*vg : min((j+1)*vg, D)])
				gmn[t*nv+j], gmx[t*nv+j] = l, h
				umn, umx = min(umn, l), max(umx, h)
			}
		}
	}
	mn, mx := floorTo(dt, keyFloat(umn)), ceilTo(dt, keyFloat(umx))
	if g.q.flags&flagOutliers != 0 {
		dst = g.valueOutliers(dst, f, gmn, gmx, b, mn, mx, sc)
	}
	n0 := len(dst)
	dst = grow(dst, 2*hs)
	putBound(dst[n0:], dt, mn)
	putBound(dst[n0+hs:], dt, mx)
	u := (mx - mn) / 255
	lv := float32(int(1)<<b - 1)
	w := &swars[b]
	clip := g.q.flags&flagClip != 0 && b <= 4
	// Pass 2: group bounds and codes, written in place (the size is known).
	size := 0
	for c0 := 0; c0 < D; c0 += vg {
		size += 2 + packedLen(min(vg, D-c0), b)
	}
	o := len(dst)
	dst = grow(dst, T*size)
	buf := dst[:cap(dst)]
	if g.simdV {
		// Bounds of every group first, then all codes in one pass, then
		// the packing.
		pa, pinv := resize(&sc.pa, T*nv), resize(&sc.pb, T*nv)
		for k := range pa {
			lo, hi := gridBounds(keyFloat(gmn[k]), keyFloat(gmx[k]), mn, u)
			if clip {
				t, c0 := k/nv, k%nv*vg
				lo, hi = clipSearch(f[t*D+c0:t*D+min(c0+vg, D)], 1, min(vg, D-c0), mn, u, lo, hi, b)
			}
			gmn[k] = int32(lo)<<8 | int32(hi) // keep the grid codes for the packing
			a := mn + float32(float32(lo)*u)
			z := mn + float32(float32(hi)*u)
			pa[k], pinv[k] = a, 0
			if z > a {
				pinv[k] = lv / (z - a)
			}
		}
		codes := resize(&sc.ccodes, T*D)
		g.eachGroupSpan(func(x0, k0, gs, k1 int) {
			quantGroups(codes[x0:x0+(k1-k0)*gs], f[x0:x0+(k1-k0)*gs], gs, pa[k0:k1], pinv[k0:k1], int32(lv))
		})
		for k := 0; k < T*nv; k++ {
			c0 := k % nv * vg
			n := min(vg, D-c0)
			buf[o], buf[o+1] = uint8(gmn[k]>>8), uint8(gmn[k])
			o += 2
			x0 := k/nv*D + c0
			for i := x0; i < x0+n; i += 8 {
				v := binary.LittleEndian.Uint64(codes[i:])
				store8(buf, o, w.pack(v), w.n)
				o += w.n
			}
		}
		return dst
	}
	for t := 0; t < T; t++ {
		row := f[t*D : (t+1)*D]
		for j := 0; j < nv; j++ {
			grp := row[j*vg : min((j+1)*vg, D)]
			lo, hi := gridBounds(keyFloat(gmn[t*nv+j]), keyFloat(gmx[t*nv+j]), mn, u)
			if clip {
				lo, hi = clipSearch(grp, 1, len(grp), mn, u, lo, hi, b)
			}
			buf[o], buf[o+1] = uint8(lo), uint8(hi)
			a := mn + float32(float32(lo)*u)
			z := mn + float32(float32(hi)*u)
			var inv float32
			if z > a {
				inv = lv / (z - a)
			}
			o = quantRow(buf, o+2, grp, a, inv, w)
		}
	}
	return dst
}

// valueOutliers picks the value outliers (narrowing gmn, gmx) and appends
// the outlier section.
func (g *qgeom) valueOutliers(dst []byte, f []float32, gmn, gmx []int32, b int, mn, mx float32, sc *scratch) []byte {
	T, D, vg := g.T, g.D, g.q.vg
	nv := (D + vg - 1) / vg
	cands := reserve(&sc.cands, T*nv)
	lv := float64(int(1)<<b - 1)
	for k := 0; k < T*nv; k++ {
		c0 := k % nv * vg
		n := min(vg, D-c0)
		if n < 2 {
			continue
		}
		x0 := k/nv*D + c0
		imin, imax, mn2, mx2 := extremes2(f[x0:x0+n], 1, n)
		cands = append(cands, candidate(int32(k), n, gmn[k], gmx[k], mn2, mx2, imin, imax, 1/(lv*lv)))
	}
	outs := pickOutliers(cands, int(g.q.out*float64(T*D)), resize(&sc.gains, len(cands)))
	narrowGroups(outs, gmn, gmx)
	return appendOutliers(dst, outs, posBits(vg), func(i int) uint8 {
		o := outs[i]
		return gridCode(f[int(o.grp)/nv*D+int(o.grp)%nv*vg+int(o.pos)], mn, mx)
	})
}

// eachGroupSpan calls fn for runs of equal-sized value groups, covering the
// unit in order: the run's first element x0, its groups k0 … k1−1 (indexed
// token·groups-per-token + group), and their size gs. Groups are uniform
// when vg divides head_dim (one run); otherwise each token has a run of full
// groups and a last, shorter one.
func (g *qgeom) eachGroupSpan(fn func(x0, k0, gs, k1 int)) {
	T, D, vg := g.T, g.D, g.q.vg
	nv := (D + vg - 1) / vg
	if D%vg == 0 {
		fn(0, 0, vg, T*nv)
		return
	}
	full := D / vg
	for t := 0; t < T; t++ {
		if full > 0 {
			fn(t*D, t*nv, vg, t*nv+full)
		}
		fn(t*D+full*vg, t*nv+full, D-full*vg, t*nv+nv)
	}
}

// minMaxKeys returns the smallest and largest order keys (floatKey) of x.
func minMaxKeys(x []float32) (int32, int32) {
	l0, h0 := int32(math.MaxInt32), int32(math.MinInt32)
	l1, h1 := l0, h0
	i := 0
	for ; i+2 <= len(x); i += 2 {
		k0, k1 := floatKey(x[i]), floatKey(x[i+1])
		l0, h0 = min(l0, k0), max(h0, k0)
		l1, h1 = min(l1, k1), max(h1, k1)
	}
	if i < len(x) {
		k := floatKey(x[i])
		l0, h0 = min(l0, k), max(h0, k)
	}
	return min(l0, l1), max(h0, h1)
}

// quantRow quantizes the contiguous values x on the levels a + q/inv and
// packs the codes at buf[o:]; it returns the offset after them. Codes are
// clamped as in quantCol.
func quantRow(buf []byte, o int, x []float32, a, inv float32, w *swar) int {
	m := int32(1)<<w.b - 1
	n := len(x)
	i := 0
	for ; i+8 <= n; i += 8 {
		c := x[i : i+8]
		v := uint64(clampCode(int32((c[0]-a)*inv+0.5), m)) |
			uint64(clampCode(int32((c[1]-a)*inv+0.5), m))<<8 |
			uint64(clampCode(int32((c[2]-a)*inv+0.5), m))<<16 |
			uint64(clampCode(int32((c[3]-a)*inv+0.5), m))<<24 |
			uint64(clampCode(int32((c[4]-a)*inv+0.5), m))<<32 |
			uint64(clampCode(int32((c[5]-a)*inv+0.5), m))<<40 |
			uint64(clampCode(int32((c[6]-a)*inv+0.5), m))<<48 |
			uint64(clampCode(int32((c[7]-a)*inv+0.5), m))<<56
		store8(buf, o, w.pack(v), w.n)
		o += w.n
	}
	if i < n {
		var v uint64
		for j, y := range x[i:] {
			v |= uint64(clampCode(int32((y-a)*inv+0.5), m)) << (8 * j)
		}
		nb := packedLen(n-i, int(w.b))
		store8(buf, o, w.pack(v), nb)
		o += nb
	}
	return o
}

func (g *qgeom) decodeV(out, src []byte, b int, outs []outEntry, sc *scratch) error {
	T, D, dt, hs, es, vg := g.T, g.D, g.dt, g.hs, g.es, g.q.vg
	if len(src) < 2*hs {
		return errShort("value header")
	}
	mn, mx := getBound(src, dt), getBound(src[hs:], dt)
	if !isFinite32(mn) || !isFinite32(mx) || mn > mx {
		return fmt.Errorf("%w: value bounds", ErrCorrupt)
	}
	p := 2 * hs
	size := 0
	for c0 := 0; c0 < D; c0 += vg {
		size += 2 + packedLen(min(vg, D-c0), b)
	}
	if len(src)-p != T*size {
		if len(src)-p < T*size {
			return errShort("value codes")
		}
		return fmt.Errorf("%w: %d trailing value bytes", ErrCorrupt, len(src)-p-T*size)
	}
	u := (mx - mn) / 255
	lv := float32(int(1)<<b - 1)
	w := &swars[b]
	l := resize(&sc.lut, 256)[:1<<b]
	if g.simdV {
		nv := (D + vg - 1) / vg
		pa, ps := resize(&sc.pa, T*nv), resize(&sc.pb, T*nv)
		codes := resize(&sc.ccodes, T*D)
		for k := 0; k < T*nv; k++ {
			c0 := k % nv * vg
			n := min(vg, D-c0)
			lo, hi := int(src[p]), int(src[p+1])
			if lo > hi {
				return fmt.Errorf("%w: value group bounds %d > %d", ErrCorrupt, lo, hi)
			}
			a := mn + float32(float32(lo)*u)
			z := mn + float32(float32(hi)*u)
			pa[k], ps[k] = a, (z-a)/lv
			p += 2
			x0 := k/nv*D + c0
			for i := x0; i < x0+n; i += 8 {
				binary.LittleEndian.PutUint64(codes[i:], w.unpack(load8(src, p)&w.full))
				p += w.n
			}
		}
		g.eachGroupSpan(func(x0, k0, gs, k1 int) {
			dequantGroups(out[2*x0:2*(x0+(k1-k0)*gs)], codes[x0:x0+(k1-k0)*gs], gs, pa[k0:k1], ps[k0:k1])
		})
		g.putValueOutliers(out, outs, mn, mx)
		return nil
	}
	for t := 0; t < T; t++ {
		for c0 := 0; c0 < D; c0 += vg {
			n := min(vg, D-c0)
			k := packedLen(n, b)
			lo, hi := int(src[p]), int(src[p+1])
			if lo > hi {
				return fmt.Errorf("%w: value group bounds %d > %d", ErrCorrupt, lo, hi)
			}
			a := mn + float32(float32(lo)*u)
			z := mn + float32(float32(hi)*u)
			s := (z - a) / lv
			packed := src[p+2 : p+2+k]
			p += 2 + k
			o := out[(t*D+c0)*es : (t*D+c0+n)*es]
			switch {
			case 1<<b > n:
				directCol(o, packed, n, 1, es, dt, w, a, s)
			case es == 2:
				fillLevels(l, dt, a, s)
				unpackRow16(o, packed, n, w, l)
			default:
				fillLevels(l, dt, a, s)
				unpackCol32(o, packed, n, 1, w, l)
			}
		}
	}
	g.putValueOutliers(out, outs, mn, mx)
	return nil
}

// putValueOutliers writes the decoded outliers over their values.
func (g *qgeom) putValueOutliers(out []byte, outs []outEntry, mn, mx float32) {
	D, vg := g.D, g.q.vg
	nv := (D + vg - 1) / vg
	u := (mx - mn) / 255
	for _, o := range outs {
		i := int(o.grp)/nv*D + int(o.grp)%nv*vg + int(o.pos)
		putElem(out, i, g.es, levelBits(g.dt, mn+float32(float32(o.code)*u)))
	}
}

// unpackRow16 decodes n codes into contiguous 2-byte elements through the
// level table l.
func unpackRow16(out, packed []byte, n int, w *swar, l []uint32) {
	m := uint8(len(l) - 1)
	i, p := 0, 0
	for ; i+8 <= n; i += 8 {
		v := w.unpack(load8(packed, p) & w.full)
		p += w.n
		o := out[2*i : 2*i+16]
		binary.LittleEndian.PutUint64(o, uint64(l[uint8(v)&m])|uint64(l[uint8(v>>8)&m])<<16|
			uint64(l[uint8(v>>16)&m])<<32|uint64(l[uint8(v>>24)&m])<<48)
		binary.LittleEndian.PutUint64(o[8:], uint64(l[uint8(v>>32)&m])|uint64(l[uint8(v>>40)&m])<<16|
			uint64(l[uint8(v>>48)&m])<<32|uint64(l[uint8(v>>56)&m])<<48)
	}
	if i < n {
		v := w.unpack(load8(packed, p) & w.full)
		for ; i < n; i++ {
			binary.LittleEndian.PutUint16(out[2*i:], uint16(l[uint8(v)&m]))
			v >>= 8
		}
	}
}
