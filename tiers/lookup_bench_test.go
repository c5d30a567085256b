package tiers

import (
	"context"
	"fmt"
	"testing"

	"github.com/kvtier/kvtier/codec"
)

// BenchmarkLookup measures a lookup of a fully cached chain: the longest
// cached prefix and the level of every block. Target: 8192 blocks ≤ 1 ms.
// form=packed is LookupPacked on the hashes back to back (what the daemon
// receives); form=hashes is Lookup on a []Hash built beforehand, and
// form=unpack+hashes adds building that []Hash from the packed bytes (what
// the daemon did before LookupPacked): the reference.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{1024, 8192} {
		ctx := context.Background()
		l := Layout{DType: codec.FP8, Layers: 1, KVHeads: 1, HeadDim: 1, Tokens: 16} // 32-byte blocks: the index is what is measured
		s, err := Open(ctx, Config{DRAM: newMemTier("dram", int64(n)*l.Size())})
		if err != nil {
			b.Fatal(err)
		}
		hs := make([]Hash, n)
		packed := make([]byte, 0, 16*n)
		var parent Hash
		data := make([]byte, l.Size())
		for i := range hs {
			k := testKey("bench/model", i)
			if err := s.Put(ctx, k, l, data, PutOptions{Parent: parent}); err != nil {
				b.Fatal(err)
			}
			hs[i], parent = k.Hash, k.Hash
			packed = k.Hash.AppendTo(packed)
		}
		levels := make([]Level, n)
		check := func(b *testing.B, got int, err error) {
			if err != nil || got != n {
				b.Fatalf("lookup = %d, %v", got, err)
			}
		}
		run := func(name string, lookup func() (int, error)) {
			b.Run(fmt.Sprintf("blocks=%d/form=%s", n, name), func(b *testing.B) {
				b.SetBytes(int64(len(packed)))
				b.ReportAllocs()
				for b.Loop() {
					got, err := lookup()
					check(b, got, err)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms/lookup")
			})
		}
		run("packed", func() (int, error) {
			return s.LookupPacked(ctx, "bench/model", AllLayers, packed, 16, levels)
		})
		run("hashes", func() (int, error) {
			return s.Lookup(ctx, "bench/model", AllLayers, hs, levels)
		})
		unpacked := make([]Hash, 0, n)
		run("unpack+hashes", func() (int, error) {
			unpacked = unpacked[:0]
			for off := 0; off < len(packed); off += 16 {
				h, err := HashFromBytes(packed[off : off+16])
				if err != nil {
					return 0, err
				}
				unpacked = append(unpacked, h)
			}
			return s.Lookup(ctx, "bench/model", AllLayers, unpacked, levels)
		})
		s.Close()
	}
}
