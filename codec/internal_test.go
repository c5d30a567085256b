package codec

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"testing"
)

// float32ToHalfRef is a straightforward reference conversion (round to
// nearest even) to check the fast one against.
func float32ToHalfRef(f float32) uint16 {
	if f != f {
		return 0x7e00
	}
	sign := uint16(0)
	if math.Signbit(float64(f)) {
		sign = 0x8000
		f = -f
	}
	// Find the nearest of the fp16 values by bisection over the bit patterns.
	lo, hi := uint16(0), uint16(0x7c00)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if halfToFloat32Slow(mid) <= f {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	if lo == 0x7c00 {
		return sign | 0x7c00
	}
	a, b := float64(halfToFloat32Slow(lo)), float64(halfToFloat32Slow(lo+1))
	if lo+1 == 0x7c00 {
		b = 65536 // as if the exponent went on: ties at 65520 round to even (up, to inf)
	}
	d1, d2 := float64(f)-a, b-float64(f)
	switch {
	case d1 < d2:
		return sign | lo
	case d2 < d1:
		return sign | (lo + 1)
	case lo&1 == 0:
		return sign | lo
	}
	return sign | (lo + 1)
}

func TestHalfConversions(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		a, b := HalfToFloat32(h), halfToFloat32Slow(h)
		if math.Float32bits(a) != math.Float32bits(b) && !(a != a && b != b) {
			t.Fatalf("HalfToFloat32(%04x) = %v, want %v", h, a, b)
		}
		if a == a && Float32ToHalf(a) != h {
			t.Fatalf("Float32ToHalf(HalfToFloat32(%04x)) = %04x", h, Float32ToHalf(a))
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	special := []float32{0, 65504, 65519.99, 65520, 1e-8, 2.98e-8, 5.96e-8, 6.1e-5, -6.1e-5, float32(math.Inf(1)), 1e38}
	for i := 0; i < 200000; i++ {
		var f float32
		if i < len(special) {
			f = special[i]
		} else {
			f = math.Float32frombits(rng.Uint32() & 0xc7ffffff) // mostly within fp16 range
		}
		if got, want := Float32ToHalf(f), float32ToHalfRef(f); got != want {
			t.Fatalf("Float32ToHalf(%g) = %04x, want %04x", f, got, want)
		}
	}
	for _, c := range []struct {
		f    float32
		want uint16
	}{{1, 0x3f80}, {-2, 0xc000}, {1.00390625, 0x3f80}, {1.01171875, 0x3f82}} {
		if got := Float32ToBFloat16(c.f); got != c.want {
			t.Errorf("Float32ToBFloat16(%v) = %04x, want %04x", c.f, got, c.want)
		}
	}
	if f := BFloat16ToFloat32(0x4049); f != 3.140625 {
		t.Errorf("BFloat16ToFloat32(0x4049) = %v", f)
	}
}

func TestShuffles(t *testing.T) {
	if got := transpose8(0x0000000000000001); got != 0x0000000000000001 {
		t.Fatalf("transpose8(1) = %x", got)
	}
	if got := transpose8(0x00000000000000ff); got != 0x0101010101010101 {
		t.Fatalf("transpose8(row 0 full) = %x, want column 0 full", got)
	}
	for _, es := range []int{1, 2, 4} {
		for _, n := range []int{0, 1, 7, 8, 9, 64, 1001} {
			src := make([]byte, n*es)
			for i := range src {
				src[i] = byte(i*7 + i/5)
			}
			sh, back := make([]byte, len(src)), make([]byte, len(src))
			bitShuffle(sh, src, es)
			bitUnshuffle(back, sh, es)
			if !bytes.Equal(back, src) {
				t.Fatalf("bit shuffle es=%d n=%d does not round-trip", es, n)
			}
			byteShuffle(sh, src, es)
			byteUnshuffle(back, sh, es)
			if !bytes.Equal(back, src) {
				t.Fatalf("byte shuffle es=%d n=%d does not round-trip", es, n)
			}
		}
	}
}

func TestPackBits(t *testing.T) {
	for b := 1; b <= 8; b++ {
		for _, n := range []int{1, 3, 8, 31, 32, 33} {
			codes := make([]uint8, n)
			for i := range codes {
				codes[i] = uint8(i*5+1) & uint8(1<<b-1)
			}
			p := packBits(nil, codes, b)
			if len(p) != packedLen(n, b) {
				t.Fatalf("b=%d n=%d: %d bytes, want %d", b, n, len(p), packedLen(n, b))
			}
			got := make([]uint8, n)
			unpackBits(got, p, b)
			if !bytes.Equal(got, codes) {
				t.Fatalf("b=%d n=%d: %v, want %v", b, n, got, codes)
			}
		}
	}
}

func TestRANS(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for name, gen := range map[string]func() uint8{
		"one symbol": func() uint8 { return 9 },
		"skewed":     func() uint8 { return uint8(128 + int(rng.NormFloat64()*3)) },
		"uniform":    func() uint8 { return uint8(rng.Uint32()) },
	} {
		t.Run(name, func(t *testing.T) {
			syms := make([]uint8, 5000)
			var counts [256]uint32
			for i := range syms {
				syms[i] = gen()
				counts[syms[i]]++
			}
			var m ransModel
			m.build(&counts, len(syms))
			table := m.appendTable(nil)
			stream := ransEncode(make([]byte, 4+2*len(syms)), syms, &m)
			if stream == nil {
				t.Fatal("buffer too small")
			}
			var d ransModel
			if _, err := d.readTable(table); err != nil {
				t.Fatal(err)
			}
			got := make([]uint8, len(syms))
			if err := ransDecode(got, stream, &d); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, syms) {
				t.Fatal("rANS round trip differs")
			}
			if len(stream) > 4+2*len(syms) {
				t.Fatalf("stream %d bytes", len(stream))
			}
			// A damaged stream is an error or different symbols, never a panic.
			stream[len(stream)/2] ^= 0x55
			_ = ransDecode(got, stream, &d)
		})
	}
}

// withChecksum recomputes a frame's checksum so that fuzzing reaches the
// payload parsers (hostile input may carry a valid checksum).
func withChecksum(frame []byte) []byte {
	if len(frame) < HeaderLen {
		return frame
	}
	binary.LittleEndian.PutUint32(frame[32:36], uint32(len(frame)-HeaderLen))
	binary.LittleEndian.PutUint32(frame[36:40], frameChecksum(frame, frame[HeaderLen:]))
	return frame
}

func seedFrames(f *testing.F) {
	l := Layout{DType: FP16, Layers: 1, KVHeads: 2, HeadDim: 8, Tokens: 40}
	raw := make([]byte, l.Size())
	for i := range raw {
		raw[i] = byte(i * 37 % 61)
	}
	for _, s := range []string{"raw", "lossless", "int8", "int4", "int3", "int2", "int4+ec", "int3+ec", "int4+lz4"} {
		o, _ := ParseSpec(s)
		fr, err := Encode(nil, l, raw, o)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(fr)
	}
	// A real KV block, one layer of 32 tokens from a fixture.
	if data, err := readFixtureSlice(); err == nil {
		lf := Layout{DType: FP16, Layers: 1, KVHeads: 1, HeadDim: 32, Tokens: 32}
		for _, s := range []string{"lossless", "int4", "int3+ec"} {
			o, _ := ParseSpec(s)
			if fr, err := Encode(nil, lf, data, o); err == nil {
				f.Add(fr)
			}
		}
	}
}

// FuzzDecodePayload fuzzes the payload decoders behind a valid checksum.
func FuzzDecodePayload(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, frame []byte) {
		frame = withChecksum(bytes.Clone(frame))
		h, err := ParseHeader(frame)
		if err != nil || h.RawLen > 1<<22 {
			return // keep each run small
		}
		_, out, err := Decode(nil, frame)
		if err != nil {
			if !IsCorrupt(err) && !isMode(err) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if len(out) != int(h.RawLen) {
			t.Fatalf("decoded %d bytes, header says %d", len(out), h.RawLen)
		}
	})
}

func isMode(err error) bool {
	return err != nil && bytes.Contains([]byte(err.Error()), []byte("unsupported mode"))
}

func readFixtureSlice() ([]byte, error) {
	data, err := os.ReadFile("testdata/kv/kv-p00.bin")
	if err != nil {
		return nil, err
	}
	// k_post_rope layer 0 head 0 tokens 0..31, then v (offsets from the sidecar).
	const kOff, vOff, n = 368640, 737280, 32 * 32 * 2
	return append(append([]byte{}, data[kOff:kOff+n]...), data[vOff:vOff+n]...), nil
}
