package tiers

import (
	"context"
	"fmt"
	"testing"

	"github.com/kvtier/kvtier/codec"
)

// BenchmarkLookup measures Lookup of a fully cached chain: the longest
// cached prefix and the level of every block. Target: 8192 blocks ≤ 1 ms.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{1024, 8192} {
		b.Run(fmt.Sprintf("blocks=%d", n), func(b *testing.B) {
			ctx := context.Background()
			l := Layout{DType: codec.FP8, Layers: 1, KVHeads: 1, HeadDim: 1, Tokens: 16} // 32-byte blocks: the index is what is measured
			s, err := Open(ctx, Config{DRAM: newMemTier("dram", int64(n)*l.Size())})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			hs := make([]Hash, n)
			var parent Hash
			data := make([]byte, l.Size())
			for i := range hs {
				k := testKey("bench/model", i)
				if err := s.Put(ctx, k, l, data, PutOptions{Parent: parent}); err != nil {
					b.Fatal(err)
				}
				hs[i], parent = k.Hash, k.Hash
			}
			levels := make([]Level, n)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				got, err := s.Lookup(ctx, "bench/model", AllLayers, hs, levels)
				if err != nil || got != n {
					b.Fatalf("Lookup = %d, %v", got, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms/lookup")
		})
	}
}
