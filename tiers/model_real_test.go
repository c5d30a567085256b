package tiers_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/dram"
	"github.com/kvtier/kvtier/tiers/nvme"
)

// TestStoreModelRealTiers runs random put/get/release/delete/lookup
// sequences against the Store over the real DRAM arena and NVMe tier, both
// a few blocks large, so eviction, demotion and promotion happen on most
// operations; every result is checked against a model of what was stored.
// (tiers' internal TestStoreModel does the same over in-memory tiers and
// also checks the index against them.) Odd seeds keep DRAM compressed
// (lossless) and give even keys compressible blocks, so frames move between
// DRAM and NVMe (PutFrame) too.
func TestStoreModelRealTiers(t *testing.T) {
	l := tiers.Layout{DType: codec.FP16, Layers: 1, KVHeads: 2, HeadDim: 64, Tokens: 64} // 32 KiB
	seeds := 6
	if testing.Short() {
		seeds = 2
	}
	for seed := range uint64(seeds) {
		packed := seed%2 == 1
		t.Run(fmt.Sprintf("seed=%d,packed=%v", seed, packed), func(t *testing.T) {
			ctx := context.Background()
			d, err := dram.New(4*64<<10, dram.WithChunkSize(64<<10)) // room for about 8 blocks
			if err != nil {
				t.Fatal(err)
			}
			n, err := nvme.Open(t.TempDir(), 12*(l.Size()+4096))
			if err != nil {
				t.Fatal(err)
			}
			cfg := tiers.Config{DRAM: d, NVMe: n, Shards: 4, Logger: quietLogger()}
			if packed {
				cfg.Codecs = func(string) tiers.Codecs { return tiers.Codecs{DRAM: codec.Lossless, NVMe: codec.Lossless} }
			}
			s, err := tiers.Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			r := rand.New(rand.NewPCG(seed, 5))
			const keys = 24
			stored := map[int]bool{}
			held := map[int]int{}
			content := func(i int) []byte {
				b := crashBytesOf(i, int(l.Size()))
				if packed && i%2 == 0 {
					for j := 1; j < len(b); j += 2 {
						b[j] &= 7
					}
				}
				return b
			}
			for step := range 400 {
				i := r.IntN(keys)
				k := benchKey(i)
				switch op := r.IntN(10); {
				case op < 4:
					err := s.Put(ctx, k, l, content(i), tiers.PutOptions{Durable: r.IntN(5) == 0})
					if err != nil && !errors.Is(err, tiers.ErrExhausted) {
						t.Fatalf("step %d: put: %v", step, err)
					}
					if err == nil {
						stored[i] = true
					}
				case op < 7:
					b, err := s.Get(ctx, k, tiers.GetOptions{})
					if err != nil {
						if !errors.Is(err, tiers.ErrNotFound) && !errors.Is(err, tiers.ErrExhausted) {
							t.Fatalf("step %d: get: %v", step, err)
						}
						continue
					}
					if !stored[i] || !bytes.Equal(b.Data, content(i)) {
						t.Fatalf("step %d: get %d returned bytes never stored under it", step, i)
					}
					if r.IntN(3) == 0 && len(held) < 3 {
						held[i]++
					} else {
						s.Release(k)
					}
				case op < 8:
					if held[i] > 0 {
						held[i]--
						if err := s.Release(k); err != nil {
							t.Fatal(err)
						}
					}
				case op < 9:
					err := s.Delete(ctx, k)
					if held[i] > 0 {
						if !errors.Is(err, tiers.ErrPinned) {
							t.Fatalf("step %d: delete of a held block = %v", step, err)
						}
						continue
					}
					if err != nil {
						t.Fatal(err)
					}
					delete(stored, i)
					if _, err := s.Get(ctx, k, tiers.GetOptions{}); !errors.Is(err, tiers.ErrNotFound) {
						t.Fatalf("step %d: deleted block readable: %v", step, err)
					}
				default:
					got, err := s.Lookup(ctx, "bench", tiers.AllLayers, []tiers.Hash{k.Hash}, nil)
					if err != nil {
						t.Fatal(err)
					}
					if got == 1 && !stored[i] {
						t.Fatalf("step %d: lookup finds a block never stored or deleted", step)
					}
				}
				st := s.Stats()
				for _, lv := range st.Levels {
					if lv.UsedBytes > lv.CapacityBytes {
						t.Fatalf("step %d: %s over capacity: %d > %d", step, lv.Name, lv.UsedBytes, lv.CapacityBytes)
					}
				}
			}
			for i, c := range held {
				for range c {
					s.Release(benchKey(i))
				}
			}
			st := s.Stats()
			if st.PinnedBlocks != 0 {
				t.Fatalf("%d blocks still pinned", st.PinnedBlocks)
			}
			if st.Levels[0].Evictions == 0 || st.Levels[0].Promotions == 0 || st.Levels[1].Evictions == 0 {
				t.Fatalf("the tiers were not small enough to exercise movement: %+v", st.Levels)
			}
		})
	}
}
