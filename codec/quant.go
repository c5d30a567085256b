package codec

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/pierrec/lz4/v4"
)

// Quantized payload (modes int8, int4, int3, int2).
//
// The block is cut into units: one [tokens][head_dim] matrix of K or V for one
// layer and KV head. In both orders unit i is raw bytes [i·u, (i+1)·u); in
// KVSeparate the first half are K, in KVInterleaved each layer holds its K
// heads then its V heads. The payload is
//
//	u32 × units   encoded length of each unit
//	units         back to back
//
// and every unit starts with a method byte:
//
//	unitPacked     fixed-rate min/max codes (below)
//	unitPackedLZ4  u32 packed length, then an lz4 block of the unitPacked body
//	unitEntropy    uniform quantizer + rANS (below)
//
// Fixed-rate keys (KIVI: per channel over groups of KeyGroup tokens):
//
//	per channel c: lo_c, hi_c (block dtype, rounded outward), bits_c u8
//	per token group g:
//	  per channel c: gl, gh u8   group bounds on the 255-step grid of [lo_c, hi_c]; omitted when there is one group
//	  per channel c: codes       n_g codes of bits_c bits, LSB first, padded to a byte
//
// bits_c is the key channel's code width. By default the encoder spends the
// mode's bit budget (bits × channels) unevenly: channels whose keys are large
// get more bits, because queries are large on the same channels (true of RoPE
// models: on the fixture model the log-energies of q and k channels correlate
// 0.3–0.9), so their key error moves the attention scores most.
//
// Fixed-rate values (per token over groups of ValueGroup channels):
//
//	lo, hi (block dtype, rounded outward) over the unit
//	per token, per channel group: gl, gh u8 on the 255-step grid of [lo, hi], codes
//
// A code q in a group [a, b] with w bits decodes to a + q·(b − a)/(2^w − 1).
//
// Entropy-coded units (Options.Entropy): one step s for the unit (f32), per
// channel a step multiple m_c (u8, ≥ 1) and a centre (zigzag varint), then a
// rANS table and stream of symbols x ≈ (centre_c + sym − 128)·m_c·s,
// token-major. The step is 4·2^−bits times the
// geometric mean of the key channels' RMS (keys) or the values' RMS.

const (
	unitPacked    = 0
	unitPackedLZ4 = 1
	unitEntropy   = 2
)

// Params layout for quantized modes.
//
//	[0] key bits  [1] value bits  [2:4] key group (tokens)  [4:6] value group (channels)
//	[6] flags     [7] boosted layers: the block's first n layers use one more bit
const (
	flagAlloc   = 1 << 0
	flagEntropy = 1 << 1
	flagLZ4     = 1 << 2
	flagClip    = 1 << 3
)

// Default group sizes.
const (
	DefaultKeyGroup     = 32  // tokens per key group (int4, int3, int2)
	DefaultKeyGroupInt8 = 128 // int8: larger groups keep the scale overhead under 1.9×
	DefaultValueGroup   = 64  // channels per value group, capped at head_dim
)

type quantParams struct {
	kbits, vbits int
	kg, vg       int
	flags        uint8
	boost        int
}

func (q quantParams) params() Params {
	var p Params
	p[0], p[1] = uint8(q.kbits), uint8(q.vbits)
	binary.LittleEndian.PutUint16(p[2:4], uint16(q.kg))
	binary.LittleEndian.PutUint16(p[4:6], uint16(q.vg))
	p[6] = q.flags
	p[7] = uint8(q.boost)
	return p
}

func (o Options) quantParams(l Layout) (quantParams, error) {
	b := modeBits(o.Mode)
	q := quantParams{kbits: b, vbits: b, kg: o.KeyGroup, vg: o.ValueGroup}
	if q.kg == 0 {
		q.kg = DefaultKeyGroup
		if b == 8 {
			q.kg = DefaultKeyGroupInt8
		}
	}
	if q.vg == 0 {
		q.vg = DefaultValueGroup
	}
	if q.kg < 1 || q.kg > math.MaxUint16 || q.vg < 1 || q.vg > math.MaxUint16 {
		return q, fmt.Errorf("%w: group sizes %d/%d not in 1..65535", ErrMode, q.kg, q.vg)
	}
	q.kg = min(q.kg, int(l.Tokens))
	q.vg = min(q.vg, int(l.HeadDim))
	if o.Layer < 0 || o.BoostLayers < 0 {
		return q, fmt.Errorf("%w: negative layer %d or boost %d", ErrMode, o.Layer, o.BoostLayers)
	}
	q.boost = min(max(o.BoostLayers-o.Layer, 0), l.NumLayers(), 255)
	if !o.UniformKeyBits {
		q.flags |= flagAlloc
	}
	if o.Entropy {
		q.flags |= flagEntropy
	}
	if o.LZ4 {
		q.flags |= flagLZ4
	}
	if o.Clip {
		q.flags |= flagClip
	}
	return q, nil
}

func parseQuantParams(p Params, m Mode, l Layout) (quantParams, error) {
	q := quantParams{
		kbits: int(p[0]), vbits: int(p[1]),
		kg:    int(binary.LittleEndian.Uint16(p[2:4])),
		vg:    int(binary.LittleEndian.Uint16(p[4:6])),
		flags: p[6], boost: int(p[7]),
	}
	b := modeBits(m)
	switch {
	case q.kbits != b || q.vbits != b:
		return q, fmt.Errorf("%w: %v frame with %d/%d bits", ErrCorrupt, m, q.kbits, q.vbits)
	case q.kg < 1 || q.kg > int(l.Tokens):
		return q, fmt.Errorf("%w: key group %d for %d tokens", ErrCorrupt, q.kg, l.Tokens)
	case q.vg < 1 || q.vg > int(l.HeadDim):
		return q, fmt.Errorf("%w: value group %d for head_dim %d", ErrCorrupt, q.vg, l.HeadDim)
	case q.boost > l.NumLayers():
		return q, fmt.Errorf("%w: %d boosted layers of %d", ErrCorrupt, q.boost, l.NumLayers())
	}
	return q, nil
}

// geometry of a block for the quantizer.
type qgeom struct {
	l          Layout
	dt         DType
	es, hs     int // element size; bound (header float) size
	T, D, H, L int
	units      int
	unitBytes  int
	q          quantParams
}

func newGeom(l Layout, q quantParams) qgeom {
	g := qgeom{l: l, dt: l.DType, es: l.DType.Size(), T: int(l.Tokens), D: int(l.HeadDim),
		H: int(l.KVHeads), L: l.NumLayers(), q: q}
	g.hs = g.es
	g.units = 2 * g.L * g.H
	g.unitBytes = g.T * g.D * g.es
	return g
}

// unit returns whether unit i holds values and its layer within the block.
func (g *qgeom) unit(i int) (isV bool, layer int) {
	if g.l.Order == KVInterleaved {
		return (i/g.H)%2 == 1, i / (2 * g.H)
	}
	half := g.L * g.H
	return i >= half, (i % half) / g.H
}

func (g *qgeom) bits(isV bool, layer int) int {
	b := g.q.kbits
	if isV {
		b = g.q.vbits
	}
	if layer < g.q.boost {
		b++
	}
	return min(b, 8)
}

// unitBound is the most bytes unit encoding may take with code width ≤ b.
func (g *qgeom) unitBound(isV bool, b int) int {
	if isV {
		n := 1 + 2*g.hs
		per := 0
		for c0 := 0; c0 < g.D; c0 += g.q.vg {
			per += 2 + (min(g.q.vg, g.D-c0)*b+7)/8
		}
		return n + g.T*per
	}
	n := 1 + g.D*(2*g.hs+1)
	ng := (g.T + g.q.kg - 1) / g.q.kg
	for t0 := 0; t0 < g.T; t0 += g.q.kg {
		ln := min(g.q.kg, g.T-t0)
		if ng > 1 {
			n += 2 * g.D
		}
		n += (ln*g.D*b+7)/8 + g.D
	}
	return n
}

func quantMaxPayload(l Layout, b int, boost int) int {
	q := quantParams{kbits: b, vbits: b, kg: DefaultKeyGroup, vg: 1}
	g := newGeom(l, q)
	bmax := min(b+boost, 8)
	// The bound grows as groups shrink; take the worst key group (1 token) and
	// value group (1 channel) so that it holds for every option.
	q.kg = 1
	g.q = q
	n := 4 * g.units
	n += g.L * g.H * (g.unitBound(false, bmax) + g.unitBound(true, bmax))
	return n
}

// --- element access ---------------------------------------------------------

// clampF keeps values finite and small enough that differences of two of them
// stay finite: NaN becomes 0, infinities and huge values ±2^100.
const clampMag = 1.2676506e30

func loadUnit(f []float32, src []byte, dt DType) {
	switch dt {
	case FP16:
		src = src[:2*len(f)]
		for i := range f {
			h := uint16(src[2*i]) | uint16(src[2*i+1])<<8
			if h&0x7c00 == 0x7c00 { // NaN or Inf
				f[i] = sanitize(HalfToFloat32(h))
				continue
			}
			const magic = 0x77800000 // 2^112
			o := math.Float32frombits(uint32(h&0x7fff)<<13) * math.Float32frombits(magic)
			f[i] = math.Float32frombits(math.Float32bits(o) | uint32(h&0x8000)<<16)
		}
		return
	case BF16:
		for i := range f {
			f[i] = BFloat16ToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case FP32:
		for i := range f {
			f[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	}
	for i, x := range f {
		if x != x || x > clampMag || x < -clampMag {
			f[i] = sanitize(x)
		}
	}
}

func sanitize(x float32) float32 {
	switch {
	case x != x:
		return 0
	case x > clampMag:
		return clampMag
	case x < -clampMag:
		return -clampMag
	}
	return x
}

// bound stores a unit bound in the block's dtype.
func putBound(b []byte, dt DType, f float32) {
	switch dt {
	case FP16:
		binary.LittleEndian.PutUint16(b, Float32ToHalf(f))
	case BF16:
		binary.LittleEndian.PutUint16(b, Float32ToBFloat16(f))
	default:
		binary.LittleEndian.PutUint32(b, math.Float32bits(f))
	}
}

func getBound(b []byte, dt DType) float32 {
	switch dt {
	case FP16:
		return HalfToFloat32(binary.LittleEndian.Uint16(b))
	case BF16:
		return BFloat16ToFloat32(binary.LittleEndian.Uint16(b))
	}
	return math.Float32frombits(binary.LittleEndian.Uint32(b))
}

// floorTo returns the largest value representable in dt that is ≤ f.
func floorTo(dt DType, f float32) float32 {
	switch dt {
	case FP16:
		if f < -65504 {
			return -65504 // data from an fp16 block never is
		}
		return halfFloor(min(f, 65504))
	case BF16:
		h := Float32ToBFloat16(f)
		for BFloat16ToFloat32(h) > f {
			if h == 0 {
				h = 0x8001
			} else if h&0x8000 != 0 {
				h++
			} else {
				h--
			}
		}
		return BFloat16ToFloat32(h)
	}
	return f
}

func ceilTo(dt DType, f float32) float32 { return -floorTo(dt, -f) }

// levelBits converts a decoded level to the output element's bit pattern.
func levelBits(dt DType, f float32) uint32 {
	switch dt {
	case FP16:
		return uint32(Float32ToHalf(f))
	case BF16:
		return uint32(Float32ToBFloat16(f))
	}
	return math.Float32bits(f)
}

func putElem(out []byte, i int, es int, v uint32) {
	if es == 2 {
		binary.LittleEndian.PutUint16(out[2*i:], uint16(v))
	} else {
		binary.LittleEndian.PutUint32(out[4*i:], v)
	}
}

// --- bit packing --------------------------------------------------------------

func packBits(dst []byte, codes []uint8, b int) []byte {
	switch b {
	case 8:
		return append(dst, codes...)
	case 4:
		n := len(codes)
		for i := 0; i+1 < n; i += 2 {
			dst = append(dst, codes[i]|codes[i+1]<<4)
		}
		if n%2 == 1 {
			dst = append(dst, codes[n-1])
		}
		return dst
	}
	var acc uint64
	nb := 0
	for _, c := range codes {
		acc |= uint64(c) << nb
		nb += b
		if nb >= 32 {
			dst = binary.LittleEndian.AppendUint32(dst, uint32(acc))
			acc >>= 32
			nb -= 32
		}
	}
	for nb > 0 {
		dst = append(dst, byte(acc))
		acc >>= 8
		nb -= 8
	}
	return dst
}

// unpackBits fills codes from src (which must hold ceil(len(codes)·b/8) bytes).
func unpackBits(codes []uint8, src []byte, b int) {
	switch b {
	case 8:
		copy(codes, src)
		return
	case 4:
		n := len(codes)
		for i := 0; i+1 < n; i += 2 {
			x := src[i/2]
			codes[i], codes[i+1] = x&15, x>>4
		}
		if n%2 == 1 {
			codes[n-1] = src[n/2] & 15
		}
		return
	}
	mask := uint64(1)<<b - 1
	var acc uint64
	nb, p := 0, 0
	for i := range codes {
		if nb < b {
			acc |= uint64(src[p]) << nb
			p++
			nb += 8
		}
		codes[i] = uint8(acc & mask)
		acc >>= b
		nb -= b
	}
}

func packedLen(n, b int) int { return (n*b + 7) / 8 }

// --- encoder ------------------------------------------------------------------

func encodeQuant(dst []byte, l Layout, raw []byte, q quantParams, opts Options) ([]byte, error) {
	g := newGeom(l, q)
	start := len(dst)
	par := min(opts.Parallelism, g.units)
	if par <= 1 {
		sc := getScratch()
		defer putScratch(sc)
		dst = grow(dst, 4*g.units)
		for i := 0; i < g.units; i++ {
			before := len(dst)
			dst = g.encodeUnit(dst, raw[i*g.unitBytes:(i+1)*g.unitBytes], i, sc)
			binary.LittleEndian.PutUint32(dst[start+4*i:], uint32(len(dst)-before))
		}
		return dst, nil
	}
	return encodeQuantParallel(dst, g, raw, par), nil
}

// encodeQuantParallel encodes each unit into its own slot of a shared buffer,
// then copies the units behind the length table in order.
func encodeQuantParallel(dst []byte, g qgeom, raw []byte, par int) []byte {
	start := len(dst)
	offs := make([]int, g.units+1)
	for i := 0; i < g.units; i++ {
		isV, layer := g.unit(i)
		offs[i+1] = offs[i] + g.unitBound(isV, g.bits(isV, layer))
	}
	tmp := make([]byte, offs[g.units])
	lens := make([]int, g.units)
	forEachUnit(g.units, par, func(i int, sc *scratch) error {
		out := g.encodeUnit(tmp[offs[i]:offs[i]:offs[i+1]], raw[i*g.unitBytes:(i+1)*g.unitBytes], i, sc)
		lens[i] = len(out)
		return nil
	})
	dst = grow(dst, 4*g.units)
	for i := 0; i < g.units; i++ {
		binary.LittleEndian.PutUint32(dst[start+4*i:], uint32(lens[i]))
		dst = append(dst, tmp[offs[i]:offs[i]+lens[i]]...)
	}
	return dst
}

// forEachUnit runs fn for units 0..n-1 on par goroutines, each with its own scratch.
func forEachUnit(n, par int, fn func(i int, sc *scratch) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex // protects first
	var first error
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := getScratch()
			defer putScratch(sc)
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i, sc); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// encodeUnit appends unit i's encoding to dst.
func (g *qgeom) encodeUnit(dst []byte, src []byte, i int, sc *scratch) []byte {
	isV, layer := g.unit(i)
	b := g.bits(isV, layer)
	f := growF32(&sc.f, g.T*g.D)
	loadUnit(f, src, g.dt)
	bound := g.unitBound(isV, b)
	if g.q.flags&flagEntropy != 0 {
		start := len(dst)
		dst = g.encodeEntropy(dst, f, isV, b, sc)
		if len(dst)-start <= bound {
			return dst
		}
		dst = dst[:start] // rANS lost to the fixed-rate codes: keep those
	}
	start := len(dst)
	dst = append(dst, unitPacked)
	if isV {
		dst = g.encodeV(dst, f, b, sc)
	} else {
		dst = g.encodeK(dst, f, b, sc)
	}
	if g.q.flags&flagLZ4 != 0 {
		body := dst[start+1:]
		cbuf := sc.bytes(&sc.buf, lz4.CompressBlockBound(len(body)))
		k, err := sc.lz4c.CompressBlock(body, cbuf)
		// Keep lz4 only where it gains at least 1/32 of the unit.
		if err == nil && k > 0 && 5+k < len(body)-len(body)/32 {
			n := len(body)
			dst = append(dst[:start], unitPackedLZ4)
			dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
			dst = append(dst, cbuf[:k]...)
		}
	}
	return dst
}

func (g *qgeom) encodeK(dst []byte, f []float32, b int, sc *scratch) []byte {
	T, D, dt, hs, kg := g.T, g.D, g.dt, g.hs, g.q.kg
	ng := (T + kg - 1) / kg
	// One pass: per group and channel min/max, per channel energy.
	// Min and max run on order-preserving integer keys of the floats, which
	// compile to branch-free code (random data defeats branch prediction).
	gmn, gmx := growF32(&sc.gmin, ng*D), growF32(&sc.gmax, ng*D)
	energy := growF32(&sc.glo, D)
	clear(energy)
	kmn, kmx := growI32(&sc.kmin, D), growI32(&sc.kmax, D)
	for gi := 0; gi < ng; gi++ {
		t0 := gi * kg
		n := min(kg, T-t0)
		for c := 0; c < D; c++ {
			kmn[c] = math.MaxInt32
			kmx[c] = math.MinInt32
		}
		for t := t0; t < t0+n; t++ {
			row := f[t*D : (t+1)*D]
			mn, mx, e := kmn[:len(row)], kmx[:len(row)], energy[:len(row)]
			for c, x := range row {
				k := floatKey(x)
				mn[c] = min(mn[c], k)
				mx[c] = max(mx[c], k)
				e[c] += x * x
			}
		}
		for c := 0; c < D; c++ {
			gmn[gi*D+c], gmx[gi*D+c] = keyFloat(kmn[c]), keyFloat(kmx[c])
		}
	}
	cmin, cmax := growF32(&sc.cmin, D), growF32(&sc.cmax, D)
	copy(cmin, gmn[:D])
	copy(cmax, gmx[:D])
	for gi := 1; gi < ng; gi++ {
		for c := 0; c < D; c++ {
			cmin[c] = min(cmin[c], gmn[gi*D+c])
			cmax[c] = max(cmax[c], gmx[gi*D+c])
		}
	}
	bits := growU8(&sc.bits, D)
	for c := range bits {
		bits[c] = uint8(b)
	}
	if cap(sc.w) < D {
		sc.w = make([]float64, D)
	}
	w := sc.w[:D]
	for c := 0; c < D; c++ {
		cmin[c], cmax[c] = floorTo(dt, cmin[c]), ceilTo(dt, cmax[c])
		r := float64(cmax[c]) - float64(cmin[c])
		w[c] = math.Sqrt(float64(energy[c])/float64(T)) * r * r
	}
	if g.q.flags&flagAlloc != 0 {
		allocBits(bits, w, b)
	}
	for c := 0; c < D; c++ {
		n := len(dst)
		dst = grow(dst, 2*hs+1)
		putBound(dst[n:], dt, cmin[c])
		putBound(dst[n+hs:], dt, cmax[c])
		dst[n+2*hs] = bits[c]
	}
	glo, gsc, lvf := growF32(&sc.glo, D), growF32(&sc.gscale, D), growF32(&sc.lvf, D)
	lvi := growI32(&sc.kmin, D) // key scratch is free again
	for c := 0; c < D; c++ {
		lvf[c] = float32(int(1)<<bits[c] - 1)
		lvi[c] = int32(1)<<bits[c] - 1
	}
	codes := growU8(&sc.codes, kg*D)
	clip := g.q.flags&flagClip != 0 && b <= 4
	for gi := 0; gi < ng; gi++ {
		t0 := gi * kg
		n := min(kg, T-t0)
		// Per channel: group bounds on the channel's 255-step grid, then the
		// reciprocal step used to quantize.
		for c := 0; c < D; c++ {
			u := (cmax[c] - cmin[c]) / 255
			lo, hi := 0, 255
			if ng > 1 {
				lo, hi = gridBounds(gmn[gi*D+c], gmx[gi*D+c], cmin[c], u)
				if clip {
					lo, hi = clipSearch(f[t0*D+c:], D, n, cmin[c], u, lo, hi, int(bits[c]))
				}
				dst = append(dst, uint8(lo), uint8(hi))
			}
			a := cmin[c] + float32(float32(lo)*u)
			z := cmin[c] + float32(float32(hi)*u)
			glo[c] = a
			gsc[c] = 0
			if z > a {
				gsc[c] = lvf[c] / (z - a)
			}
		}
		for t := t0; t < t0+n; t++ {
			row := f[t*D : (t+1)*D]
			glo, gsc, lvi := glo[:len(row)], gsc[:len(row)], lvi[:len(row)]
			i := t - t0
			for c, x := range row {
				q := int32((x-glo[c])*gsc[c] + 0.5)
				codes[c*kg+i] = uint8(min(max(q, 0), lvi[c]))
			}
		}
		for c := 0; c < D; c++ {
			dst = packBits(dst, codes[c*kg:c*kg+n], int(bits[c]))
		}
	}
	return dst
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
// reverse water-filling on weights w (distortion ∝ w·4^−bits), 1..8 bits each.
func allocBits(bits []uint8, w []float64, b int) {
	D := len(bits)
	lo := max(1, b-3)
	for c := range bits {
		bits[c] = uint8(lo)
	}
	for budget := (b - lo) * D; budget > 0; budget-- {
		best, bi := -1.0, -1
		for c := 0; c < D; c++ {
			if bits[c] >= 8 {
				continue
			}
			if gain := math.Ldexp(w[c], -2*int(bits[c])); gain > best {
				best, bi = gain, c
			}
		}
		if bi < 0 {
			return
		}
		bits[bi]++
	}
}

func (g *qgeom) encodeV(dst []byte, f []float32, b int, sc *scratch) []byte {
	T, D, dt, hs, vg := g.T, g.D, g.dt, g.hs, g.q.vg
	mn, mx := f[0], f[0]
	for _, x := range f[:T*D] {
		mn = min(mn, x)
		mx = max(mx, x)
	}
	mn, mx = floorTo(dt, mn), ceilTo(dt, mx)
	n := len(dst)
	dst = grow(dst, 2*hs)
	putBound(dst[n:], dt, mn)
	putBound(dst[n+hs:], dt, mx)
	u := (mx - mn) / 255
	lv := float32(int(1)<<b - 1)
	lvi := int32(1)<<b - 1
	codes := growU8(&sc.codes, vg)
	clip := g.q.flags&flagClip != 0 && b <= 4
	for t := 0; t < T; t++ {
		row := f[t*D : (t+1)*D]
		for c0 := 0; c0 < D; c0 += vg {
			grp := row[c0:min(c0+vg, D)]
			kl, kh := int32(math.MaxInt32), int32(math.MinInt32)
			for _, x := range grp {
				k := floatKey(x)
				kl = min(kl, k)
				kh = max(kh, k)
			}
			gl, gh := keyFloat(kl), keyFloat(kh)
			lo, hi := gridBounds(gl, gh, mn, u)
			if clip {
				lo, hi = clipSearch(grp, 1, len(grp), mn, u, lo, hi, b)
			}
			dst = append(dst, uint8(lo), uint8(hi))
			a := mn + float32(float32(lo)*u)
			z := mn + float32(float32(hi)*u)
			var inv float32
			if z > a {
				inv = lv / (z - a)
			}
			cs := codes[:len(grp)]
			for i, x := range grp {
				q := int32((x-a)*inv + 0.5)
				cs[i] = uint8(min(max(q, 0), lvi))
			}
			dst = packBits(dst, cs, b)
		}
	}
	return dst
}

// ecAlpha is the entropy-coded quantizer's step relative to the RMS: 4·2^−bits.
func ecAlpha(b int) float64 { return math.Ldexp(4, -b) }

func (g *qgeom) encodeEntropy(dst []byte, f []float32, isV bool, b int, sc *scratch) []byte {
	T, D := g.T, g.D
	if cap(sc.w) < 2*D {
		sc.w = make([]float64, 2*D)
	}
	mean, sq := sc.w[:D], sc.w[D:2*D]
	clear(mean)
	clear(sq)
	cmin, cmax := growF32(&sc.cmin, D), growF32(&sc.cmax, D)
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
	ctr := sc.ctr[:0]
	if cap(ctr) < D {
		ctr = make([]int32, D)
		sc.ctr = ctr
	}
	ctr = ctr[:D]
	inv := growF32(&sc.gscale, D)
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
	syms := growU8(&sc.codes, T*D)
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
	buf := sc.bytes(&sc.buf, 4+2*T*D)
	stream := ransEncode(buf, syms, &sc.rm)
	return append(dst, stream...)
}

// --- decoder ------------------------------------------------------------------

func decodeQuant(dst []byte, h Header, q quantParams, payload []byte, parallelism int) ([]byte, error) {
	g := newGeom(h.Layout, q)
	tab := 4 * g.units
	if len(payload) < tab {
		return dst, fmt.Errorf("%w: payload of %d bytes has no unit table", ErrCorrupt, len(payload))
	}
	// Validate the table before touching the output.
	off := tab
	for i := 0; i < g.units; i++ {
		n := int(binary.LittleEndian.Uint32(payload[4*i:]))
		if n < 1 || n > len(payload)-off {
			return dst, fmt.Errorf("%w: unit %d length %d overruns the payload", ErrCorrupt, i, n)
		}
		off += n
	}
	if off != len(payload) {
		return dst, fmt.Errorf("%w: %d trailing payload bytes", ErrCorrupt, len(payload)-off)
	}
	start := len(dst)
	dst = grow(dst, int(h.RawLen))
	out := dst[start:]
	par := min(parallelism, g.units)
	if par <= 1 {
		sc := getScratch()
		defer putScratch(sc)
		o := tab
		for i := 0; i < g.units; i++ {
			n := int(binary.LittleEndian.Uint32(payload[4*i:]))
			if err := g.decodeUnit(out[i*g.unitBytes:(i+1)*g.unitBytes], payload[o:o+n], i, sc); err != nil {
				return dst[:start], err
			}
			o += n
		}
		return dst, nil
	}
	if err := decodeQuantParallel(out, g, payload, par); err != nil {
		return dst[:start], err
	}
	return dst, nil
}

func decodeQuantParallel(out []byte, g qgeom, payload []byte, par int) error {
	tab := 4 * g.units
	offs := make([]int, g.units+1)
	offs[0] = tab
	for i := 0; i < g.units; i++ {
		offs[i+1] = offs[i] + int(binary.LittleEndian.Uint32(payload[4*i:]))
	}
	return forEachUnit(g.units, par, func(i int, sc *scratch) error {
		return g.decodeUnit(out[i*g.unitBytes:(i+1)*g.unitBytes], payload[offs[i]:offs[i+1]], i, sc)
	})
}

func (g *qgeom) decodeUnit(out, src []byte, i int, sc *scratch) error {
	isV, layer := g.unit(i)
	b := g.bits(isV, layer)
	method, body := src[0], src[1:]
	switch method {
	case unitEntropy:
		return g.decodeEntropy(out, body, sc)
	case unitPackedLZ4:
		if len(body) < 4 {
			return fmt.Errorf("%w: unit %d: short lz4 header", ErrCorrupt, i)
		}
		n := int(binary.LittleEndian.Uint32(body))
		if n > g.unitBound(isV, b) || n/255 > len(body)-4 {
			return fmt.Errorf("%w: unit %d: lz4 length %d", ErrCorrupt, i, n)
		}
		buf := sc.bytes(&sc.buf, n)
		k, err := lz4.UncompressBlock(body[4:], buf)
		if err != nil || k != n {
			return fmt.Errorf("%w: unit %d: lz4 (%d of %d bytes): %v", ErrCorrupt, i, k, n, err)
		}
		body = buf
	case unitPacked:
	default:
		return fmt.Errorf("%w: unit %d: method %d", ErrCorrupt, i, method)
	}
	var err error
	if isV {
		err = g.decodeV(out, body, b, sc)
	} else {
		err = g.decodeK(out, body, b, sc)
	}
	if err != nil {
		return fmt.Errorf("unit %d: %w", i, err)
	}
	return nil
}

func errShort(what string) error { return fmt.Errorf("%w: %s: payload too short", ErrCorrupt, what) }

func (g *qgeom) decodeK(out, src []byte, b int, sc *scratch) error {
	T, D, dt, hs, es, kg := g.T, g.D, g.dt, g.hs, g.es, g.q.kg
	hdr := D * (2*hs + 1)
	if len(src) < hdr {
		return errShort("key header")
	}
	cmin, cmax := growF32(&sc.cmin, D), growF32(&sc.cmax, D)
	bits := growU8(&sc.bits, D)
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
	codes := growU8(&sc.codes, kg*D)
	lut := sc.lut[:0]
	if cap(lut) < 256*D {
		lut = make([]uint32, 256*D)
		sc.lut = lut
	}
	lut = lut[:256*D]
	glo, gsc := growF32(&sc.glo, D), growF32(&sc.gscale, D)
	for t0 := 0; t0 < T; t0 += kg {
		n := min(kg, T-t0)
		direct := false
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
			bc := int(bits[c])
			lv := float32(int(1)<<bc - 1)
			glo[c], gsc[c] = a, (z-a)/lv
			k := packedLen(n, bc)
			if len(src)-p < k {
				return errShort("key codes")
			}
			unpackBits(codes[c*kg:c*kg+n], src[p:p+k], bc)
			p += k
			if 1<<bc <= 2*n {
				l := lut[c*256 : c*256+1<<bc]
				for q := range l {
					l[q] = levelBits(dt, a+float32(float32(q)*gsc[c]))
				}
			} else {
				direct = true
			}
		}
		if !direct && es == 2 {
			for t := t0; t < t0+n; t++ {
				o := out[t*D*2 : (t+1)*D*2]
				i := t - t0
				for c := 0; c < D; c++ {
					binary.LittleEndian.PutUint16(o[2*c:], uint16(lut[c*256+int(codes[c*kg+i])]))
				}
			}
			continue
		}
		for t := t0; t < t0+n; t++ {
			i := t - t0
			for c := 0; c < D; c++ {
				q := codes[c*kg+i]
				var v uint32
				if 1<<bits[c] <= 2*n {
					v = lut[c*256+int(q)]
				} else {
					v = levelBits(dt, glo[c]+float32(float32(q)*gsc[c]))
				}
				putElem(out, t*D+c, es, v)
			}
		}
	}
	if p != len(src) {
		return fmt.Errorf("%w: %d trailing key bytes", ErrCorrupt, len(src)-p)
	}
	return nil
}

func (g *qgeom) decodeV(out, src []byte, b int, sc *scratch) error {
	T, D, dt, hs, es, vg := g.T, g.D, g.dt, g.hs, g.es, g.q.vg
	if len(src) < 2*hs {
		return errShort("value header")
	}
	mn, mx := getBound(src, dt), getBound(src[hs:], dt)
	if !isFinite32(mn) || !isFinite32(mx) || mn > mx {
		return fmt.Errorf("%w: value bounds", ErrCorrupt)
	}
	p := 2 * hs
	u := (mx - mn) / 255
	lv := float32(int(1)<<b - 1)
	codes := growU8(&sc.codes, vg)
	lut := sc.lut[:0]
	if cap(lut) < 256 {
		lut = make([]uint32, 256)
		sc.lut = lut
	}
	lut = lut[:256]
	for t := 0; t < T; t++ {
		for c0 := 0; c0 < D; c0 += vg {
			n := min(vg, D-c0)
			k := packedLen(n, b)
			if len(src)-p < 2+k {
				return errShort("value codes")
			}
			lo, hi := int(src[p]), int(src[p+1])
			if lo > hi {
				return fmt.Errorf("%w: value group bounds %d > %d", ErrCorrupt, lo, hi)
			}
			a := mn + float32(float32(lo)*u)
			z := mn + float32(float32(hi)*u)
			s := (z - a) / lv
			cs := codes[:n]
			packed := src[p+2 : p+2+k]
			p += 2 + k
			base := t*D + c0
			if 1<<b <= n {
				l := lut[:1<<b]
				for q := range l {
					l[q] = levelBits(dt, a+float32(float32(q)*s))
				}
				if es == 2 && b == 4 && n%2 == 0 {
					o := out[2*base : 2*(base+n)]
					l := lut[:16]
					for i, x := range packed[:n/2] {
						binary.LittleEndian.PutUint32(o[4*i:], l[x&15]|l[x>>4]<<16)
					}
					continue
				}
				unpackBits(cs, packed, b)
				if es == 2 {
					o := out[2*base : 2*(base+n)]
					for i, q := range cs {
						binary.LittleEndian.PutUint16(o[2*i:], uint16(l[q&uint8(len(l)-1)]))
					}
				} else {
					for i, q := range cs {
						putElem(out, base+i, es, l[q&uint8(len(l)-1)])
					}
				}
				continue
			}
			unpackBits(cs, packed, b)
			for i, q := range cs {
				putElem(out, base+i, es, levelBits(dt, a+float32(float32(q)*s)))
			}
		}
	}
	if p != len(src) {
		return fmt.Errorf("%w: %d trailing value bytes", ErrCorrupt, len(src)-p)
	}
	return nil
}

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
	ctr := sc.ctr[:0]
	if cap(ctr) < D {
		ctr = make([]int32, D)
		sc.ctr = ctr
	}
	ctr = ctr[:D]
	steps := growF32(&sc.gscale, D)
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
	syms := growU8(&sc.codes, T*D)
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

// floatKey maps a float32 (not NaN) to an int32 with the same order.
func floatKey(x float32) int32 {
	k := int32(math.Float32bits(x))
	return k ^ (k >> 31 & math.MaxInt32)
}

func keyFloat(k int32) float32 {
	return math.Float32frombits(uint32(k ^ (k >> 31 & math.MaxInt32)))
}
