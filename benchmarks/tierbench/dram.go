package tierbench

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/kvtier/kvtier/benchmarks/gpulink"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/dram"
)

// dram measures the DRAM tier at block size n: the Store over a prefaulted
// DRAM arena of cfg.DRAMBytes, full, so that every put evicts the oldest
// block as in steady state. Reads pin a block, copy it out and release it,
// as a reader does; they visit the most recently put half of the arena.
// The reference is memcpy of the same bytes into and out of a second arena
// mapping of the same size and kind (so both sides see the same page sizes
// and miss the caches alike), block for block.
func (r *Runner) dram(ctx context.Context, n int) error {
	l, err := gpulink.LayoutFor(int64(n))
	if err != nil {
		return err
	}
	window := int(r.cfg.DRAMBytes / int64(n))
	arena, err := dram.New(r.cfg.DRAMBytes, dram.WithPrefault(true))
	if err != nil {
		return fmt.Errorf("tierbench: dram arena: %w", err)
	}
	s, err := tiers.Open(ctx, tiers.Config{DRAM: arena, Logger: quietLogger()})
	if err != nil {
		arena.Close()
		return fmt.Errorf("tierbench: store: %w", err)
	}
	defer s.Close()
	refArena, err := dram.New(r.cfg.DRAMBytes, dram.WithPrefault(true))
	if err != nil {
		return fmt.Errorf("tierbench: reference arena: %w", err)
	}
	defer refArena.Close()
	pool := refArena.Base()
	fill(pool, 1)
	src := make([]byte, n)
	fill(src, 2)
	for i := range window {
		if err := s.Put(ctx, benchKey("dram", i), l, src, tiers.PutOptions{}); err != nil {
			return fmt.Errorf("tierbench: filling the arena: %w", err)
		}
	}
	half := window / 2
	recent := make([]tiers.Key, half) // the blocks reads visit, in put order
	for j := range recent {
		recent[j] = benchKey("dram", window-half+j)
	}
	dst := make([][]byte, r.cfg.Parallel)
	for w := range dst {
		dst[w] = make([]byte, n)
	}
	var next atomic.Int64
	next.Store(int64(window))
	for _, c := range r.cfg.cells() {
		row := Row{Tier: TierDRAM, Op: c.op, Order: c.order, Parallel: c.parallel, BlockBytes: n,
			Ref: "memcpy", Capacity: r.cfg.DRAMBytes}
		var p Pair
		switch c.op {
		case OpRead:
			at := order(c.order, half, c.parallel, uint64(n))
			p.Tier.Op = func(w, i int) error {
				k := recent[at(w, i)]
				blk, err := s.Get(ctx, k, tiers.GetOptions{})
				if err != nil {
					return err
				}
				copy(dst[w], blk.Data)
				return s.Release(k)
			}
			p.Ref.Op = func(w, i int) error {
				o := (window - half + at(w, i)) * n
				copy(dst[w], pool[o:o+n])
				return nil
			}
		case OpWrite:
			row.Note = "puts evict the oldest block; the reference copies into the next slot of its arena"
			p.Tier.Op = func(w, i int) error {
				return s.Put(ctx, benchKey("dram", int(next.Add(1))), l, src, tiers.PutOptions{})
			}
			at := order(Seq, window, c.parallel, uint64(n))
			p.Ref.Op = func(w, i int) error {
				o := at(w, i) * n
				copy(pool[o:o+n], src)
				return nil
			}
		}
		if err := r.measure(ctx, row, p); err != nil {
			return err
		}
	}
	return nil
}
