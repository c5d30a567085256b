package tiers_test

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
)

func TestSummarizeKeysBoundsEveryKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    tiers.Layout
	}{
		{"fp16 separate", tiers.Layout{DType: codec.FP16, Layers: 1, KVHeads: 2, HeadDim: 32, Tokens: 16}},
		{"bf16 interleaved 3 layers", tiers.Layout{DType: codec.BF16, Order: codec.KVInterleaved, Layers: 3, KVHeads: 2, HeadDim: 8, Tokens: 5}},
		{"fp32 separate 2 layers", tiers.Layout{DType: codec.FP32, Layers: 2, KVHeads: 1, HeadDim: 16, Tokens: 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(tc.l.DType)))
			n := int(tc.l.Elems())
			vals := make([]float32, n)
			data := make([]byte, tc.l.Size())
			for i := range vals {
				v := float32(rng.NormFloat64() * 3)
				switch tc.l.DType {
				case codec.FP16:
					h := codec.Float32ToHalf(v)
					binary.LittleEndian.PutUint16(data[2*i:], h)
					v = codec.HalfToFloat32(h)
				case codec.BF16:
					h := codec.Float32ToBFloat16(v)
					binary.LittleEndian.PutUint16(data[2*i:], h)
					v = codec.BFloat16ToFloat32(h)
				default:
					binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
				}
				vals[i] = v
			}
			sum, err := tiers.SummarizeKeys(nil, tc.l, data)
			if err != nil {
				t.Fatal(err)
			}
			if len(sum) != tiers.KeySummarySize(tc.l) {
				t.Fatalf("%d bytes, want %d", len(sum), tiers.KeySummarySize(tc.l))
			}
			H, T, D := int(tc.l.KVHeads), int(tc.l.Tokens), int(tc.l.HeadDim)
			es := tiers.KeySummaryEntrySize(D)
			for li := range tc.l.NumLayers() {
				for h := range H {
					e := sum[(li*H+h)*es:][:es]
					scale := math.Float32frombits(binary.LittleEndian.Uint32(e))
					base := (li*H + h) * T * D
					if tc.l.Order == codec.KVInterleaved {
						base = (li*2*H + h) * T * D
					}
					for c := range D {
						hi, lo := float64(scale)*float64(int8(e[4+c])), float64(scale)*float64(int8(e[4+D+c]))
						kmin, kmax := math.Inf(1), math.Inf(-1)
						for tok := range T {
							v := float64(vals[base+tok*D+c])
							kmin, kmax = min(kmin, v), max(kmax, v)
						}
						tol := 1e-5 * (1 + math.Abs(kmax) + math.Abs(kmin))
						if hi < kmax-tol || lo > kmin+tol {
							t.Fatalf("layer %d head %d channel %d: summary [%v, %v] does not cover keys [%v, %v]", li, h, c, lo, hi, kmin, kmax)
						}
						if hi-kmax > 2*float64(scale)+tol || kmin-lo > 2*float64(scale)+tol {
							t.Fatalf("layer %d head %d channel %d: summary [%v, %v] loose around [%v, %v] (scale %v)", li, h, c, lo, hi, kmin, kmax, scale)
						}
					}
				}
			}
		})
	}
}

func TestSummarizeKeysRejects(t *testing.T) {
	l := tiers.Layout{DType: codec.FP16, Layers: 1, KVHeads: 1, HeadDim: 4, Tokens: 2}
	if _, err := tiers.SummarizeKeys(nil, l, make([]byte, l.Size()-1)); !errors.Is(err, tiers.ErrInvalid) {
		t.Errorf("short block: %v", err)
	}
	f8 := l
	f8.DType = codec.FP8
	if _, err := tiers.SummarizeKeys(nil, f8, make([]byte, f8.Size())); !errors.Is(err, tiers.ErrInvalid) {
		t.Errorf("fp8 block: %v", err)
	}
	// All-zero keys: a zero scale and zero codes, not a division by zero.
	sum, err := tiers.SummarizeKeys(nil, l, make([]byte, l.Size()))
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range sum {
		if b != 0 {
			t.Fatalf("byte %d of a zero block's summary is %d", i, b)
		}
	}
}

// BenchmarkSummarizeKeys: the cost of a key summary next to a copy of the
// same block (the put path's memcpy), for the llama-3.1-8b per-layer block.
func BenchmarkSummarizeKeys(b *testing.B) {
	l := tiers.Layout{DType: codec.FP16, Layers: 1, KVHeads: 8, HeadDim: 128, Tokens: 16}
	data := make([]byte, l.Size())
	for i := 0; i < len(data); i += 2 {
		binary.LittleEndian.PutUint16(data[i:], codec.Float32ToHalf(float32(i%97)/50-1))
	}
	b.Run("ref=copy", func(b *testing.B) {
		dst := make([]byte, len(data))
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			copy(dst, data)
		}
	})
	for _, dt := range []codec.DType{codec.FP16, codec.BF16} {
		l := l
		l.DType = dt // bf16 takes the general path: a conversion per element
		b.Run("summarize="+dt.String(), func(b *testing.B) {
			dst := make([]byte, tiers.KeySummarySize(l))
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tiers.SummarizeKeys(dst, l, data); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(dst))/float64(len(data))*100, "%summary")
		})
	}
}
