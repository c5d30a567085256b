package codec

import "math"

// Element conversions between the block dtypes and float32.
//
// float32 → fp16 and bf16 round to nearest even. NaN stays NaN and overflow becomes
// infinity, as a hardware conversion does.

func halfToFloat32Slow(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0:
		if man == 0 {
			return math.Float32frombits(sign)
		}
		// subnormal: man * 2^-24
		f := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}

// HalfToFloat32 converts an IEEE 754 binary16 value to float32 (exactly).
func HalfToFloat32(h uint16) float32 {
	// Shift exponent and mantissa into place and rescale by 2^112: exact for
	// normal and subnormal values; infinities and NaNs get their exponent set.
	const magic = 0x77800000 // 2^112
	o := math.Float32frombits(uint32(h&0x7fff)<<13) * math.Float32frombits(magic)
	b := math.Float32bits(o)
	if h&0x7c00 == 0x7c00 {
		b = 0x7f800000 | uint32(h&0x3ff)<<13
	}
	return math.Float32frombits(b | uint32(h&0x8000)<<16)
}

// Float32ToHalf converts f to IEEE 754 binary16, rounding to nearest even.
// NaN stays NaN (quiet), overflow becomes infinity.
func Float32ToHalf(f float32) uint16 {
	// After F. Giesen's float_to_half_fast3_rtne.
	const (
		f32Inf      = 255 << 23
		f16Max      = (127 + 16) << 23
		denormMagic = ((127 - 15) + (23 - 10) + 1) << 23
	)
	x := math.Float32bits(f)
	sign := x & 0x80000000
	x ^= sign
	var o uint32
	switch {
	case x >= f16Max: // overflow, inf or NaN
		o = 0x7c00
		if x > f32Inf {
			o = 0x7e00
		}
	case x < 113<<23: // result is subnormal or zero
		o = math.Float32bits(math.Float32frombits(x)+math.Float32frombits(denormMagic)) - denormMagic
	default:
		odd := (x >> 13) & 1
		x += 0xfff + odd
		x -= (127 - 15) << 23
		o = x >> 13
	}
	return uint16(o | sign>>16)
}

// BFloat16ToFloat32 converts a bfloat16 value to float32 (exactly).
func BFloat16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// Float32ToBFloat16 converts f to bfloat16, rounding to nearest even.
func Float32ToBFloat16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN: keep it quiet
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}
