package hbm_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/hbm"
)

// hostTier is a minimal tiers.HostTier over Go memory, standing in for the
// DRAM arena so that the Store's use of HBM is tested on its own.
type hostTier struct {
	mu       sync.Mutex // protects the fields below
	capacity int64
	used     int64
	next     int64
	reserved map[int64]*hostBlock
	blocks   map[tiers.Key]*hostBlock
}

type hostBlock struct {
	l    tiers.Layout
	slot tiers.Slot
	data []byte
}

var _ tiers.HostTier = (*hostTier)(nil)

func newHostTier(capacity int64) *hostTier {
	return &hostTier{capacity: capacity, reserved: map[int64]*hostBlock{}, blocks: map[tiers.Key]*hostBlock{}}
}

func (h *hostTier) Put(ctx context.Context, k tiers.Key, l tiers.Layout, data []byte) error {
	s, view, err := h.Reserve(l)
	if err != nil {
		return err
	}
	copy(view, data)
	return h.Commit(k, l, s)
}

func (h *hostTier) Get(ctx context.Context, k tiers.Key, dst []byte) (tiers.Layout, []byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.blocks[k]
	if b == nil {
		return tiers.Layout{}, dst, tiers.ErrNotFound
	}
	return b.l, append(dst, b.data...), nil
}

func (h *hostTier) Delete(ctx context.Context, k tiers.Key) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if b := h.blocks[k]; b != nil {
		h.used -= int64(len(b.data))
		delete(h.blocks, k)
	}
	return nil
}

func (h *hostTier) Stats() tiers.TierStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return tiers.TierStats{Name: "dram", CapacityBytes: h.capacity, UsedBytes: h.used, ReservedBytes: h.used, Blocks: int64(len(h.blocks))}
}

func (h *hostTier) Close() error { return nil }

func (h *hostTier) Reserve(l tiers.Layout) (tiers.Slot, []byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := l.Size()
	if h.used+n > h.capacity {
		return tiers.Slot{}, nil, fmt.Errorf("host: %w", tiers.ErrFull)
	}
	h.used += n
	h.next++
	b := &hostBlock{l: l, data: make([]byte, n), slot: tiers.Slot{Offset: h.next, Len: n, Gen: uint32(h.next)}}
	h.reserved[b.slot.Offset] = b
	return b.slot, b.data, nil
}

func (h *hostTier) Commit(k tiers.Key, l tiers.Layout, s tiers.Slot) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.reserved[s.Offset]
	if b == nil {
		return fmt.Errorf("%w: slot %d not reserved", tiers.ErrInvalid, s.Offset)
	}
	delete(h.reserved, s.Offset)
	if old := h.blocks[k]; old != nil {
		h.used -= int64(len(old.data))
	}
	b.l = l
	h.blocks[k] = b
	return nil
}

func (h *hostTier) Abort(s tiers.Slot) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if b := h.reserved[s.Offset]; b != nil {
		h.used -= int64(len(b.data))
		delete(h.reserved, s.Offset)
	}
	return nil
}

func (h *hostTier) View(k tiers.Key) (tiers.Layout, tiers.Slot, []byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.blocks[k]
	if b == nil {
		return tiers.Layout{}, tiers.Slot{}, nil, tiers.ErrNotFound
	}
	return b.l, b.slot, b.data, nil
}

// TestStorePromotesAndEvicts runs the Store over the HBM tier on the fake
// device: Get with Promote: LevelHBM copies blocks into HBM; when HBM is
// full the Store evicts HBM copies (DRAM keeps them) and the promotion
// succeeds; the bytes in HBM are the block's.
func TestStorePromotesAndEvicts(t *testing.T) {
	const block = 256 << 10
	e := newTier(t, 1<<20, hbm.WithChunkSize(1<<20)) // room for 4 blocks
	ctx := context.Background()
	st, err := tiers.Open(ctx, tiers.Config{DRAM: newHostTier(64 << 20), HBM: e.tier})
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
