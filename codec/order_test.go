package codec_test

import (
	"bytes"
	"testing"

	"github.com/kvtier/kvtier/codec"
)

// TestUnspecifiedOrder: a frame records KVUnspecified as it was given, and
// the quantizer treats such a block as KVSeparate: the payload is the one a
// KVSeparate block encodes to, byte for byte.
func TestUnspecifiedOrder(t *testing.T) {
	for _, mode := range []codec.Mode{codec.Raw, codec.Lossless, codec.Int8, codec.Int4, codec.Int2} {
		t.Run(mode.String(), func(t *testing.T) {
			sep := codec.Layout{DType: codec.FP16, Order: codec.KVSeparate, Layers: 2, KVHeads: 2, HeadDim: 64, Tokens: 32}
			uns := sep
			uns.Order = codec.KVUnspecified
			raw := randomBlock(sep, 11)
			fs, err := codec.Encode(nil, sep, raw, codec.Options{Mode: mode})
			if err != nil {
				t.Fatal(err)
			}
			fu, err := codec.Encode(nil, uns, raw, codec.Options{Mode: mode})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(fs[codec.HeaderLen:], fu[codec.HeaderLen:]) {
				t.Errorf("payload of an unspecified-order block differs from the separate one's")
			}
			gl, dec, err := codec.Decode(nil, fu)
			if err != nil {
				t.Fatal(err)
			}
			if gl.Order != codec.KVUnspecified {
				t.Errorf("decoded order %v, want %v", gl.Order, codec.KVUnspecified)
			}
			_, decSep, err := codec.Decode(nil, fs)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dec, decSep) {
				t.Error("decoded bytes differ between the two orders")
			}
		})
	}
}

// TestOrderEffective and the frame's order byte: old frames hold 0 and 1.
func TestOrderEffective(t *testing.T) {
	for _, tc := range []struct {
		o, eff codec.Order
		name   string
	}{
		{codec.KVSeparate, codec.KVSeparate, "kv_separate"},
		{codec.KVInterleaved, codec.KVInterleaved, "kv_interleaved"},
		{codec.KVUnspecified, codec.KVSeparate, "kv_unspecified"},
	} {
		if got := tc.o.Effective(); got != tc.eff {
			t.Errorf("%v.Effective() = %v, want %v", tc.o, got, tc.eff)
		}
		if tc.o.String() != tc.name {
			t.Errorf("String() = %q, want %q", tc.o.String(), tc.name)
		}
	}
	// Frames written before KVUnspecified existed: the values 0 and 1 keep
	// their meaning, and 3 is still refused.
	l := codec.Layout{DType: codec.FP16, KVHeads: 1, HeadDim: 8, Tokens: 4}
	raw := randomBlock(l, 3)
	for _, tc := range []struct {
		b    byte
		want codec.Order
		ok   bool
	}{{0, codec.KVSeparate, true}, {1, codec.KVInterleaved, true}, {2, codec.KVUnspecified, true}, {3, 0, false}} {
		f, err := codec.Encode(nil, l, raw, codec.Options{Mode: codec.Raw})
		if err != nil {
			t.Fatal(err)
		}
		f[9] = tc.b
		h, err := codec.ParseHeader(f)
		if tc.ok != (err == nil) {
			t.Fatalf("order byte %d: ParseHeader error %v", tc.b, err)
		}
		if tc.ok && h.Layout.Order != tc.want {
			t.Errorf("order byte %d read as %v, want %v", tc.b, h.Layout.Order, tc.want)
		}
	}
}
