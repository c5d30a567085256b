package codec_test

import (
	"testing"

	"github.com/kvtier/kvtier/codec"
)

func addSeeds(f *testing.F) {
	l := codec.Layout{DType: codec.FP16, Order: codec.KVInterleaved, Layers: 2, KVHeads: 1, HeadDim: 16, Tokens: 33}
	raw := randomBlock(l, 11)
	for _, s := range []string{"raw", "lossless", "int8", "int4", "int3", "int2", "int2+ec", "int4+lz4+clip", "int3+out=0.06"} {
		o, _ := codec.ParseSpec(s)
		fr, err := codec.Encode(nil, l, raw, o)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(fr)
	}
	lf, rawf, _ := fixtureBlock(f, "kv-p00")
	for _, s := range []string{"lossless", "int4", "int3+out"} {
		o, _ := codec.ParseSpec(s)
		fr, err := codec.Encode(nil, lf, rawf, o)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(fr)
	}
	// Lossless frames of the other dtypes (the top byte is 1 of 1, 2 or 4).
	for _, dt := range []codec.DType{codec.BF16, codec.FP32, codec.FP8} {
		ld := codec.Layout{DType: dt, Layers: 1, KVHeads: 1, HeadDim: 16, Tokens: 9}
		fr, err := codec.Encode(nil, ld, randomBlock(ld, 12), codec.Options{Mode: codec.Lossless})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(fr)
	}
	f.Add([]byte("KVTF"))
}

// FuzzDecode: hostile frames decode to the header's length or fail with ErrCorrupt.
func FuzzDecode(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, frame []byte) {
		l, out, err := codec.Decode(nil, frame)
		if err != nil {
			if !codec.IsCorrupt(err) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if int64(len(out)) != l.Size() {
			t.Fatalf("decoded %d bytes for %v", len(out), l)
		}
	})
}

// FuzzParseHeader: a parsed header is self-consistent.
func FuzzParseHeader(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := codec.ParseHeader(b)
		if err != nil {
			if !codec.IsCorrupt(err) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if h.Layout.Validate() != nil || int64(h.RawLen) != h.Layout.Size() {
			t.Fatalf("accepted inconsistent header %+v", h)
		}
	})
}
