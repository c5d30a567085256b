package codec

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Frame format, version 1. All integers little-endian.
//
//	off len field
//	  0   4 magic "KVTF"
//	  4   1 version (1)
//	  5   1 mode (Mode)
//	  6   2 flags (reserved, 0)
//	  8  12 layout: dtype u8, order u8, layers u16, kv_heads u16, head_dim u16, tokens u32
//	        (order: 0 separate, 1 interleaved, 2 unspecified; frames written
//	        before 2 existed hold 0 or 1 and read as they always did)
//	 20   8 mode parameters (Params), meaning defined by the mode
//	 28   4 raw length: bytes the frame decodes to (must equal layout size)
//	 32   4 payload length
//	 36   4 CRC-32C (Castagnoli) of bytes [0,36) and of the payload
//	 40     payload
//
// The checksum covers the header and the payload, so a flipped bit anywhere is
// caught before the payload is interpreted.
const (
	frameMagic   = "KVTF"
	frameVersion = 1
	// HeaderLen is the length of a frame header in bytes.
	HeaderLen = 40
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Mode selects how a frame's payload encodes the block.
type Mode uint8

// Codec modes. Raw stores the bytes as they are; the others are implemented in
// modes.go.
const (
	Raw Mode = iota
	Lossless
	Int8
	Int4
	Int3
	Int2
	numModes
)

var modeNames = [numModes]string{"raw", "lossless", "int8", "int4", "int3", "int2"}

func (m Mode) String() string {
	if m < numModes {
		return modeNames[m]
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode parses the names printed by Mode.String.
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if n == s {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("%w: unknown mode %q", ErrMode, s)
}

// Params are the mode parameters carried in the frame header. Their meaning
// is defined by the mode; Raw and Lossless ignore them.
type Params [8]byte

// Header is the decoded fixed part of a frame.
type Header struct {
	Mode       Mode
	Layout     Layout
	Params     Params
	RawLen     uint32
	PayloadLen uint32
	Checksum   uint32
}

// FrameLen returns the full length of the frame this header starts.
func (h Header) FrameLen() int { return HeaderLen + int(h.PayloadLen) }

func putHeader(b []byte, h Header) {
	copy(b[0:4], frameMagic)
	b[4] = frameVersion
	b[5] = byte(h.Mode)
	binary.LittleEndian.PutUint16(b[6:8], 0)
	b[8] = byte(h.Layout.DType)
	b[9] = byte(h.Layout.Order)
	binary.LittleEndian.PutUint16(b[10:12], h.Layout.Layers)
	binary.LittleEndian.PutUint16(b[12:14], h.Layout.KVHeads)
	binary.LittleEndian.PutUint16(b[14:16], h.Layout.HeadDim)
	binary.LittleEndian.PutUint32(b[16:20], h.Layout.Tokens)
	copy(b[20:28], h.Params[:])
	binary.LittleEndian.PutUint32(b[28:32], h.RawLen)
	binary.LittleEndian.PutUint32(b[32:36], h.PayloadLen)
	binary.LittleEndian.PutUint32(b[36:40], h.Checksum)
}

// ParseHeader decodes and validates a frame header without checking the
// payload's checksum. Use it to learn the layout and sizes before Decode.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderLen {
		return h, fmt.Errorf("%w: %d bytes is shorter than a header", ErrCorrupt, len(b))
	}
	if string(b[0:4]) != frameMagic {
		return h, fmt.Errorf("%w: bad magic %q", ErrCorrupt, b[0:4])
	}
	if b[4] != frameVersion {
		return h, fmt.Errorf("%w: unsupported frame version %d", ErrCorrupt, b[4])
	}
	h.Mode = Mode(b[5])
	if h.Mode >= numModes {
		return h, fmt.Errorf("%w: unknown mode %d", ErrCorrupt, b[5])
	}
	h.Layout = Layout{
		DType:   DType(b[8]),
		Order:   Order(b[9]),
		Layers:  binary.LittleEndian.Uint16(b[10:12]),
		KVHeads: binary.LittleEndian.Uint16(b[12:14]),
		HeadDim: binary.LittleEndian.Uint16(b[14:16]),
		Tokens:  binary.LittleEndian.Uint32(b[16:20]),
	}
	copy(h.Params[:], b[20:28])
	h.RawLen = binary.LittleEndian.Uint32(b[28:32])
	h.PayloadLen = binary.LittleEndian.Uint32(b[32:36])
	h.Checksum = binary.LittleEndian.Uint32(b[36:40])
	if err := h.Layout.Validate(); err != nil {
		return h, fmt.Errorf("%w: header layout: %v", ErrCorrupt, err)
	}
	if int64(h.RawLen) != h.Layout.Size() {
		return h, fmt.Errorf("%w: raw length %d does not match layout size %d", ErrCorrupt, h.RawLen, h.Layout.Size())
	}
	return h, nil
}

func frameChecksum(header, payload []byte) uint32 {
	c := crc32.Update(0, castagnoli, header[:36])
	return crc32.Update(c, castagnoli, payload)
}

// Options configure Encode. The zero value of every field but Mode is the
// documented default; Decode needs none of them (the frame records what it
// needs).
type Options struct {
	Mode Mode

	// The fields below apply to the quantized modes (int8, int4, int3, int2).

	// KeyGroup is the number of tokens per key group (keys are quantized per
	// channel over groups of tokens). 0 means DefaultKeyGroup (DefaultKeyGroupInt8
	// for int8); it is capped at the block's tokens.
	KeyGroup int
	// ValueGroup is the number of channels per value group (values are
	// quantized per token over groups of channels). 0 means DefaultValueGroup;
	// it is capped at head_dim.
	ValueGroup int
	// UniformKeyBits gives every key channel the mode's bits. By default the
	// encoder moves bits from small to large key channels, where queries are
	// large too (see quant.go); the budget per block stays the mode's bits.
	UniformKeyBits bool
	// Entropy replaces the min/max group codes with a uniform quantizer of step
	// 4·2^−bits·RMS and a rANS entropy coder: about 1 bit per value smaller at
	// the same error, but encode and decode run at ~0.1 GB/s instead of
	// > 1 GB/s. A unit that would not shrink falls back to fixed-rate codes.
	Entropy bool
	// LZ4 compresses each unit's packed codes with lz4 and keeps the result
	// where it saves at least 1/32 of the unit (it rarely does on real KV).
	LZ4 bool
	// Clip narrows each group's range when that lowers its squared error
	// (int4 and below; encode is ~30× slower, decode unchanged).
	Clip bool
	// BoostLayers gives one more bit to model layers 0 … BoostLayers−1 (early
	// layers matter more to the model's output). Layer is the model layer of
	// the block's first layer (per-layer blocks hold one layer; all-layer
	// blocks start at 0). The frame records which of its layers are boosted.
	BoostLayers int
	Layer       int
	// Outliers is the fraction of each unit's values (0 … MaxOutliers) that
	// may be taken out of their quantization groups and stored apart (≈ 2
	// bytes each), at most one per group, so that the group's range no longer
	// spans them (quant_out.go). 0 disables it. On the fixtures 1% lowers the
	// int3/int2 attention error by 10–15% for 4–6% of the ratio, a better
	// trade than smaller key groups; encode is ~7× slower (≈ 0.2 GB/s).
	Outliers float64
	// Parallelism > 1 encodes the block's (layer, head, K/V) units on that many
	// goroutines. 0 or 1 encodes on the caller's goroutine without allocating.
	Parallelism int
}

// Encode appends a frame holding raw, a block described by l, to dst and
// returns the extended slice. It allocates only when dst lacks capacity; use
// MaxFrameLen to size dst.
func Encode(dst []byte, l Layout, raw []byte, opts Options) ([]byte, error) {
	if err := l.CheckLen(len(raw)); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = grow(dst, HeaderLen)
	h := Header{Layout: l, RawLen: uint32(len(raw))}
	var err error
	dst, h.Mode, h.Params, err = encodePayload(dst, l, raw, opts)
	if err != nil {
		return dst[:start], err
	}
	frame := dst[start:]
	payload := frame[HeaderLen:]
	h.PayloadLen = uint32(len(payload))
	putHeader(frame, h)
	h.Checksum = frameChecksum(frame, payload)
	binary.LittleEndian.PutUint32(frame[36:40], h.Checksum)
	return dst, nil
}

// Decode verifies frame's checksum and appends the block it holds to dst,
// returning the block's layout and the extended slice. Damaged or malformed
// input returns an error wrapping ErrCorrupt; Decode never panics on hostile
// bytes and never allocates more than the header's (validated) raw length.
// Trailing bytes after the frame are an error.
func Decode(dst []byte, frame []byte) (Layout, []byte, error) {
	return DecodeParallel(dst, frame, 1)
}

// DecodeParallel is Decode on up to parallelism goroutines (quantized modes
// split the block by layer, head and K/V). parallelism ≤ 1 is Decode.
func DecodeParallel(dst []byte, frame []byte, parallelism int) (Layout, []byte, error) {
	h, err := parseFrame(frame)
	if err != nil {
		return Layout{}, dst, err
	}
	if h.Mode == Raw {
		return decodeRaw(dst, h, frame)
	}
	payload := frame[HeaderLen:]
	if err := checksumErr(frameChecksum(frame, payload), h.Checksum); err != nil {
		return Layout{}, dst, err
	}
	start := len(dst)
	dst, err = decodePayload(dst, h, payload, parallelism)
	if err != nil {
		return Layout{}, dst[:start], err
	}
	if len(dst)-start != int(h.RawLen) {
		return Layout{}, dst[:start], fmt.Errorf("%w: decoded %d bytes, header says %d", ErrCorrupt, len(dst)-start, h.RawLen)
	}
	return h.Layout, dst, nil
}

// rawChunk is how much of a raw payload decodeRaw checksums and then copies
// at a time: small enough to still be in the CPU's caches for the copy.
const rawChunk = 32 << 10

// decodeRaw decodes a raw frame that parseFrame accepted with header h: it
// checksums and copies the payload a chunk at a time, so the bytes are read
// from memory once, not once for the checksum and again for the copy (a
// frame just read from disk is in memory, not in the caches). On a mismatch
// it returns dst as it was, and the error Verify would.
func decodeRaw(dst []byte, h Header, frame []byte) (Layout, []byte, error) {
	payload := frame[HeaderLen:]
	if len(payload) != int(h.RawLen) {
		return Layout{}, dst, fmt.Errorf("%w: raw payload is %d bytes, want %d", ErrCorrupt, len(payload), h.RawLen)
	}
	start := len(dst)
	c := crc32.Update(0, castagnoli, frame[:36])
	for p := payload; len(p) > 0; {
		n := min(len(p), rawChunk)
		c = crc32.Update(c, castagnoli, p[:n])
		dst = append(dst, p[:n]...)
		p = p[n:]
	}
	if err := checksumErr(c, h.Checksum); err != nil {
		return Layout{}, dst[:start], err
	}
	return h.Layout, dst, nil
}

// Verify checks that frame is one whole frame whose checksum matches,
// without decoding it, and returns its header. Errors wrap ErrCorrupt.
func Verify(frame []byte) (Header, error) {
	h, err := parseFrame(frame)
	if err == nil {
		err = checksumErr(frameChecksum(frame, frame[HeaderLen:]), h.Checksum)
	}
	return h, err
}

// parseFrame is ParseHeader plus the check that frame is exactly the frame
// its header describes, no shorter and no longer.
func parseFrame(frame []byte) (Header, error) {
	h, err := ParseHeader(frame)
	if err == nil && len(frame) != h.FrameLen() {
		err = fmt.Errorf("%w: frame is %d bytes, header says %d", ErrCorrupt, len(frame), h.FrameLen())
	}
	return h, err
}

// checksumErr reports a frame whose computed checksum got differs from the
// header's want; nil when they match.
func checksumErr(got, want uint32) error {
	if got != want {
		return fmt.Errorf("%w: checksum %08x, header says %08x", ErrCorrupt, got, want)
	}
	return nil
}

// grow extends b by n bytes, reallocating only when its capacity is short.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, 2*cap(b)+n)
	copy(nb, b)
	return nb
}
