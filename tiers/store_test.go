package tiers

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/kvtier/kvtier/codec"
)

// testLayout is a 512-byte block.
var testLayout = Layout{DType: codec.FP16, Layers: 1, KVHeads: 1, HeadDim: 8, Tokens: 16}

const testBlock = 512

func testKey(ns string, i int) Key {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(i)*0x9E3779B97F4A7C15+1)
	binary.BigEndian.PutUint64(b[8:], uint64(i))
	h, err := HashFromBytes(b[:])
	if err != nil {
		panic(err)
	}
	return Key{Namespace: ns, Hash: h, Layer: AllLayers}
}

// content is the bytes block k holds in these tests: derived from the key,
// as real blocks are derived from their prefix, so any mix-up shows.
func content(k Key, n int, salt byte) []byte {
	b := make([]byte, n)
	seed := binary.BigEndian.Uint64(k.Hash.b[:8]) ^ uint64(salt)
	r := rand.New(rand.NewPCG(seed, uint64(k.Layer)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

type testStore struct {
	*Store
	dram, nvme, hbm *memTier
}

// check verifies the index against the tiers once write-behind is idle
// (its I/O pins are transient, so it retries for a while).
func (ts *testStore) check(t *testing.T) {
	t.Helper()
	m := map[uint8]*memTier{inDRAM: ts.dram, inNVMe: ts.nvme, inHBM: ts.hbm}
	var err error
	for range 200 {
		if err = checkIndex(ts.Store, m); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal(err)
}

// dramSlot returns k's DRAM slot and whether it holds a frame.
func (ts *testStore) dramSlot(k Key) (Slot, bool) {
	sh, fp := ts.locate(k)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	i := sh.findFP(k, fp)
	if i == nilIdx {
		return Slot{}, false
	}
	return sh.at(i).dram.slot(), sh.at(i).packed
}

// has reports whether the index records a copy of k in the tier of bit.
func (ts *testStore) has(k Key, bit uint8) bool {
	sh, fp := ts.locate(k)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	i := sh.findFP(k, fp)
	return i != nilIdx && sh.at(i).where&bit != 0
}

// newTestStore builds a store over memory tiers; a capacity of 0 leaves that
// tier out. opts adjust the configuration.
func newTestStore(t testing.TB, dramBlocks, nvmeBlocks, hbmBlocks int, opts ...func(*Config)) *testStore {
	t.Helper()
	ts := &testStore{dram: newMemTier("dram", int64(dramBlocks)*testBlock)}
	cfg := Config{DRAM: ts.dram, Shards: 4, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, o := range opts {
		o(&cfg)
	}
	if nvmeBlocks > 0 {
		ts.nvme = newMemTier("nvme", int64(nvmeBlocks)*testBlock)
		cfg.NVMe = ts.nvme
	}
	if hbmBlocks > 0 {
		ts.hbm = newMemTier("hbm", int64(hbmBlocks)*testBlock)
		cfg.HBM = ts.hbm
	}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.Store = s
	t.Cleanup(func() { s.Close() })
	return ts
}

func mustGet(t *testing.T, s *Store, k Key, want []byte) Block {
	t.Helper()
	b, err := s.Get(context.Background(), k, GetOptions{})
	if err != nil {
		t.Fatalf("Get(%v): %v", k, err)
	}
	if !bytes.Equal(b.Data, want) {
		t.Fatalf("Get(%v): wrong bytes", k)
	}
	return b
}

func TestStorePutGetRelease(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, 8, 0, 0)
	k := testKey("m", 1)
	data := content(k, testBlock, 0)
	if err := ts.Put(ctx, k, testLayout, data, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	data[0] ^= 1 // the store keeps its own copy
	data[0] ^= 1
	b := mustGet(t, ts.Store, k, data)
	if b.From != LevelDRAM || b.Layout != testLayout || b.Slot.Len != testBlock {
		t.Fatalf("block = %+v", b)
	}
	if err := ts.Release(k); err != nil {
		t.Fatal(err)
	}
	if err := ts.Release(k); !errors.Is(err, ErrNotPinned) {
		t.Fatalf("second Release = %v, want ErrNotPinned", err)
	}
	if _, err := ts.Get(ctx, testKey("m", 2), GetOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of missing = %v", err)
	}
	if _, err := ts.Get(ctx, testKey("other", 1), GetOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("namespaces must isolate: %v", err)
	}
	ts.check(t)
}

func TestStoreRejectsBadInput(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, 8, 0, 0)
	good := testKey("m", 1)
	long := make([]byte, MaxNamespaceLen+1)
	for i := range long {
		long[i] = 'a'
	}
	cases := []struct {
		name string
		k    Key
		l    Layout
		n    int
		opts PutOptions
		want []error
	}{
		{"empty namespace", Key{Hash: good.Hash, Layer: 0}, testLayout, testBlock, PutOptions{}, []error{ErrInvalid}},
		{"long namespace", Key{Namespace: string(long), Hash: good.Hash}, testLayout, testBlock, PutOptions{}, []error{ErrInvalid}},
		{"bad namespace byte", Key{Namespace: "a b", Hash: good.Hash}, testLayout, testBlock, PutOptions{}, []error{ErrInvalid}},
		{"zero hash", Key{Namespace: "m"}, testLayout, testBlock, PutOptions{}, []error{ErrInvalid}},
		{"layer too low", Key{Namespace: "m", Hash: good.Hash, Layer: -2}, testLayout, testBlock, PutOptions{}, []error{ErrInvalid}},
		{"layer too high", Key{Namespace: "m", Hash: good.Hash, Layer: 1024}, testLayout, testBlock, PutOptions{}, []error{ErrInvalid}},
		{"short data", good, testLayout, testBlock - 1, PutOptions{}, []error{ErrInvalid, codec.ErrSize}},
		{"long data", good, testLayout, testBlock + 2, PutOptions{}, []error{ErrInvalid, codec.ErrSize}},
		{"unknown dtype", good, Layout{DType: 9, KVHeads: 1, HeadDim: 8, Tokens: 16}, testBlock, PutOptions{}, []error{ErrInvalid, codec.ErrLayout}},
		{"zero tokens", good, Layout{DType: codec.FP16, KVHeads: 1, HeadDim: 8}, 0, PutOptions{}, []error{ErrInvalid, codec.ErrLayout}},
		{"durable without NVMe", good, testLayout, testBlock, PutOptions{Durable: true}, []error{ErrUnavailable}},
		{"larger than DRAM", good, Layout{DType: codec.FP32, KVHeads: 8, HeadDim: 128, Tokens: 16}, 2 * 8 * 128 * 16 * 4, PutOptions{}, []error{ErrExhausted}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ts.Put(ctx, tc.k, tc.l, make([]byte, tc.n), tc.opts)
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Fatalf("Put = %v, want %v", err, w)
				}
			}
		})
	}
	if _, err := ts.Get(ctx, good, GetOptions{Promote: LevelHBM}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get to HBM without HBM = %v", err)
	}
	if st := ts.Stats(); st.IndexedBlocks != 0 {
		t.Fatalf("rejected puts left %d blocks", st.IndexedBlocks)
	}
	ts.check(t)
}

func TestStoreEvictsToNVMeAndPromotes(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, 4, 64, 0)
	const n = 20
	for i := range n {
		k := testKey("m", i)
		if err := ts.Put(ctx, k, testLayout, content(k, testBlock, 0), PutOptions{}); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	for i := range n {
		k := testKey("m", i)
		b := mustGet(t, ts.Store, k, content(k, testBlock, 0))
		if err := ts.Release(b.Key); err != nil {
			t.Fatal(err)
		}
	}
	st := ts.Stats()
	if st.Levels[0].Evictions == 0 || st.Levels[0].Promotions == 0 || st.Demotions == 0 {
		t.Fatalf("expected evictions, promotions and demotions: %+v", st)
	}
	if st.Levels[0].UsedBytes > st.Levels[0].CapacityBytes {
		t.Fatalf("DRAM over capacity: %+v", st.Levels[0])
	}
	ts.check(t)
}

func TestStorePinnedBlocksAreNeverEvicted(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, 2, 0, 0)
	k0, k1, k2 := testKey("m", 0), testKey("m", 1), testKey("m", 2)
	for _, k := range []Key{k0, k1} {
		if err := ts.Put(ctx, k, testLayout, content(k, testBlock, 0), PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	b0 := mustGet(t, ts.Store, k0, content(k0, testBlock, 0))
	b1 := mustGet(t, ts.Store, k1, content(k1, testBlock, 0))
	err := ts.Put(ctx, k2, testLayout, content(k2, testBlock, 0), PutOptions{})
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("Put into a DRAM full of pinned blocks = %v, want ErrExhausted", err)
	}
	if !bytes.Equal(b0.Data, content(k0, testBlock, 0)) || !bytes.Equal(b1.Data, content(k1, testBlock, 0)) {
		t.Fatal("pinned views changed")
	}
	if err := ts.Delete(ctx, k0); !errors.Is(err, ErrPinned) {
		t.Fatalf("Delete of pinned = %v", err)
	}
	ts.Release(k0)
	if err := ts.Put(ctx, k2, testLayout, content(k2, testBlock, 0), PutOptions{}); err != nil {
		t.Fatalf("Put after release: %v", err)
	}
	if !bytes.Equal(b1.Data, content(k1, testBlock, 0)) {
		t.Fatal("still-pinned view changed")
	}
	ts.Release(k1)
	if _, err := ts.Get(ctx, k0, GetOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("k0 should have been evicted: %v", err)
	}
	ts.check(t)
}

// chain puts n blocks of one prefix chain and returns their keys.
func chain(t *testing.T, s *Store, ns string, first, n int) []Key {
	t.Helper()
	keys := make([]Key, n)
	var parent Hash
	for i := range n {
		k := testKey(ns, first+i)
		if err := s.Put(context.Background(), k, testLayout, content(k, testBlock, 0), PutOptions{Parent: parent}); err != nil {
			t.Fatal(err)
		}
		keys[i], parent = k, k.Hash
	}
	return keys
}

func hashesOf(keys []Key) []Hash {
	hs := make([]Hash, len(keys))
	for i, k := range keys {
		hs[i] = k.Hash
	}
	return hs
}

func TestStoreEvictsLeavesFirst(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, 8, 0, 0)
	a := chain(t, ts.Store, "m", 0, 4)
	b := chain(t, ts.Store, "m", 100, 4)
	// Touch a's root and b's tail: a pure LRU would now evict a[1], a[2]
	// and b[0], breaking both chains. Leaf-first LRU evicts a[3], then a[2].
	for _, k := range append([]Key{a[0]}, b[1:]...) {
		mustGet(t, ts.Store, k, content(k, testBlock, 0))
		ts.Release(k)
	}
	// Two more blocks force two evictions; leaves must go, never roots.
	chain(t, ts.Store, "m", 200, 2)
	na, _ := ts.Lookup(ctx, "m", AllLayers, hashesOf(a), nil)
	nb, _ := ts.Lookup(ctx, "m", AllLayers, hashesOf(b), nil)
	if na != 2 || nb != 4 {
		t.Fatalf("cached prefixes %d and %d: eviction broke a chain (want leaves evicted first)", na, nb)
	}
	for _, c := range [][]Key{a, b} {
		for i, k := range c {
			_, err := ts.Get(ctx, k, GetOptions{})
			cached := err == nil
			if cached {
				ts.Release(k)
			}
			if i > 0 && cached {
				if _, err := ts.Get(ctx, c[i-1], GetOptions{}); err != nil {
					t.Fatalf("block %d cached but its parent is not", i)
				}
				ts.Release(c[i-1])
			}
		}
	}
	ts.check(t)
}

// TestStoreEvictsOldestFirst checks that eviction takes the store's least
// recently used block, across shards, when it is free to drop: blocks put
// one after another leave in the order they came, and a Get saves a block.
func TestStoreEvictsOldestFirst(t *testing.T) {
	ctx := context.Background()
	const capacity = 16
	ts := newTestStore(t, capacity, 0, 0, func(c *Config) { c.Shards = 64 })
	put := func(i int) {
		t.Helper()
		k := testKey("m", i)
		if err := ts.Put(ctx, k, testLayout, content(k, testBlock, 0), PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cached := func(i int) bool { return ts.has(testKey("m", i), inDRAM) }
	for i := range capacity {
		put(i)
	}
	for i := capacity; i < 4*capacity; i++ {
		put(i)
		for j := 0; j <= i; j++ {
			if want := j > i-capacity; cached(j) != want {
				t.Fatalf("after putting block %d: block %d cached %v, want %v (oldest first)", i, j, cached(j), want)
			}
		}
	}
	// Reading the oldest block makes it the newest: the next put evicts
	// the one after it.
	oldest := 4*capacity - capacity
	k := testKey("m", oldest)
	mustGet(t, ts.Store, k, content(k, testBlock, 0))
	ts.Release(k)
	put(4 * capacity)
	if !cached(oldest) || cached(oldest+1) {
		t.Fatalf("after a get of block %d and one put: it is cached %v, block %d cached %v; want true, false",
			oldest, cached(oldest), oldest+1, cached(oldest+1))
	}
	ts.check(t)
}

func TestStoreLookup(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, 4, 64, 0)
	keys := chain(t, ts.Store, "m", 0, 10) // 4 in DRAM at most, all on NVMe eventually
	hs := hashesOf(keys)
	hs = append(hs, testKey("m", 999).Hash, keys[0].Hash)
	levels := make([]Level, len(hs))
	n, err := ts.Lookup(ctx, "m", AllLayers, hs, levels)
	if err != nil || n != 10 {
		t.Fatalf("Lookup = %d, %v; want 10", n, err)
	}
	for i := range n {
		if levels[i] != LevelDRAM && levels[i] != LevelNVMe {
			t.Fatalf("levels[%d] = %v", i, levels[i])
		}
	}
	if levels[9] != LevelDRAM {
		t.Fatalf("the newest block should be in DRAM, got %v", levels[9])
	}
	if n, _ := ts.Lookup(ctx, "m", 3, hs, nil); n != 0 {
		t.Fatalf("another layer must miss, got %d", n)
	}
	bad := []Hash{keys[0].Hash, {}}
	if _, err := ts.Lookup(ctx, "m", AllLayers, bad, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("zero hash: %v", err)
	}
	if _, err := ts.Lookup(ctx, "", AllLayers, hs, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty namespace: %v", err)
	}
	if _, err := ts.Lookup(ctx, "m", AllLayers, hs, make([]Level, 1)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("short levels: %v", err)
	}
}

func TestStoreCorruptCopyIsAMiss(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, 1, 8, 0)
	k0, k1 := testKey("m", 0), testKey("m", 1)
	for _, k := range []Key{k0, k1} { // k1 pushes k0 out of DRAM
		if err := ts.Put(ctx, k, testLayout, content(k, testBlock, 0), PutOptions{Durable: true}); err != nil {
			t.Fatal(err)
		}
	}
	ts.nvme.mu.Lock()
	ts.nvme.corruptNext[k0] = true
	ts.nvme.mu.Unlock()
	if _, err := ts.Get(ctx, k0, GetOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of corrupt block = %v, want ErrNotFound", err)
	}
	st := ts.Stats()
	if st.Corrupt != 1 || st.Misses != 1 {
		t.Fatalf("corrupt=%d misses=%d, want 1 and 1", st.Corrupt, st.Misses)
	}
	if n, _ := ts.Lookup(ctx, "m", AllLayers, []Hash{k0.Hash}, nil); n != 0 {
		t.Fatal("corrupt block still indexed")
	}
	ts.check(t)
}

func TestStoreDurablePutIsOnNVMe(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, 4, 8, 0)
	k := testKey("m", 7)
	if err := ts.Put(ctx, k, testLayout, content(k, testBlock, 0), PutOptions{Durable: true}); err != nil {
		t.Fatal(err)
	}
	if !ts.nvme.has(k) {
		t.Fatal("durable put returned before the NVMe copy existed")
	}
	// A second durable put of a cached block is a no-op that still holds.
	if err := ts.Put(ctx, k, testLayout, content(k, testBlock, 0), PutOptions{Durable: true}); err != nil {
		t.Fatal(err)
	}
	ts.check(t)
}

func TestStoreReopenFindsNVMeWarm(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, 2, 16, 0)
	keys := chain(t, ts.Store, "m", 0, 6)
	if err := ts.Close(); err != nil {
		t.Fatal(err)
	}
	nv := ts.nvme
	nv.closed = false
	s2, err := Open(ctx, Config{DRAM: newMemTier("dram", 2*testBlock), NVMe: nv, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	levels := make([]Level, len(keys))
	if n, err := s2.Lookup(ctx, "m", AllLayers, hashesOf(keys), levels); n != len(keys) || err != nil {
		t.Fatalf("after reopen Lookup = %d, %v", n, err)
	}
	for _, k := range keys {
		mustGet(t, s2, k, content(k, testBlock, 0))
		s2.Release(k)
	}
}

func TestStoreReserveCommitAbort(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, 2, 0, 0)
	k := testKey("m", 3)
	r, err := ts.Reserve(ctx, k, testLayout)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Get(ctx, k, GetOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatal("a reservation must not be visible before Commit")
	}
	copy(r.Data, content(k, testBlock, 0))
	if err := ts.Commit(ctx, r, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	mustGet(t, ts.Store, k, content(k, testBlock, 0))
	ts.Release(k)
	r2, err := ts.Reserve(ctx, testKey("m", 4), testLayout)
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Abort(r2); err != nil {
		t.Fatal(err)
	}
	if err := ts.Abort(r2); err == nil {
		t.Fatal("double Abort must fail")
	}
	if st := ts.dram.Stats(); st.ReservedBytes != testBlock {
		t.Fatalf("reserved %d bytes after abort, want %d", st.ReservedBytes, testBlock)
	}
	ts.check(t)
}

func TestStoreHBMPromotionAndInclusiveEviction(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, 2, 0, 1)
	k0, k1, k2 := testKey("m", 0), testKey("m", 1), testKey("m", 2)
	for _, k := range []Key{k0, k1} {
		ts.Put(ctx, k, testLayout, content(k, testBlock, 0), PutOptions{})
	}
	if _, err := ts.Get(ctx, k0, GetOptions{Promote: LevelHBM}); err != nil {
		t.Fatal(err)
	}
	ts.Release(k0)
	if !ts.hbm.has(k0) {
		t.Fatal("promote to HBM left no HBM copy")
	}
	b, _ := ts.Get(ctx, k0, GetOptions{})
	if b.From != LevelHBM {
		t.Fatalf("From = %v, want hbm", b.From)
	}
	ts.Release(k0)
	// HBM holds one block: promoting k1 evicts k0's HBM copy, for free.
	if _, err := ts.Get(ctx, k1, GetOptions{Promote: LevelHBM}); err != nil {
		t.Fatal(err)
	}
	ts.Release(k1)
	if ts.hbm.has(k0) || !ts.hbm.has(k1) {
		t.Fatal("HBM eviction did not make room")
	}
	// DRAM is inclusive: evicting k1 from DRAM must drop its HBM copy too.
	mustGet(t, ts.Store, k0, content(k0, testBlock, 0))
	ts.Release(k0)
	ts.Put(ctx, k2, testLayout, content(k2, testBlock, 0), PutOptions{})
	if ts.hbm.has(k1) && !ts.has(k1, inDRAM) {
		t.Fatal("HBM copy outlived its DRAM copy")
	}
	ts.check(t)
}

func TestStoreReplaceWithOtherLayout(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, 4, 8, 0)
	k := testKey("m", 1)
	ts.Put(ctx, k, testLayout, content(k, testBlock, 0), PutOptions{Durable: true})
	l2 := testLayout
	l2.DType = codec.BF16
	b := mustGet(t, ts.Store, k, content(k, testBlock, 0))
	if err := ts.Put(ctx, k, l2, content(k, testBlock, 1), PutOptions{}); !errors.Is(err, ErrPinned) {
		t.Fatalf("replacing a pinned block = %v, want ErrPinned", err)
	}
	ts.Release(b.Key)
	if err := ts.Put(ctx, k, l2, content(k, testBlock, 1), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	b = mustGet(t, ts.Store, k, content(k, testBlock, 1))
	if b.Layout != l2 {
		t.Fatalf("layout %v, want %v", b.Layout, l2)
	}
	ts.Release(k)
	ts.check(t)
}

// TestStoreModel runs random operations on a store with tiny tiers, so that
// eviction, demotion and promotion happen all the time, and checks every
// result against a model of what was stored: a Get returns exactly the last
// bytes put under its key or not-found, never other bytes; deleted blocks
// stay gone; pinned views never change; the index agrees with the tiers.
func TestStoreModel(t *testing.T) {
	for _, cfg := range []struct {
		dram, nvme, hbm int
		packed          bool
	}{{3, 0, 0, false}, {2, 5, 0, false}, {4, 6, 2, false}, {1, 1, 0, false}, {3, 0, 0, true}, {2, 5, 0, true}, {4, 6, 2, true}} {
		t.Run(fmt.Sprintf("dram=%d,nvme=%d,hbm=%d,packed=%v", cfg.dram, cfg.nvme, cfg.hbm, cfg.packed), func(t *testing.T) {
			staged := 0
			for seed := range uint64(20) {
				staged += runModel(t, seed, cfg.dram, cfg.nvme, cfg.hbm, cfg.packed)
			}
			if cfg.packed && staged == 0 {
				t.Fatal("no Get was served from a compressed DRAM copy")
			}
		})
	}
}

// modelContent is the model's block content. With packed, the even keys'
// blocks compress (their high bytes take few values), so a lossless DRAM
// codec keeps them as frames, and the odd keys' blocks stay raw.
func modelContent(i int, k Key, salt byte, packed bool) []byte {
	b := content(k, testBlock, salt)
	if packed && i%2 == 0 {
		for j := 1; j < len(b); j += 2 {
			b[j] &= 7
		}
	}
	return b
}

// runModel runs one seed and returns how many Gets were decoded from a
// compressed DRAM copy.
func runModel(t *testing.T, seed uint64, dramBlocks, nvmeBlocks, hbmBlocks int, packed bool) (staged int) {
	ctx := context.Background()
	ts := newTestStore(t, dramBlocks, nvmeBlocks, hbmBlocks, func(c *Config) {
		if packed {
			c.Codecs = func(string) Codecs { return Codecs{DRAM: codec.Lossless, NVMe: codec.Lossless} }
		}
	})
	r := rand.New(rand.NewPCG(seed, 42))
	const keys = 8
	salt := map[int]byte{}      // model: the salt of the last successful put per key
	pinned := map[int][]Block{} // held views
	npins := 0
	for step := range 300 {
		i := r.IntN(keys)
		k := testKey("m", i)
		switch op := r.IntN(10); {
		case op < 4: // put (sometimes new content under a new layout is not modelled: same layout)
			sv := byte(r.IntN(2))
			if old, ok := salt[i]; ok {
				sv = old // content-addressed: a key's bytes never change
			}
			err := ts.Put(ctx, k, testLayout, modelContent(i, k, sv, packed), PutOptions{Durable: nvmeBlocks > 0 && r.IntN(4) == 0})
			switch {
			case err == nil:
				salt[i] = sv
			case errors.Is(err, ErrExhausted):
				if npins == 0 {
					t.Fatalf("seed %d step %d: ErrExhausted with nothing pinned: %v", seed, step, err)
				}
			default:
				t.Fatalf("seed %d step %d: put: %v", seed, step, err)
			}
		case op < 7: // get, sometimes keep the pin
			opts := GetOptions{}
			if hbmBlocks > 0 && r.IntN(3) == 0 {
				opts.Promote = LevelHBM
			}
			b, err := ts.Get(ctx, k, opts)
			if err != nil {
				if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrExhausted) {
					t.Fatalf("seed %d step %d: get: %v", seed, step, err)
				}
				continue
			}
			sv, ok := salt[i]
			if !ok || !bytes.Equal(b.Data, modelContent(i, k, sv, packed)) {
				t.Fatalf("seed %d step %d: get %d returned bytes that were never put (known=%v)", seed, step, i, ok)
			}
			if ds, isPacked := ts.dramSlot(k); isPacked {
				if b.Slot == ds {
					t.Fatalf("seed %d step %d: get %d of a compressed block returned the frame's slot", seed, step, i)
				}
				staged++
			}
			if r.IntN(2) == 0 && npins < dramBlocks {
				pinned[i] = append(pinned[i], b)
				npins++
			} else if err := ts.Release(k); err != nil {
				t.Fatal(err)
			}
		case op < 8: // release a held pin
			if bs := pinned[i]; len(bs) > 0 {
				b := bs[len(bs)-1]
				if !bytes.Equal(b.Data, modelContent(i, k, salt[i], packed)) {
					t.Fatalf("seed %d step %d: pinned view of %d changed", seed, step, i)
				}
				pinned[i] = bs[:len(bs)-1]
				npins--
				if err := ts.Release(k); err != nil {
					t.Fatal(err)
				}
			}
		case op < 9: // delete
			err := ts.Delete(ctx, k)
			if len(pinned[i]) > 0 {
				if !errors.Is(err, ErrPinned) {
					t.Fatalf("seed %d step %d: delete of pinned = %v", seed, step, err)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			delete(salt, i)
			if _, err := ts.Get(ctx, k, GetOptions{}); !errors.Is(err, ErrNotFound) {
				t.Fatalf("seed %d step %d: deleted block still readable: %v", seed, step, err)
			}
		default: // lookup agrees with get
			hs := []Hash{k.Hash}
			n, err := ts.Lookup(ctx, "m", AllLayers, hs, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, inModel := salt[i]
			if n == 1 && !inModel {
				t.Fatalf("seed %d step %d: lookup finds a block never put or deleted", seed, step)
			}
		}
	}
	for i, bs := range pinned {
		for range bs {
			ts.Release(testKey("m", i))
		}
	}
	ts.check(t)
	return staged
}

// TestGetAfterCorruptPromotion: when a Get finds the only (NVMe) copy
// corrupt while a put of the same block lands in DRAM, it serves the new
// DRAM copy rather than reporting a miss.
func TestGetAfterCorruptPromotion(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, 2, 4, 0)
	k0 := testKey("m", 0)
	for i := range 3 { // DRAM holds two: k0, the oldest, is evicted from it
		k := testKey("m", i)
		ts.Put(ctx, k, testLayout, content(k, testBlock, 0), PutOptions{Durable: true})
	}
	if ts.has(k0, inDRAM) || !ts.has(k0, inNVMe) {
		t.Fatal("setup: k0 should be on NVMe only")
	}
	ts.nvme.mu.Lock()
	ts.nvme.corruptNext[k0] = true
	ts.nvme.mu.Unlock()
	putDuringRead := false
	ts.nvme.beforeGet = func(k Key) {
		if k == k0 && !putDuringRead {
			putDuringRead = true
			// The promotion holds one DRAM slot; this put evicts a
			// persisted block for the other.
			if err := ts.Put(ctx, k0, testLayout, content(k0, testBlock, 0), PutOptions{}); err != nil {
				t.Errorf("put during the read: %v", err)
			}
		}
	}
	b, err := ts.Get(ctx, k0, GetOptions{})
	ts.nvme.beforeGet = nil
	if err != nil {
		t.Fatalf("Get: %v; want the copy the concurrent put landed", err)
	}
	if !putDuringRead || !bytes.Equal(b.Data, content(k0, testBlock, 0)) {
		t.Fatalf("put ran: %v; bytes equal: %v", putDuringRead, bytes.Equal(b.Data, content(k0, testBlock, 0)))
	}
	ts.Release(k0)
	ts.check(t)
}

// TestStoreConcurrent hammers one store from many goroutines under -race.
func TestStoreConcurrent(t *testing.T) {
	for _, packed := range []bool{false, true} {
		t.Run(fmt.Sprintf("packed=%v", packed), func(t *testing.T) { testStoreConcurrent(t, packed) })
	}
}

// testStoreConcurrent: with packed, DRAM is kept compressed and even keys'
// blocks compress, so concurrent readers share, and free, staging slots.
func testStoreConcurrent(t *testing.T, packed bool) {
	ctx := context.Background()
	ts := newTestStore(t, 16, 48, 4, func(c *Config) {
		if packed {
			c.Codecs = func(string) Codecs { return Codecs{DRAM: codec.Lossless, NVMe: codec.Lossless} }
		}
	})
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for range 400 {
				i := r.IntN(64)
				k := testKey("m", i)
				want := modelContent(i, k, 0, packed)
				switch r.IntN(5) {
				case 0, 1:
					if err := ts.Put(ctx, k, testLayout, want, PutOptions{Durable: r.IntN(8) == 0}); err != nil && !errors.Is(err, ErrExhausted) {
						errc <- err
						return
					}
				case 2, 3:
					opts := GetOptions{}
					if r.IntN(4) == 0 {
						opts.Promote = LevelHBM
					}
					b, err := ts.Get(ctx, k, opts)
					if err != nil {
						if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrExhausted) {
							errc <- err
							return
						}
						continue
					}
					if !bytes.Equal(b.Data, want) {
						errc <- fmt.Errorf("wrong bytes for %v", k)
						return
					}
					if err := ts.Release(k); err != nil {
						errc <- err
						return
					}
				case 4:
					if err := ts.Delete(ctx, k); err != nil && !errors.Is(err, ErrPinned) {
						errc <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	ts.check(t)
}

func TestStoreRefresh(t *testing.T) {
	ctx := context.Background()
	ts := newTestStore(t, 2, 4, 0)
	k0, k1 := testKey("m", 0), testKey("m", 1)
	if ok, err := ts.Refresh(ctx, k0, testLayout, PutOptions{}); ok || err != nil {
		t.Fatalf("Refresh of an uncached block = %v, %v", ok, err)
	}
	ts.Put(ctx, k0, testLayout, content(k0, testBlock, 0), PutOptions{})
	other := testLayout
	other.DType = codec.BF16
	if ok, _ := ts.Refresh(ctx, k0, other, PutOptions{}); ok {
		t.Fatal("Refresh with another layout must not count as cached")
	}
	if ok, err := ts.Refresh(ctx, k0, testLayout, PutOptions{Durable: true}); !ok || err != nil {
		t.Fatalf("Refresh of a cached block = %v, %v", ok, err)
	}
	if !ts.nvme.has(k0) {
		t.Fatal("a durable Refresh returned before the NVMe copy existed")
	}
	if _, err := ts.Refresh(ctx, Key{Namespace: "m"}, testLayout, PutOptions{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Refresh with a bad key = %v", err)
	}
	// Refresh makes k0 the most recent: a full DRAM evicts k1 first.
	ts.Put(ctx, k1, testLayout, content(k1, testBlock, 0), PutOptions{Durable: true})
	ts.Refresh(ctx, k0, testLayout, PutOptions{})
	ts.Put(ctx, testKey("m", 2), testLayout, content(testKey("m", 2), testBlock, 0), PutOptions{})
	levels := make([]Level, 2)
	ts.Lookup(ctx, "m", AllLayers, []Hash{k0.Hash}, levels[:1])
	ts.Lookup(ctx, "m", AllLayers, []Hash{k1.Hash}, levels[1:])
	if levels[0] != LevelDRAM || levels[1] != LevelNVMe {
		t.Fatalf("after Refresh(k0) and a put: k0 in %v, k1 in %v; want dram and nvme", levels[0], levels[1])
	}
	ts.check(t)
}
