package prefetch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/dram"
)

// memNVMe is an in-memory persistent tier (Tier and Scanner). While gate
// is set, Get waits for it to close or for its context.
type memNVMe struct {
	mu     sync.Mutex
	blocks map[tiers.Key][]byte
	layout map[tiers.Key]tiers.Layout
	order  []tiers.Key
	gate   chan struct{}
	gets   int
}

func newMemNVMe() *memNVMe {
	return &memNVMe{blocks: map[tiers.Key][]byte{}, layout: map[tiers.Key]tiers.Layout{}}
}

func (m *memNVMe) Put(_ context.Context, k tiers.Key, l tiers.Layout, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.blocks[k]; !ok {
		m.order = append(m.order, k)
	}
	m.blocks[k], m.layout[k] = append([]byte(nil), data...), l
	return nil
}

func (m *memNVMe) Get(ctx context.Context, k tiers.Key, dst []byte) (tiers.Layout, []byte, error) {
	m.mu.Lock()
	gate := m.gate
	m.gets++
	m.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return tiers.Layout{}, dst, ctx.Err()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blocks[k]
	if !ok {
		return tiers.Layout{}, dst, tiers.ErrNotFound
	}
	return m.layout[k], append(dst, b...), nil
}

func (m *memNVMe) Delete(_ context.Context, k tiers.Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.blocks, k)
	return nil
}

func (m *memNVMe) Stats() tiers.TierStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return tiers.TierStats{Name: "mem-nvme", CapacityBytes: 1 << 30, Blocks: int64(len(m.blocks))}
}

func (m *memNVMe) Close() error { return nil }

func (m *memNVMe) Scan(ctx context.Context, fn func(tiers.Key, tiers.Layout, int64) error) error {
	m.mu.Lock()
	keys := append([]tiers.Key(nil), m.order...)
	m.mu.Unlock()
	for _, k := range keys {
		m.mu.Lock()
		b, ok := m.blocks[k]
		l := m.layout[k]
		m.mu.Unlock()
		if ok {
			if err := fn(k, l, int64(len(b))); err != nil {
				return err
			}
		}
	}
	return nil
}

var testLayout = tiers.Layout{DType: codec.FP16, Layers: 1, KVHeads: 2, HeadDim: 32, Tokens: 16}

func testHash(i int) tiers.Hash {
	b := make([]byte, 16)
	b[0], b[1], b[15] = byte(i), byte(i>>8), 0xa5
	h, _ := tiers.HashFromBytes(b)
	return h
}

// coldStore returns a store whose n blocks (namespace "ns", layer 0) are
// on its NVMe tier only, as after a restart.
func coldStore(t *testing.T, n int) (*tiers.Store, *memNVMe, []tiers.Hash) {
	return coldStoreCap(t, n, 8<<20)
}

// coldStoreCap is coldStore with a DRAM tier of dramCap bytes.
func coldStoreCap(t *testing.T, n int, dramCap int64) (*tiers.Store, *memNVMe, []tiers.Hash) {
	t.Helper()
	nv := newMemNVMe()
	hashes := make([]tiers.Hash, n)
	data := make([]byte, testLayout.Size())
	for i := range hashes {
		hashes[i] = testHash(i)
		data[0] = byte(i)
		if err := nv.Put(context.Background(), tiers.Key{Namespace: "ns", Hash: hashes[i]}, testLayout, data); err != nil {
			t.Fatal(err)
		}
	}
	arena, err := dram.New(dramCap, dram.WithChunkSize(64<<10), dram.WithHugePages(false))
	if err != nil {
		t.Fatal(err)
	}
	st, err := tiers.Open(context.Background(), tiers.Config{DRAM: arena, NVMe: nv})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, nv, hashes
}

func newPrefetcher(t *testing.T, cfg Config) *Prefetcher {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestArrivalStagesNVMeIntoDRAM(t *testing.T) {
	const n = 24
	st, _, hashes := coldStore(t, n)
	p := newPrefetcher(t, Config{Store: st, Workers: 3})
	ctx := context.Background()
	got, err := p.RequestArrived(ctx, RequestArrived{RequestID: "r", Namespace: "ns", Hashes: hashes, Target: tiers.LevelDRAM})
	if err != nil || got != n {
		t.Fatalf("RequestArrived = %d, %v; want %d blocks", got, err, n)
	}
	waitFor(t, "staging", func() bool { return p.Stats().Staged == n })
	for i, h := range hashes {
		k := tiers.Key{Namespace: "ns", Hash: h}
		b, err := st.Get(ctx, k, tiers.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if b.From != tiers.LevelDRAM || b.Data[0] != byte(i) {
			t.Errorf("block %d: from %v, first byte %d", i, b.From, b.Data[0])
		}
		_ = st.Release(k)
	}
	if s := p.Stats(); s.BytesMoved != n*testLayout.Size() || s.Misses != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestFinishedRequestCancelsStaging(t *testing.T) {
	st, nv, hashes := coldStore(t, 64)
	nv.gate = make(chan struct{}) // NVMe reads hang until cancelled
	p := newPrefetcher(t, Config{Store: st, Workers: 2})
	ctx := context.Background()
	if _, err := p.RequestArrived(ctx, RequestArrived{RequestID: "r", Namespace: "ns", Hashes: hashes, Target: tiers.LevelDRAM}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reads in flight", func() bool { nv.mu.Lock(); defer nv.mu.Unlock(); return nv.gets >= 2 })
	if err := p.RequestFinished(ctx, RequestFinished{RequestID: "r", Namespace: "ns"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cancellation", func() bool { return p.Stats().Cancelled == 64 })
	if s := p.Stats(); s.Staged != 0 || s.Requests != 0 {
		t.Fatalf("stats %+v", s)
	}
	// The workers are free again: a new request is served.
	close(nv.gate)
	if _, err := p.RequestArrived(ctx, RequestArrived{RequestID: "r2", Namespace: "ns", Hashes: hashes[:4], Target: tiers.LevelDRAM}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "second request", func() bool { return p.Stats().Staged == 4 })
	if err := p.RequestFinished(ctx, RequestFinished{RequestID: "r", Namespace: "ns"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("finishing twice: %v", err)
	}
}

func TestLayerPlanDeadline(t *testing.T) {
	st, nv, hashes := coldStore(t, 40)
	nv.gate = make(chan struct{}) // NVMe reads hang: staging holds both workers
	p := newPrefetcher(t, Config{Store: st, Workers: 2, LayerTime: 20 * time.Millisecond, Budget: 0.5})
	ctx := context.Background()
	if _, err := p.RequestArrived(ctx, RequestArrived{RequestID: "r", Namespace: "ns", Hashes: hashes, Target: tiers.LevelDRAM}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reads in flight", func() bool { nv.mu.Lock(); defer nv.mu.Unlock(); return nv.gets >= 2 })
	n, err := p.LayerAttention(ctx, LayerAttention{RequestID: "r", Namespace: "ns", Layer: 0, Step: 1, BlockIndexes: []uint32{3, 7, 11}, Scores: []float32{0.5, 0.3, 0.2}})
	if err != nil || n != 20 {
		t.Fatalf("LayerAttention = %d, %v; want 20 blocks planned", n, err)
	}
	// The plan waits for a worker past its deadline: dropped whole, late.
	time.Sleep(40 * time.Millisecond)
	close(nv.gate)
	waitFor(t, "late plan", func() bool { return p.Stats().Late == 20 })
	waitFor(t, "staging", func() bool { return p.Stats().Staged == 40 })
	if s := p.Stats(); s.Promoted != 0 || s.Hits != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestLayerPlanPromotesPredictedBlocks(t *testing.T) {
	st, _, hashes := coldStore(t, 40)
	p := newPrefetcher(t, Config{Store: st, Workers: 2, Budget: 0.1, Options: Options{Sink: -1, Recent: -1}})
	ctx := context.Background()
	if _, err := p.RequestArrived(ctx, RequestArrived{RequestID: "r", Namespace: "ns", Hashes: hashes, Target: tiers.LevelDRAM}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "staging", func() bool { return p.Stats().Staged == 40 })
	n, err := p.LayerAttention(ctx, LayerAttention{RequestID: "r", Namespace: "ns", Layer: 0, Step: 1, BlockIndexes: []uint32{30, 5, 17, 9}, Scores: []float32{0.4, 0.3, 0.2, 0.1}})
	if err != nil || n != 4 {
		t.Fatalf("LayerAttention = %d, %v", n, err)
	}
	a, err := p.lookup("ns", "r")
	if err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	sel := fmt.Sprint(a.sel)
	a.mu.Unlock()
	if sel != "[30 5 17 9]" {
		t.Fatalf("plan %s, want the reported blocks by mass", sel)
	}
	waitFor(t, "plan", func() bool { return p.Stats().Hits == 4 }) // already staged: hits
	for _, tc := range []LayerAttention{
		{RequestID: "nope", Namespace: "ns"},
		{RequestID: "r", Namespace: "ns", BlockIndexes: []uint32{40}, Scores: []float32{1}},
		{RequestID: "r", Namespace: "ns", Layer: -2},
		{RequestID: "r", Namespace: "ns", Layer: 999},
	} {
		if _, err := p.LayerAttention(ctx, tc); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", tc, err)
		}
	}
}

func TestLayerQueryRanksStagedBlocks(t *testing.T) {
	const n, qHeads, kvHeads, dim, hot = 16, 4, 2, 32, 9
	arena, err := dram.New(8<<20, dram.WithChunkSize(64<<10), dram.WithHugePages(false))
	if err != nil {
		t.Fatal(err)
	}
	st, err := tiers.Open(context.Background(), tiers.Config{DRAM: arena})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rng := rand.New(rand.NewPCG(9, 10))
	q := make([]float32, qHeads*dim)
	for i := range q {
		q[i] = float32(rng.NormFloat64())
	}
	ctx := context.Background()
	hashes := make([]tiers.Hash, n)
	data := make([]byte, testLayout.Size())
	for b := range n {
		hashes[b] = testHash(100 + b)
		for g := range kvHeads {
			for tok := range 16 {
				for c := range dim {
					v := float32(rng.NormFloat64()) * 0.5
					if b == hot && tok == 5 {
						v = 3 * q[g*(qHeads/kvHeads)*dim+c]
					}
					binary.LittleEndian.PutUint16(data[2*((g*16+tok)*dim+c):], codec.Float32ToHalf(v))
				}
			}
		}
		if err := st.Put(ctx, tiers.Key{Namespace: "ns", Hash: hashes[b]}, testLayout, data, tiers.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	p := newPrefetcher(t, Config{Store: st, Workers: 2, Budget: 3.0 / n})
	if _, err := p.RequestArrived(ctx, RequestArrived{RequestID: "r", Namespace: "ns", Hashes: hashes, Target: tiers.LevelDRAM}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "staging", func() bool { return p.Stats().Hits == n })
	got, err := p.LayerQuery(ctx, LayerQuery{RequestID: "r", Namespace: "ns", Layer: 0, Step: 1, QHeads: qHeads, KVHeads: kvHeads, HeadDim: dim, Query: q})
	if err != nil || got != 3 {
		t.Fatalf("LayerQuery = %d, %v; want 3 blocks", got, err)
	}
	a, _ := p.lookup("ns", "r")
	a.mu.Lock()
	sel := fmt.Sprint(a.sel)
	a.mu.Unlock()
	if want := fmt.Sprint([]uint32{0, n - 1, hot}); sel != want {
		t.Fatalf("plan %s, want %s (sink, recent, then the block whose key matches the query)", sel, want)
	}
	// A query of another shape is refused.
	if _, err := p.LayerQuery(ctx, LayerQuery{RequestID: "r", Namespace: "ns", Layer: 0, QHeads: 2, KVHeads: 2, HeadDim: dim, Query: q[:2*dim]}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("shape change: %v", err)
	}
}

func TestArrivalReplacesAndFallsBackToDRAM(t *testing.T) {
	st, nv, hashes := coldStore(t, 16)
	nv.gate = make(chan struct{})
	p := newPrefetcher(t, Config{Store: st, Workers: 2})
	ctx := context.Background()
	// The same id again replaces the first request, whose staging stops.
	if _, err := p.RequestArrived(ctx, RequestArrived{RequestID: "r", Namespace: "ns", Hashes: hashes, Target: tiers.LevelDRAM}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reads in flight", func() bool { nv.mu.Lock(); defer nv.mu.Unlock(); return nv.gets >= 2 })
	// HBM is asked for, but this store has none: blocks land in DRAM.
	if _, err := p.RequestArrived(ctx, RequestArrived{RequestID: "r", Namespace: "ns", Hashes: hashes[:8], Target: tiers.LevelHBM}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "first request cancelled", func() bool { return p.Stats().Cancelled == 16 })
	close(nv.gate)
	waitFor(t, "second request staged", func() bool { return p.Stats().Staged == 8 })
	if s := p.Stats(); s.Requests != 1 {
		t.Fatalf("stats %+v", s)
	}
	if _, err := p.RequestArrived(ctx, RequestArrived{RequestID: "x", Namespace: "ns", Target: tiers.LevelNVMe}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("NVMe target: %v", err)
	}
}

func TestCloseStopsTransfersInFlight(t *testing.T) {
	st, nv, hashes := coldStore(t, 16)
	nv.gate = make(chan struct{}) // never opened: reads end only by cancellation
	p, err := New(Config{Store: st, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.RequestArrived(context.Background(), RequestArrived{RequestID: "r", Namespace: "ns", Hashes: hashes, Target: tiers.LevelDRAM}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reads in flight", func() bool { nv.mu.Lock(); defer nv.mu.Unlock(); return nv.gets >= 2 })
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while NVMe reads hung")
	}
	if _, err := p.RequestArrived(context.Background(), RequestArrived{RequestID: "r2", Namespace: "ns", Target: tiers.LevelDRAM}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestEvictionByImportanceUnderPins: with the prefetcher as the store's
// victim source, a full DRAM drops the active request's least important
// unpinned block, not the least recently used one, and never a pinned one.
func TestEvictionByImportanceUnderPins(t *testing.T) {
	const n = 40
	st, _, hashes := coldStoreCap(t, n, 3<<16) // 48 blocks: the request fits
	data := make([]byte, testLayout.Size())
	p := newPrefetcher(t, Config{Store: st, Workers: 2, Budget: 0.25})
	ctx := context.Background()
	if _, err := p.RequestArrived(ctx, RequestArrived{RequestID: "r", Namespace: "ns", Hashes: hashes, Target: tiers.LevelDRAM}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "staging", func() bool { return p.Stats().Staged == n })
	// Blocks 20.. are hot; below, importance rises toward block 1, so the
	// coldest blocks are 19, 18, ... while the least recently used are
	// 1, 2, ... (plain LRU would evict those). Block 0, the sink, stays.
	idx, mass := []uint32{}, []float32{}
	for b := 1; b < n; b++ {
		idx = append(idx, uint32(b))
		if b >= 20 {
			mass = append(mass, 1)
		} else {
			mass = append(mass, float32(20-b)*1e-3)
		}
	}
	if _, err := p.LayerAttention(ctx, LayerAttention{RequestID: "r", Namespace: "ns", Layer: 0, Step: 1, BlockIndexes: idx, Scores: mass}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "plan", func() bool { s := p.Stats(); return s.Hits+s.Promoted >= 10 })
	// Pin the coldest block: block 18 must go first.
	pinned := tiers.Key{Namespace: "ns", Hash: hashes[19]}
	if _, err := st.Get(ctx, pinned, tiers.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	st.SetVictims(p)
	evictions := func() int64 {
		for _, l := range st.Stats().Levels {
			if l.Level == tiers.LevelDRAM {
				return l.Evictions
			}
		}
		return 0
	}
	before := evictions()
	for i := 0; evictions() == before; i++ {
		if i > 4*n {
			t.Fatal("DRAM never filled")
		}
		k := tiers.Key{Namespace: "other", Hash: testHash(1000 + i)}
		if err := st.Put(ctx, k, testLayout, data, tiers.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	from := func(b int) tiers.Level {
		k := tiers.Key{Namespace: "ns", Hash: hashes[b]}
		blk, err := st.Get(ctx, k, tiers.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_ = st.Release(k)
		return blk.From
	}
	// Reads that hit DRAM first (a read from NVMe would make room again).
	if got := from(1); got != tiers.LevelDRAM {
		t.Errorf("the least recently used block came from %v, want DRAM", got)
	}
	if got := from(19); got != tiers.LevelDRAM {
		t.Errorf("the pinned block came from %v, want DRAM", got)
	}
	if got := from(18); got != tiers.LevelNVMe {
		t.Errorf("the least important unpinned block came from %v, want NVMe (evicted)", got)
	}
	_ = st.Release(pinned)
}
