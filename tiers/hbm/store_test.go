package hbm_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/dram"
	"github.com/kvtier/kvtier/tiers/hbm"
)

// TestStorePromotesAndEvicts runs the Store over the HBM tier on the fake
// device: Get with Promote: LevelHBM copies blocks into HBM; when HBM is
// full the Store evicts HBM copies (DRAM keeps them) and the promotion
// succeeds; the bytes in HBM are the block's.
func TestStorePromotesAndEvicts(t *testing.T) {
	const block = 256 << 10
	e := newTier(t, 1<<20, hbm.WithChunkSize(1<<20)) // room for 4 blocks
	ctx := context.Background()
	arena, err := dram.New(64<<20, dram.WithChunkSize(1<<20), dram.WithHugePages(false))
	if err != nil {
		t.Fatal(err)
	}
	st, err := tiers.Open(ctx, tiers.Config{DRAM: arena, HBM: e.tier})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const blocks = 10
	for i := range blocks {
		if err := st.Put(ctx, key(t, i), layoutOf(block), data(block, uint64(i)), tiers.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range blocks {
		b, err := st.Get(ctx, key(t, i), tiers.GetOptions{Promote: tiers.LevelHBM})
		if err != nil {
			t.Fatalf("promote block %d: %v", i, err)
		}
		if !bytes.Equal(b.Data, data(block, uint64(i))) {
			t.Fatalf("block %d: DRAM bytes differ", i)
		}
		if err := st.Release(key(t, i)); err != nil {
			t.Fatal(err)
		}
		// The HBM copy is the block's.
		_, got, err := e.tier.Get(ctx, key(t, i), nil)
		if err != nil || !bytes.Equal(got, data(block, uint64(i))) {
			t.Fatalf("block %d in HBM: %v", i, err)
		}
		if hs := e.tier.Stats(); hs.Blocks > 4 || hs.ReservedBytes > hs.CapacityBytes {
			t.Fatalf("HBM over capacity: %+v", hs)
		}
	}
	// The last four promoted are in HBM; the rest were evicted from HBM
	// only and are still served from DRAM.
	if hs := e.tier.Stats(); hs.Blocks != 4 {
		t.Fatalf("HBM holds %d blocks, want 4", hs.Blocks)
	}
	for i := range blocks {
		_, _, err := e.tier.Get(ctx, key(t, i), nil)
		if inHBM := err == nil; inHBM != (i >= blocks-4) {
			t.Errorf("block %d in HBM: %v", i, inHBM)
		}
		b, err := st.Get(ctx, key(t, i), tiers.GetOptions{})
		if err != nil || !bytes.Equal(b.Data, data(block, uint64(i))) {
			t.Fatalf("block %d from the store after HBM eviction: %v", i, err)
		}
		want := tiers.LevelDRAM
		if i >= blocks-4 {
			want = tiers.LevelHBM
		}
		if b.From != want {
			t.Errorf("block %d served from %v, want %v", i, b.From, want)
		}
		st.Release(key(t, i))
	}
	// Deleting from the store drops the HBM copy.
	if err := st.Delete(ctx, key(t, blocks-1)); err != nil {
		t.Fatal(err)
	}
	if hs := e.tier.Stats(); hs.Blocks != 3 {
		t.Fatalf("HBM holds %d blocks after a store delete, want 3", hs.Blocks)
	}
}
