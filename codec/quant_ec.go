package codec

import (
	"encoding/binary"
	"fmt"
	"math"
)

// ecAlpha is the entropy-coded quantizer's step relative to the RMS: 4·2^−bits.
func ecAlpha(b int) float64 { return math.Ldexp(4, -b) }

func (g *qgeom) encodeEntropy(dst []byte, f []float32, isV bool, b int, sc *scratch) []byte {
	T, D := g.T, g.D
	w := resize(&sc.w, 2*D)
	mean, sq := w[:D], w[D:]
	clear(mean)
	clear(sq)
	cmin, cmax := resize(&sc.cmin, D), resize(&sc.cmax, D)
	copy(cmin, f[:D])
	copy(cmax, f[:D])
	for t := 0; t < T; t++ {
		for c, x := range f[t*D : (t+1)*D] {
			mean[c] += float64(x)
			sq[c] += float64(x) * float64(x)
			cmin[c] = min(cmin[c], x)
			cmax[c] = max(cmax[c], x)
		}
	}
	var ref, maxdev float64
	for c := 0; c < D; c++ {
		mean[c] /= float64(T)
		rms := math.Sqrt(sq[c] / float64(T))
		if isV {
			ref += rms * rms
		} else {
			ref += math.Log(max(rms, 1e-30))
		}
		maxdev = max(maxdev, float64(cmax[c])-mean[c], mean[c]-float64(cmin[c]))
	}
	if isV {
		ref = math.Sqrt(ref / float64(D))
	} else {
		ref = math.Exp(ref / float64(D))
	}
	// One step s for the unit; a channel whose range would need more than
	// ±126 steps gets a multiple m_c·s (so outlier channels do not coarsen
	// the others), m_c ≤ 255.
	step := max(ecAlpha(b)*ref, maxdev/(126*255), 1e-30)
	s := float32(step)
	if float64(s) < step { // float32 rounding must not shrink the step below the bound
		s = math.Nextafter32(s, float32(math.Inf(1)))
	}
	dst = append(dst, unitEntropy)
	dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(s))
	ctr := resize(&sc.ctr, D)
	inv := resize(&sc.gscale, D)
	for c := 0; c < D; c++ {
		dev := max(float64(cmax[c])-mean[c], mean[c]-float64(cmin[c]))
		m := min(max(math.Ceil(dev/(126*float64(s))), 1), 255)
		sc_ := s * float32(m)
		// The product is rounded: make sure the step still covers the channel.
		for m < 255 && float64(sc_)*126 < dev {
			m++
			sc_ = s * float32(m)
		}
		dst = append(dst, uint8(m))
		ctr[c] = int32(math.Round(mean[c] / float64(sc_)))
		dst = binary.AppendVarint(dst, int64(ctr[c]))
		inv[c] = 1 / sc_
	}
	syms := resize(&sc.codes, T*D)
	counts := &sc.counts
	*counts = [256]uint32{}
	for t := 0; t < T; t++ {
		row := f[t*D : (t+1)*D]
		out := syms[t*D : (t+1)*D]
		for c, x := range row {
			q := int32(math.Round(float64(x*inv[c]))) - ctr[c]
			q = min(max(q, -127), 127) + 128
			out[c] = uint8(q)
			counts[q]++
		}
	}
	sc.rm.build(counts, T*D)
	dst = sc.rm.appendTable(dst)
	buf := resize(&sc.buf, 4+2*T*D)
	stream := ransEncode(buf, syms, &sc.rm)
	return append(dst, stream...)
}

// --- decoder ------------------------------------------------------------------

func (g *qgeom) decodeEntropy(out, src []byte, sc *scratch) error {
	T, D, dt, es := g.T, g.D, g.dt, g.es
	if len(src) < 4 {
		return errShort("entropy header")
	}
	s := math.Float32frombits(binary.LittleEndian.Uint32(src))
	if !isFinite32(s) || s <= 0 {
		return fmt.Errorf("%w: entropy step %v", ErrCorrupt, s)
	}
	p := 4
	ctr := resize(&sc.ctr, D)
	steps := resize(&sc.gscale, D)
	for c := 0; c < D; c++ {
		if p >= len(src) || src[p] == 0 {
			return fmt.Errorf("%w: entropy step multiple", ErrCorrupt)
		}
		steps[c] = s * float32(src[p])
		p++
		v, k := binary.Varint(src[p:])
		if k <= 0 || v < math.MinInt32/2 || v > math.MaxInt32/2 {
			return fmt.Errorf("%w: entropy centre", ErrCorrupt)
		}
		ctr[c] = int32(v)
		p += k
	}
	k, err := sc.rm.readTable(src[p:])
	if err != nil {
		return err
	}
	p += k
	syms := resize(&sc.codes, T*D)
	if err := ransDecode(syms, src[p:], &sc.rm); err != nil {
		return err
	}
	for t := 0; t < T; t++ {
		row := syms[t*D : (t+1)*D]
		for c, q := range row {
			x := float32(ctr[c]+int32(q)-128) * steps[c]
			putElem(out, t*D+c, es, levelBits(dt, x))
		}
	}
	return nil
}
