package tiers_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/dram"
	"github.com/kvtier/kvtier/tiers/nvme"
)

var benchSizes = []int{64 << 10, 256 << 10, 1 << 20, 4 << 20}

// layoutOf returns an fp16 layout of n bytes (n a multiple of 4 KiB).
func layoutOf(n int) tiers.Layout {
	return tiers.Layout{DType: codec.FP16, Layers: 1, KVHeads: 8, HeadDim: 128, Tokens: uint32(n / (2 * 8 * 128 * 2))}
}

func benchKey(i int) tiers.Key {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i)*0x9E3779B97F4A7C15+7)
	binary.LittleEndian.PutUint64(b[8:], uint64(i))
	h, _ := tiers.HashFromBytes(b[:])
	return tiers.Key{Namespace: "bench", Hash: h, Layer: tiers.AllLayers}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// BenchmarkStoreDRAM measures Put (with eviction of the oldest block, as
// in steady state) and Get+Release (the reader copies the bytes out, as a
// client would) through the Store on the real DRAM arena. Gets read the
// most recently put half of the blocks: in the order they were put, as an
// engine loads a cached prefix chain (op=get), and in a fixed shuffled
// order (op=get-shuffled). The references
// are copies of the same bytes into and out of a rotating set of buffers as
// large as the arena, measured in the same run, so both sides miss the CPU
// caches alike: on the Go heap (ref=copyin, ref=copyout), and in a second
// DRAM arena's mapping (ref=arena-copyin, ref=arena-copyout), the same
// kind of memory as the store's, which isolates the store's own cost from
// page-size effects (the heap gets transparent huge pages; shared memory
// often does not). Target: put and get ≥ 0.8× the copy reference.
func BenchmarkStoreDRAM(b *testing.B) {
	for _, n := range benchSizes {
		l := layoutOf(n)
		window := max(16, (64<<20)/n) // blocks the arena holds: 64 MiB or more, beyond the caches
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(i * 7)
		}
		dst := make([]byte, n)
		pool := make([]byte, window*n)
		for i := range pool {
			pool[i] = byte(i)
		}
		slot := func(i int) []byte { o := (i % window) * n; return pool[o : o+n] }
		benchCopy(b, "copyin", n, func(i int) { copy(slot(i), src) })
		ref, err := dram.New(int64(window*n), dram.WithPrefault(true))
		if err != nil {
			b.Fatal(err)
		}
		shm := ref.Base()
		for i := range shm {
			shm[i] = byte(i)
		}
		shmSlot := func(i int) []byte { o := (i % window) * n; return shm[o : o+n] }
		benchCopy(b, "arena-copyin", n, func(i int) { copy(shmSlot(i), src) })
		// These references copy to and from the same slots in a random
		// order, to show what that pattern alone costs the memory system
		// (TLB misses and prefetch restarts on 4 KiB pages): puts over the
		// whole window, as when eviction frees slots out of address order,
		// and gets over half of it, as op=get-shuffled reads.
		perm := rand.New(rand.NewPCG(1, 2)).Perm(window)
		benchCopy(b, "arena-copyin-scattered", n, func(i int) { copy(shmSlot(perm[i%window]), src) })
		benchCopy(b, "arena-copyout", n, func(i int) { copy(dst, shmSlot(i)) })
		half := window / 2
		benchCopy(b, "arena-copyout-scattered", n, func(i int) { copy(dst, shmSlot(perm[i%half])) })
		ref.Close()
		// A full arena, so every timed put evicts, as in steady state.
		s := openFullDRAM(b, l, window, window, src)
		next := window
		b.Run(fmt.Sprintf("op=put/size=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				putBlock(b, s, next, l, src)
				next++
			}
		})
		benchCopy(b, "copyout", n, func(i int) { copy(dst, slot(i)) })
		recent := next - half // the oldest block the gets read
		shuffled := rand.New(rand.NewPCG(3, 4)).Perm(half)
		for _, order := range []struct {
			name  string
			block func(i int) int
		}{
			{"get", func(i int) int { return recent + i%half }},
			{"get-shuffled", func(i int) int { return recent + shuffled[i%half] }},
		} {
			b.Run(fmt.Sprintf("op=%s/size=%d", order.name, n), func(b *testing.B) {
				b.SetBytes(int64(n))
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					getCopy(b, s, benchKey(order.block(i)), dst)
					i++
				}
			})
		}
		s.Close()
	}
}

// BenchmarkStoreDRAMPaired measures gets as BenchmarkStoreDRAM does (in put
// order, the reader copying the bytes out of a full arena) but alternates
// batches of gets with batches of the copy-out reference inside one loop,
// timing each batch, so that a machine whose memory speed drifts from one
// second to the next (other tenants) slows both sides alike. A batch covers
// about 1 MiB of consecutive blocks, so that each side's copies stream from
// one block into the next as they would alone. It reports both sides' GB/s
// and their ratio (get/ref); ns/op covers a batch pair.
//
// Puts are not paired this way: a reference copy into memory leaves its
// destination's lines dirty in the cache, and the next batch would pay for
// writing them back, so the store (whose puts bypass the cache) would be
// billed for the reference's writes.
func BenchmarkStoreDRAMPaired(b *testing.B) {
	for _, n := range benchSizes {
		l := layoutOf(n)
		window := max(16, (64<<20)/n)
		batch := max(1, (1<<20)/n)
		dst := make([]byte, n)
		pool := make([]byte, window*n)
		for i := range pool {
			pool[i] = byte(i)
		}
		s := openFullDRAM(b, l, window, 2*window, pool[:n]) // a full arena, its slots reused once
		recent, half := 2*window-window/2, window/2
		b.Run(fmt.Sprintf("op=get/size=%d", n), func(b *testing.B) {
			got, copied := 0, 0
			get := func() {
				getCopy(b, s, benchKey(recent+got%half), dst)
				got++
			}
			ref := func() {
				o := (copied % window) * n
				copy(dst, pool[o:o+n])
				copied++
			}
			var tGet, tRef time.Duration
			ops := 0
			for b.Loop() {
				// Alternate which side goes first, so neither always
				// follows the other.
				refFirst := (ops/batch)%2 == 0
				for side := range 2 {
					t0 := time.Now()
					if (side == 0) == refFirst {
						for range batch {
							ref()
						}
						tRef += time.Since(t0)
					} else {
						for range batch {
							get()
						}
						tGet += time.Since(t0)
					}
				}
				ops += batch
			}
			gb := func(d time.Duration) float64 { return float64(ops*n) / d.Seconds() / 1e9 }
			b.ReportMetric(gb(tRef), "ref-GB/s")
			b.ReportMetric(gb(tGet), "get-GB/s")
			b.ReportMetric(float64(tRef)/float64(tGet), "get/ref")
		})
		s.Close()
	}
}

// openFullDRAM opens a Store over a prefaulted DRAM arena that holds
// window blocks of layout l, and puts blocks benchKey(0..fill-1) holding
// data. The caller closes it.
func openFullDRAM(b *testing.B, l tiers.Layout, window, fill int, data []byte) *tiers.Store {
	b.Helper()
	d, err := dram.New(int64(window)*l.Size(), dram.WithPrefault(true))
	if err != nil {
		b.Fatal(err)
	}
	s, err := tiers.Open(context.Background(), tiers.Config{DRAM: d, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	for i := range fill {
		putBlock(b, s, i, l, data)
	}
	return s
}

// putBlock puts data as block benchKey(i) with layout l.
func putBlock(b *testing.B, s *tiers.Store, i int, l tiers.Layout, data []byte) {
	if err := s.Put(context.Background(), benchKey(i), l, data, tiers.PutOptions{}); err != nil {
		b.Fatal(err)
	}
}

// getCopy is a reader's Get: it pins k, copies its bytes into dst and
// releases it.
func getCopy(b *testing.B, s *tiers.Store, k tiers.Key, dst []byte) {
	blk, err := s.Get(context.Background(), k, tiers.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	copy(dst, blk.Data)
	s.Release(k)
}

// TestHeapBudget checks the Go heap cost of the index: under 64 MiB plus
// about 200 bytes per indexed block, whatever the arena sizes. It indexes
// 50,000 blocks across a 1 GiB DRAM arena (mapped outside the Go heap) and
// an NVMe tier, and measures the live heap after a GC.
func TestHeapBudget(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("heap figures are meaningless under -race; skipped in -short")
	}
	ctx := context.Background()
	l := tiers.Layout{DType: codec.FP8, Layers: 1, KVHeads: 1, HeadDim: 128, Tokens: 16} // 4 KiB
	before := liveHeap()
	d, err := dram.New(1 << 30)
	if err != nil {
		t.Fatal(err)
	}
	n, err := nvme.Open(t.TempDir(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	s, err := tiers.Open(ctx, tiers.Config{DRAM: d, NVMe: n, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const first, blocks = 10_000, 50_000
	var atFirst uint64
	putChain(t, s, l, first, blocks, func() {
		waitWriteBehind(s)
		atFirst = liveHeap() - before
	})
	waitWriteBehind(s)
	used := liveHeap() - before
	budget := uint64(64<<20 + 200*blocks)
	st := s.Stats()
	perBlock := float64(used-atFirst) / (blocks - first)
	t.Logf("heap %.1f MiB for %d indexed blocks (%d in DRAM, %d on NVMe); %.0f bytes per added block (slope %d→%d); budget %.1f MiB",
		float64(used)/(1<<20), st.IndexedBlocks, st.Levels[0].Blocks, st.Levels[1].Blocks,
		perBlock, first, blocks, float64(budget)/(1<<20))
	if used > budget {
		t.Fatalf("heap %d bytes exceeds the budget of %d", used, budget)
	}
}

// benchCopy runs a copy reference of BenchmarkStoreDRAM: step(i) copies n
// bytes for iteration i.
func benchCopy(b *testing.B, name string, n int, step func(i int)) {
	b.Run(fmt.Sprintf("ref=%s/size=%d", name, n), func(b *testing.B) {
		b.SetBytes(int64(n))
		i := 0
		for b.Loop() {
			step(i)
			i++
		}
	})
}

// TestIndexHeap measures what the Store's index costs per block, without
// the NVMe tier (whose own index and Badger's memtables would blur the
// slope): the live heap added by blocks 64Ki to 192Ki of a chain in a DRAM
// arena, which lives outside the Go heap. At both points every shard's
// slab pages are full, so the slope is the average cost, not a page
// boundary. The DRAM arena keeps no index of its own, so this is the whole
// per-block cost of a DRAM block.
func TestIndexHeap(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("heap figures are meaningless under -race; skipped in -short")
	}
	ctx := context.Background()
	l := tiers.Layout{DType: codec.FP8, Layers: 1, KVHeads: 1, HeadDim: 128, Tokens: 16} // 4 KiB
	d, err := dram.New(1 << 30)                                                          // 256Ki blocks of 4 KiB
	if err != nil {
		t.Fatal(err)
	}
	s, err := tiers.Open(ctx, tiers.Config{DRAM: d, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const first, blocks = 64 << 10, 192 << 10
	var atFirst uint64
	putChain(t, s, l, first, blocks, func() { atFirst = liveHeap() })
	perBlock := float64(liveHeap()-atFirst) / (blocks - first)
	t.Logf("index: %.0f bytes of Go heap per DRAM block (slope %d→%d)", perBlock, first, blocks)
	if perBlock > 200 {
		t.Fatalf("index costs %.0f bytes per block; it was about 160", perBlock)
	}
}

// putChain puts blocks benchKey(0..n-1) of layout l as one chain (each the
// parent of the next), calling mark once the first first of them are in.
func putChain(t *testing.T, s *tiers.Store, l tiers.Layout, first, n int, mark func()) {
	t.Helper()
	data := make([]byte, l.Size())
	var parent tiers.Hash
	for i := range n {
		k := benchKey(i)
		if err := s.Put(context.Background(), k, l, data, tiers.PutOptions{Parent: parent}); err != nil {
			t.Fatal(err)
		}
		parent = k.Hash
		if i+1 == first {
			mark()
		}
	}
}

func waitWriteBehind(s *tiers.Store) {
	for s.Stats().WriteBehindWait > 0 {
		runtime.Gosched()
	}
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
