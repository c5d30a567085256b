package codec

import (
	"encoding/binary"
	"math"
	"sync"
)

// Bit packing of quantized codes. Codes of b bits are stored LSB first:
// code i occupies bits [i·b, (i+1)·b) of the little-endian byte string, and
// the last byte is padded with zeros. The hot paths work on 8 codes at a
// time held one per byte lane of a uint64 (SWAR): lanes8 ↔ b bytes.

// swar holds the shifts and masks that squeeze 8 byte lanes into 8·b bits
// (and back) for one code width b in 1..8.
type swar struct {
	b          uint   // code width
	n          int    // bytes per 8 codes (= b)
	full       uint64 // low 8·b bits
	s1, s2, s3 uint   // shifts of the three merge steps
	m1, m2, m3 uint64 // masks of the moved halves
	k1, k2, k3 uint64 // masks of the halves that stay
	u1, u2, u3 uint64 // unpack: masks of the moved halves
}

var swars = func() (t [9]swar) {
	rep := func(x uint64, w uint) uint64 { // x replicated in every w-bit lane
		var r uint64
		for s := uint(0); s < 64; s += w {
			r |= x << s
		}
		return r
	}
	for b := uint(1); b <= 8; b++ {
		low := func(n uint) uint64 { return 1<<n - 1 }
		t[b] = swar{
			b: b, n: int(b), full: 1<<(8*b) - 1,
			s1: 8 - b, s2: 16 - 2*b, s3: 32 - 4*b,
			k1: rep(low(b), 16), m1: rep(low(b)<<b, 16),
			k2: rep(low(2*b), 32), m2: rep(low(2*b)<<(2*b), 32),
			k3: low(4 * b), m3: low(4*b) << (4 * b),
			u1: rep(low(b)<<8, 16), u2: rep(low(2*b)<<16, 32), u3: low(4*b) << 32,
		}
	}
	return t
}()

// pack squeezes 8 codes, one per byte lane of v (each < 2^b), into the low
// 8·b bits.
func (w *swar) pack(v uint64) uint64 {
	// (Shift counts masked to 63 so that no out-of-range check is emitted.)
	v = v&w.k1 | v>>(w.s1&63)&w.m1
	v = v&w.k2 | v>>(w.s2&63)&w.m2
	return v&w.k3 | v>>(w.s3&63)&w.m3
}

// unpack spreads the 8 codes in the low 8·b bits of v over the byte lanes.
func (w *swar) unpack(v uint64) uint64 {
	v = v&w.k3 | v<<(w.s3&63)&w.u3
	v = v&w.k2 | v<<(w.s2&63)&w.u2
	return v&w.k1 | v<<(w.s1&63)&w.u1
}

// load8 reads up to 8 bytes of src at p as a little-endian uint64 (missing
// bytes read as zero).
func load8(src []byte, p int) uint64 {
	if p+8 <= len(src) {
		return binary.LittleEndian.Uint64(src[p:])
	}
	var v uint64
	for i := 0; p+i < len(src) && i < 8; i++ {
		v |= uint64(src[p+i]) << (8 * i)
	}
	return v
}

// store8 writes the low n bytes of v at buf[p:] (8 bytes when there is room:
// the extra ones are overwritten by the next store or lie past the result).
func store8(buf []byte, p int, v uint64, n int) {
	if p+8 <= len(buf) {
		binary.LittleEndian.PutUint64(buf[p:], v)
		return
	}
	for i := 0; i < n; i++ {
		buf[p+i] = byte(v >> (8 * i))
	}
}

func packedLen(n, b int) int { return (n*b + 7) / 8 }

// --- fp16 conversions for the hot loops ---------------------------------------

// f16LUT returns a table of every fp16 bit pattern's float32 value, with
// NaN mapped to 0 and infinities clamped to ±clampMag (what the quantizer
// wants). Built on first use (256 KiB; the vector kernels do not need it).
var f16LUT = sync.OnceValue(func() *[1 << 16]float32 {
	t := new([1 << 16]float32)
	for i := range t {
		t[i] = sanitize(HalfToFloat32(uint16(i)))
	}
	return t
})

// f32ToF16 is Float32ToHalf with the normal-range case inlined.
func f32ToF16(f float32) uint16 {
	x := math.Float32bits(f)
	a := x & 0x7fffffff
	if a-113<<23 >= (143-113)<<23 { // zero, subnormal, overflow, inf, NaN
		return Float32ToHalf(f)
	}
	a += 0xfff + (a>>13)&1 - (127-15)<<23
	return uint16(a>>13) | uint16(x>>16)&0x8000
}
