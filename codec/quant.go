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
// heads then its V heads. A block whose order is KVUnspecified is quantized
// as KVSeparate (Order.Effective); its frame still records KVUnspecified. The
// payload is
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
// With flagOutliers a unitPacked body (also inside lz4) starts with the
// outlier section of quant_out.go; the rest is unchanged.
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
//
// A decoder rejects flags it does not know (ErrCorrupt) rather than misread
// the payload.
const (
	flagAlloc    = 1 << 0
	flagEntropy  = 1 << 1
	flagLZ4      = 1 << 2
	flagClip     = 1 << 3
	flagOutliers = 1 << 4 // packed unit bodies start with an outlier section (quant_out.go)
	knownFlags   = flagAlloc | flagEntropy | flagLZ4 | flagClip | flagOutliers
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
	out          float64 // outlier fraction (encoder only; the frame has flagOutliers)
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
	if !(o.Outliers >= 0 && o.Outliers <= MaxOutliers) {
		return q, fmt.Errorf("%w: outlier fraction %v not in [0, %v]", ErrMode, o.Outliers, MaxOutliers)
	}
	if o.Outliers > 0 {
		q.flags |= flagOutliers
		q.out = o.Outliers
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
	case q.flags&^knownFlags != 0:
		return q, fmt.Errorf("%w: unknown quantizer flags %#x", ErrCorrupt, q.flags)
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
	// simdK, simdV: the unit's keys, values run the vector kernels (fp16,
	// head_dim and the value group multiples of 8, and a CPU that has them).
	simdK, simdV bool
}

// simdOn enables the vector kernels where the CPU has them (tests turn it
// off to check them against the Go loops).
var simdOn = hasSIMD

func newGeom(l Layout, q quantParams) qgeom {
	g := qgeom{l: l, dt: l.DType, es: l.DType.Size(), T: int(l.Tokens), D: int(l.HeadDim),
		H: int(l.KVHeads), L: l.NumLayers(), q: q}
	g.hs = g.es
	g.units = 2 * g.L * g.H
	g.unitBytes = g.T * g.D * g.es
	g.simdK = simdOn && g.dt == FP16 && g.D%8 == 0
	g.simdV = g.simdK && q.vg%8 == 0
	return g
}

// unit returns whether unit i holds values and its layer within the block.
func (g *qgeom) unit(i int) (isV bool, layer int) {
	if g.l.Order.Effective() == KVInterleaved {
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
	return g.packedBound(isV, b) + g.outBound()
}

// outBound bounds a unit's outlier section: a count, the Rice parameter,
// then at most MaxOutliers·T·D entries of at most 33 (a gap coded with the
// parameter that makes its unary part one bit) + 16 + 8 bits.
func (g *qgeom) outBound() int {
	if g.q.flags&flagOutliers == 0 {
		return 0
	}
	return 6 + 8*(int(MaxOutliers*float64(g.T*g.D))+1)
}

func (g *qgeom) packedBound(isV bool, b int) int {
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
	q.flags = flagOutliers // the bound holds with or without outliers
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
		if simdOn && len(f)%8 == 0 {
			if !f16to32(f, src) {
				return
			}
			break // NaN or infinities: sanitize below
		}
		// One table lookup per element; the table has NaN and infinities
		// sanitized already.
		lut := f16LUT()
		src = src[:2*len(f)]
		for i := range f {
			f[i] = lut[binary.LittleEndian.Uint16(src[2*i:])]
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
			h = nextDown16(h)
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
	f := resize(&sc.f, g.T*g.D)
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
		cbuf := resize(&sc.buf, lz4.CompressBlockBound(len(body)))
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
		buf := resize(&sc.buf, n)
		k, err := lz4.UncompressBlock(body[4:], buf)
		if err != nil || k != n {
			return fmt.Errorf("%w: unit %d: lz4 (%d of %d bytes): %v", ErrCorrupt, i, k, n, err)
		}
		body = buf
	case unitPacked:
	default:
		return fmt.Errorf("%w: unit %d: method %d", ErrCorrupt, i, method)
	}
	var outs []outEntry
	if g.q.flags&flagOutliers != 0 {
		var k int
		var err error
		if outs, k, err = g.parseUnitOutliers(body, isV, sc); err != nil {
			return fmt.Errorf("unit %d: %w", i, err)
		}
		body = body[k:]
	}
	var err error
	if isV {
		err = g.decodeV(out, body, b, outs, sc)
	} else {
		err = g.decodeK(out, body, b, outs, sc)
	}
	if err != nil {
		return fmt.Errorf("unit %d: %w", i, err)
	}
	return nil
}

// parseUnitOutliers reads the outlier section at the start of a packed body.
func (g *qgeom) parseUnitOutliers(body []byte, isV bool, sc *scratch) ([]outEntry, int, error) {
	T, D, kg, vg := g.T, g.D, g.q.kg, g.q.vg
	if isV {
		nv := (D + vg - 1) / vg
		return parseOutliers(body, T*nv, posBits(vg), func(k int) int { return min(vg, D-k%nv*vg) }, reserve(&sc.outs, T*nv))
	}
	ng := (T + kg - 1) / kg
	return parseOutliers(body, ng*D, posBits(kg), func(k int) int { return min(kg, T-k/D*kg) }, reserve(&sc.outs, ng*D))
}

func errShort(what string) error { return fmt.Errorf("%w: %s: payload too short", ErrCorrupt, what) }

// floatKey maps a float32 (not NaN) to an int32 with the same order.
func floatKey(x float32) int32 {
	k := int32(math.Float32bits(x))
	return k ^ (k >> 31 & math.MaxInt32)
}

func keyFloat(k int32) float32 {
	return math.Float32frombits(uint32(k ^ (k >> 31 & math.MaxInt32)))
}
