package engine

import (
	"encoding/binary"
	"fmt"

	"github.com/kvtier/kvtier/codec"
)

// BlockLayout is the codec layout of one per-layer block of n tokens: fp16,
// K then V, each [kvHeads][n][headDim].
func (m *Model) BlockLayout(n int) codec.Layout {
	return codec.Layout{DType: codec.FP16, Order: codec.KVSeparate, Layers: 1,
		KVHeads: uint16(m.KVHeads), HeadDim: uint16(m.HeadDim()), Tokens: uint32(n)}
}

// BlockBytes is the size of a full per-layer block.
func (m *Model) BlockBytes() int { return int(m.BlockLayout(BlockTokens).Size()) }

// AppendBlock appends the fp16 bytes of layer l's tokens [t0, t0+n) in the
// block layout.
func (s *Session) AppendBlock(dst []byte, l, t0, n int) ([]byte, error) {
	c := s.m.Config
	if l < 0 || l >= c.Layers || t0 < 0 || n <= 0 || t0+n > s.N {
		return dst, fmt.Errorf("%w: block layer %d tokens [%d,+%d) outside the cache (%d positions)", ErrInput, l, t0, n, s.N)
	}
	hd := c.HeadDim()
	for _, src := range [2][]float32{s.K[l], s.V[l]} {
		for h := 0; h < c.KVHeads; h++ {
			for _, f := range src[(h*c.SeqLen+t0)*hd : (h*c.SeqLen+t0+n)*hd] {
				dst = binary.LittleEndian.AppendUint16(dst, codec.Float32ToHalf(f))
			}
		}
	}
	return dst, nil
}

// SetBlock writes a block's bytes (the block layout) over layer l's tokens
// [t0, t0+n); positions past N are allowed up to the model's length.
func (s *Session) SetBlock(l, t0, n int, data []byte) error {
	c := s.m.Config
	if l < 0 || l >= c.Layers || t0 < 0 || n <= 0 || t0+n > c.SeqLen {
		return fmt.Errorf("%w: block layer %d tokens [%d,+%d) outside the model", ErrInput, l, t0, n)
	}
	hd := c.HeadDim()
	if want := 2 * c.KVHeads * n * hd * 2; len(data) != want {
		return fmt.Errorf("%w: block of %d bytes, layout needs %d", ErrInput, len(data), want)
	}
	for _, dst := range [2][]float32{s.K[l], s.V[l]} {
		for h := 0; h < c.KVHeads; h++ {
			d := dst[(h*c.SeqLen+t0)*hd : (h*c.SeqLen+t0+n)*hd]
			for i := range d {
				d[i] = codec.HalfToFloat32(binary.LittleEndian.Uint16(data[2*i:]))
			}
			data = data[2*len(d):]
		}
	}
	return nil
}

// Codec is a codec mode applied to blocks before they are stored: a block
// read back is what the codec's decoder returns.
type Codec struct {
	Name string
	Opts codec.Options
	None bool // store raw fp16 (no codec)

	frame, raw []byte
}

// ParseCodec parses a codec spec ("none", "lossless", "int8", "int4+ec", ...).
func ParseCodec(spec string) (*Codec, error) {
	if spec == "" || spec == "none" || spec == "raw" {
		return &Codec{Name: "none", None: true}, nil
	}
	o, err := codec.ParseSpec(spec)
	if err != nil {
		return nil, fmt.Errorf("%w: codec %q: %w", ErrInput, spec, err)
	}
	return &Codec{Name: spec, Opts: o}, nil
}

// RoundTrip encodes and decodes a block in place and returns the frame's
// size (the bytes the block takes once encoded).
func (c *Codec) RoundTrip(l codec.Layout, block []byte) (int, error) {
	if c.None {
		return len(block), nil
	}
	var err error
	c.frame, err = codec.Encode(c.frame[:0], l, block, c.Opts)
	if err != nil {
		return 0, err
	}
	_, c.raw, err = codec.Decode(c.raw[:0], c.frame)
	if err != nil {
		return 0, err
	}
	if len(c.raw) != len(block) {
		return 0, fmt.Errorf("%w: codec returned %d bytes for %d", ErrInput, len(c.raw), len(block))
	}
	copy(block, c.raw)
	return len(c.frame), nil
}
