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
	for _, s := range []string{"raw", "lossless", "int8", "int4", "int3", "int2", "int4+ec", "int3+ec", "int4+lz4", "int3+out=0.05", "int2+lz4+out=0.06"} {
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
		for _, s := range []string{"lossless", "int4", "int3+ec", "int2+out=0.05"} {
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

// TestSIMDMatchesGo checks that the vector kernels produce the same frames
// and the same decoded bytes as the Go loops, bit for bit.
func TestSIMDMatchesGo(t *testing.T) {
	if !hasSIMD {
		t.Skip("no AVX2/F16C on this CPU (or built with purego)")
	}
	defer func() { simdOn = hasSIMD }()
	rng := rand.New(rand.NewPCG(5, 6))
	type tcase struct {
		l    Layout
		opts Options
	}
	var cases []tcase
	for _, sh := range [][3]int{{8, 8, 1}, {32, 40, 2}, {64, 33, 1}, {40, 100, 1}, {128, 17, 2}, {16, 3, 1}} {
		for _, o := range []Order{KVSeparate, KVInterleaved} {
			l := Layout{DType: FP16, Order: o, Layers: uint16(sh[2]), KVHeads: 2, HeadDim: uint16(sh[0]), Tokens: uint32(sh[1])}
			for _, spec := range []string{"int8", "int4", "int3", "int2", "int4+clip", "int2+uniform", "int3+clip+uniform", "int3+out", "int2+clip+out=0.05"} {
				opts, err := ParseSpec(spec)
				if err != nil {
					t.Fatal(err)
				}
				cases = append(cases, tcase{l, opts})
				opts.KeyGroup, opts.ValueGroup, opts.BoostLayers = 8, 24, 1 // uneven value groups
				cases = append(cases, tcase{l, opts})
			}
		}
	}
	for _, c := range cases {
		raw := make([]byte, c.l.Size())
		for i := 0; i < len(raw)/2; i++ {
			x := rng.NormFloat64() * float64(1+i%7)
			if i%53 == 0 {
				x *= 1e-6 // subnormal fp16
			}
			binary.LittleEndian.PutUint16(raw[2*i:], Float32ToHalf(float32(x)))
		}
		binary.LittleEndian.PutUint16(raw[2*(len(raw)/4):], 0x7c00) // +Inf
		binary.LittleEndian.PutUint16(raw[2:], 0x7e00)              // NaN
		var frames [2][]byte
		for k, on := range []bool{false, true} {
			simdOn = on
			fr, err := Encode(nil, c.l, raw, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			frames[k] = fr
		}
		if !bytes.Equal(frames[0], frames[1]) {
			t.Fatalf("%v %s kg=%d vg=%d: SIMD frame differs from Go", c.l, c.opts.Spec(), c.opts.KeyGroup, c.opts.ValueGroup)
		}
		var outs [2][]byte
		for k, on := range []bool{false, true} {
			simdOn = on
			_, out, err := Decode(nil, frames[0])
			if err != nil {
				t.Fatal(err)
			}
			outs[k] = out
		}
		if !bytes.Equal(outs[0], outs[1]) {
			t.Fatalf("%v %s: SIMD decode differs from Go", c.l, c.opts.Spec())
		}
	}
}

func TestTransposeKeyCodes(t *testing.T) {
	for _, D := range []int{8, 24} {
		for _, n := range []int{1, 8, 13, 32} {
			n8 := (n + 7) &^ 7
			bits := make([]uint8, D)
			codes := make([]byte, n8*D)
			for c := range bits {
				bits[c] = uint8(1 + c%8)
				for i := 0; i < n; i++ {
					codes[i*D+c] = uint8(i*7+c*3) & (1<<bits[c] - 1)
				}
			}
			size := 0
			for _, b := range bits {
				size += packedLen(n, int(b))
			}
			buf := make([]byte, size+8)
			packKeyCodes(buf, 0, codes, D, n, bits, make([]uint64, n8))
			// The same bytes as packing each column with packBits.
			var want []byte
			col := make([]uint8, n)
			for c := range bits {
				for i := range col {
					col[i] = codes[i*D+c]
				}
				want = packBits(want, col, int(bits[c]))
			}
			if !bytes.Equal(buf[:size], want) {
				t.Fatalf("D=%d n=%d: packKeyCodes differs from packBits", D, n)
			}
			back := make([]byte, n8*D)
			unpackKeyCodes(back, buf[:size], D, n, bits, make([]uint64, n8))
			if !bytes.Equal(back[:n*D], codes[:n*D]) {
				t.Fatalf("D=%d n=%d: unpackKeyCodes does not invert packKeyCodes", D, n)
			}
		}
	}
}

func TestHuffman(t *testing.T) {
	defer func() { simdOn = hasSIMD }()
	for _, on := range []bool{false, hasSIMD} {
		simdOn = on
		testHuffman(t)
	}
}

func testHuffman(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	gens := map[string]func(i int) uint8{
		"one symbol":  func(int) uint8 { return 77 },
		"two symbols": func(i int) uint8 { return uint8(3 + 5*(i%3/2)) },
		"uniform":     func(int) uint8 { return uint8(rng.Uint32()) },
		"skewed":      func(int) uint8 { return uint8(128 + int(rng.NormFloat64()*6)) },
		// Geometric: the plain Huffman code would be deeper than hufMaxLen.
		"geometric": func(int) uint8 {
			k := uint8(0)
			for k < 40 && rng.Uint32()&1 == 0 {
				k++
			}
			return k
		},
	}
	for name, gen := range gens {
		for _, n := range []int{1, 2, 3, 5, 16, 17, 63, 64, 1000, 70001} {
			for _, es := range []int{1, 2, 4} {
				src := make([]byte, n*es)
				var counts [256]uint32
				for i := 0; i < n; i++ {
					src[i*es+es-1] = gen(i)
					src[i*es] = byte(i) // the low byte (es > 1)
					counts[src[i*es+es-1]]++
				}
				var h hufCoder
				h.build(&counts)
				for s, l := range h.len {
					if l > hufMaxLen || (l == 0) != (counts[s] == 0) {
						t.Fatalf("%s: symbol %d count %d has length %d", name, s, counts[s], l)
					}
				}
				enc := h.appendTable(nil)
				tl := len(enc)
				enc = h.encode(enc, make([]byte, hufStreamsMax(n)), src, es, es-1, n)
				var d hufCoder
				k, err := d.readTable(enc)
				if err != nil || k != tl {
					t.Fatalf("%s n=%d: readTable: %d, %v", name, n, k, err)
				}
				got := make([]byte, n*es)
				var lo []byte
				if es == 2 {
					lo = make([]byte, n)
					for i := range lo {
						lo[i] = src[2*i]
					}
				} else {
					for i := 0; i < n; i++ {
						copy(got[i*es:i*es+es-1], src[i*es:])
					}
				}
				if err := d.decode(got, es, es-1, n, lo, enc[k:]); err != nil {
					t.Fatalf("%s n=%d es=%d: %v", name, n, es, err)
				}
				if !bytes.Equal(got, src) {
					t.Fatalf("%s n=%d es=%d: round trip differs", name, n, es)
				}
				// Damage: an error or other bytes, never a panic.
				if len(enc) > k+12 {
					bad := bytes.Clone(enc)
					bad[k+12+(len(bad)-k-12)/2] ^= 0x5a
					_ = d.decode(got, es, es-1, n, lo, bad[k:])
					_ = d.decode(got, es, es-1, n, lo, bad[k:len(bad)-1])
				}
			}
		}
	}
	// Lengths that are not a complete prefix code are rejected.
	var h hufCoder
	for _, tab := range [][]byte{{0, 1, 0x21}, {0, 2, 0x21, 0x03}, {0, 0, 0x02}, {0, 1, 0xcc}, {200, 100, 1}} {
		if _, err := h.readTable(tab); !IsCorrupt(err) {
			t.Errorf("table %x: err %v, want ErrCorrupt", tab, err)
		}
	}
}

func TestOutlierSection(t *testing.T) {
	cands := []outCand{{grp: 0, pos: 3}, {grp: 1, pos: 0}, {grp: 9, pos: 31}, {grp: 300, pos: 7}, {grp: 301, pos: 1}}
	sec := appendOutliers(nil, cands, posBits(32), func(i int) uint8 { return uint8(i * 50) })
	size := func(int) int { return 32 }
	got, k, err := parseOutliers(sec, 302, posBits(32), size, nil)
	if err != nil || k != len(sec) || len(got) != len(cands) {
		t.Fatalf("parse: %d entries, %d of %d bytes, %v", len(got), k, len(sec), err)
	}
	for i, e := range got {
		if e.grp != cands[i].grp || e.pos != cands[i].pos || e.code != uint8(i*50) {
			t.Fatalf("entry %d = %+v, want %+v", i, e, cands[i])
		}
	}
	// Too few groups, a short group, or a cut section: ErrCorrupt, never a panic.
	for name, c := range map[string]struct {
		b      []byte
		groups int
		size   int
	}{
		"groups":    {sec, 301, 32},
		"positions": {sec, 302, 8},
		"count":     {[]byte{0xff, 0xff, 0xff, 0x7f}, 302, 32},
		"rice":      {[]byte{1, 25, 0}, 302, 32},
		"unary":     {[]byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0xff}, 302, 32},
	} {
		if _, _, err := parseOutliers(c.b, c.groups, posBits(32), func(int) int { return c.size }, nil); !IsCorrupt(err) {
			t.Errorf("%s: err %v, want ErrCorrupt", name, err)
		}
	}
	for n := 0; n < len(sec); n++ {
		if _, _, err := parseOutliers(sec[:n], 302, posBits(32), size, nil); !IsCorrupt(err) {
			t.Errorf("cut to %d bytes: err %v", n, err)
		}
	}
}

func TestUnknownQuantFlags(t *testing.T) {
	l := Layout{DType: FP16, Layers: 1, KVHeads: 1, HeadDim: 8, Tokens: 16}
	frame, err := Encode(nil, l, make([]byte, l.Size()), Options{Mode: Int4})
	if err != nil {
		t.Fatal(err)
	}
	frame[20+6] |= 1 << 6 // a flag this version does not know
	if _, _, err := Decode(nil, withChecksum(frame)); !IsCorrupt(err) {
		t.Fatalf("unknown flag: err %v, want ErrCorrupt", err)
	}
}

// allocBitsGreedy is allocBits as a plain greedy scan (the reference).
func allocBitsGreedy(bits []uint8, w []float64, b int) {
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

func TestAllocBitsMatchesGreedy(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for it := 0; it < 3000; it++ {
		D := []int{1, 2, 7, 32, 128}[it%5]
		b := 2 + it%7
		w := make([]float64, D)
		for c := range w {
			switch rng.IntN(6) {
			case 0:
				w[c] = 0
			case 1:
				w[c] = float64(rng.IntN(3)) // ties
			case 2:
				w[c] = math.Ldexp(1, rng.IntN(40)-20) // ties across bit steps
			case 3:
				w[c] = 1e-310 // subnormal
			default:
				w[c] = rng.ExpFloat64() * 1e3
			}
		}
		if it%97 == 0 {
			w[0] = math.Inf(1)
		}
		want, got := make([]uint8, D), make([]uint8, D)
		allocBitsGreedy(want, append([]float64(nil), w...), b)
		allocBits(got, append([]float64(nil), w...), b, make([]int32, D))
		if !bytes.Equal(got, want) {
			t.Fatalf("D=%d b=%d w=%v: heap %v, greedy %v", D, b, w, got, want)
		}
	}
}
