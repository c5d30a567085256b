package codec

import (
	"fmt"
	"math"
)

// DefaultMode is the mode a namespace gets unless configured otherwise.
const DefaultMode = Lossless

// MaxFrameLen returns an upper bound on the length of a frame that Encode
// produces for a block with layout l in mode m, whatever the options and the
// data (lossless on incompressible data included). It returns 0 for an invalid
// layout or mode.
func MaxFrameLen(l Layout, m Mode) int {
	if l.Validate() != nil || m >= numModes {
		return 0
	}
	size := int(l.Size())
	switch {
	case m == Raw:
		return HeaderLen + size
	case m == Lossless || l.DType == FP8:
		return HeaderLen + losslessMaxPayload(size)
	}
	return HeaderLen + quantMaxPayload(l, modeBits(m), 1)
}

// encodePayload appends the payload for opts.Mode and returns the mode the
// frame records (a quantized mode on an fp8 block is stored losslessly) and
// the mode's header params.
func encodePayload(dst []byte, l Layout, raw []byte, opts Options) ([]byte, Mode, Params, error) {
	m := opts.Mode
	switch {
	case m == Raw:
		return append(dst, raw...), Raw, Params{}, nil
	case m == Lossless || (m.Quantized() && l.DType == FP8):
		sc := getScratch()
		defer putScratch(sc)
		out, err := encodeLossless(dst, l, raw, sc)
		return out, Lossless, Params{}, err
	case m.Quantized():
		qp, err := opts.quantParams(l)
		if err != nil {
			return dst, m, Params{}, err
		}
		out, err := encodeQuant(dst, l, raw, qp, opts)
		return out, m, qp.params(), err
	}
	return dst, m, Params{}, fmt.Errorf("%w: %v", ErrMode, m)
}

// decodePayload appends the decoded block to dst. Raw frames do not come
// here: DecodeParallel hands them to decodeRaw.
func decodePayload(dst []byte, h Header, payload []byte, parallelism int) ([]byte, error) {
	switch {
	case h.Mode == Lossless:
		sc := getScratch()
		defer putScratch(sc)
		return decodeLossless(dst, h, payload, sc)
	case h.Mode.Quantized():
		if h.Layout.DType == FP8 {
			return dst, fmt.Errorf("%w: %v frame holds an fp8 block", ErrCorrupt, h.Mode)
		}
		qp, err := parseQuantParams(h.Params, h.Mode, h.Layout)
		if err != nil {
			return dst, err
		}
		return decodeQuant(dst, h, qp, payload, parallelism)
	}
	return dst, fmt.Errorf("%w: %v", ErrMode, h.Mode)
}

// Quantized reports whether m is one of the lossy integer modes.
func (m Mode) Quantized() bool { return m >= Int8 && m < numModes }

// Bits returns the nominal code width of a quantized mode (8, 4, 3 or 2), 0 otherwise.
func (m Mode) Bits() int { return modeBits(m) }

func modeBits(m Mode) int {
	switch m {
	case Int8:
		return 8
	case Int4:
		return 4
	case Int3:
		return 3
	case Int2:
		return 2
	}
	return 0
}

// halfFloor returns the largest fp16 value ≤ f (f finite, |f| ≤ 65504).
func halfFloor(f float32) float32 {
	h := Float32ToHalf(f)
	for HalfToFloat32(h) > f {
		h = nextDown16(h)
	}
	return HalfToFloat32(h)
}

// nextDown16 steps h, an fp16 or bf16 bit pattern (both sign and
// magnitude), to the next smaller value; +0 steps past −0 to 0x8001.
func nextDown16(h uint16) uint16 {
	switch {
	case h == 0:
		return 0x8001
	case h&0x8000 != 0:
		return h + 1
	}
	return h - 1
}

func isFinite32(f float32) bool { return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0) }
