package tierbench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/kvtier/kvtier/benchmarks/gpulink"
	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/dram"
	"github.com/kvtier/kvtier/tiers/nvme"
)

// promote measures NVMe→DRAM promotion through the codec at block size n
// for one codec mode: the Store over a DRAM arena of only Parallel+4
// blocks and an NVMe tier whose frames are encoded with mode, holding a
// data set of min(cfg.NVMeSetBytes, 256 MiB); a Get of a block that is
// only on NVMe reads its frame (direct read), decodes it into a fresh
// DRAM slot (evicting another) and the reader copies it out. Cycling over
// the set in order, every Get promotes; in random order a few find their
// block still in DRAM (Row.Note gives the share). The reference is the
// O_DIRECT read of n bytes from a raw file in the same directory.
func (r *Runner) promote(ctx context.Context, n int, mode string) error {
	m, err := codec.ParseMode(mode)
	if err != nil {
		return fmt.Errorf("%w: codec mode %q: %w", ErrInvalid, mode, err)
	}
	l, err := gpulink.LayoutFor(int64(n))
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(r.cfg.Dir, "kvtier-tierbench-promote-")
	if err != nil {
		return fmt.Errorf("tierbench: %w", err)
	}
	defer os.RemoveAll(dir)
	par := r.cfg.Parallel
	nv, err := nvme.Open(filepath.Join(dir, "tier"), max(freeBytes(r.cfg.Dir), 1<<30), nvme.WithDirectReads(true),
		nvme.WithGCInterval(0), nvme.WithGCAfterBytes(0), nvme.WithLogger(quietLogger(), slog.LevelError))
	if err != nil {
		return fmt.Errorf("tierbench: nvme tier: %w", err)
	}
	arenaBytes := int64(par+4) * l.Size()
	arena, err := dram.New(max(arenaBytes, 4<<20), dram.WithPrefault(true))
	if err != nil {
		nv.Close()
		return fmt.Errorf("tierbench: dram arena: %w", err)
	}
	s, err := tiers.Open(ctx, tiers.Config{DRAM: arena, NVMe: nv, Logger: quietLogger(),
		Codecs: func(string) tiers.Codecs { return tiers.Codecs{DRAM: codec.Raw, NVMe: m} }})
	if err != nil {
		arena.Close()
		nv.Close()
		return fmt.Errorf("tierbench: store: %w", err)
	}
	defer s.Close()
	raw, err := openDirect(filepath.Join(dir, "raw"))
	if err != nil {
		return err
	}
	defer raw.Close()
	bufs := make([][]byte, par)
	for w := range bufs {
		b, free, err := directBuffer(n)
		if err != nil {
			return err
		}
		defer free()
		bufs[w] = b
	}
	// KV-like data (small values, so the lossy modes have work to do).
	src := make([]byte, n)
	for i := 0; i+1 < n; i += 2 {
		src[i], src[i+1] = byte(i*7), 0x3c // fp16 values near 1
	}
	copy(bufs[0], src)
	k := max(64, int(min(r.cfg.NVMeSetBytes, 256<<20)/int64(n)))
	keys := make([]tiers.Key, k)
	for i := range keys {
		keys[i] = benchKey("promote", i)
		if err := s.Put(ctx, keys[i], l, src, tiers.PutOptions{}); err != nil {
			return fmt.Errorf("tierbench: filling the store: %w", err)
		}
		if _, err := raw.WriteAt(bufs[0][:n], int64(i)*int64(n)); err != nil {
			return fmt.Errorf("tierbench: writing the raw file: %w", err)
		}
	}
	if err := datasync(raw); err != nil {
		return err
	}
	dst := make([][]byte, par)
	for w := range dst {
		dst[w] = make([]byte, n)
	}
	for _, c := range r.cfg.cells() {
		if c.op != OpRead {
			continue
		}
		var gets, fromDRAM atomic.Int64
		row := Row{Tier: "promote-" + mode, Op: OpRead, Order: c.order, Parallel: c.parallel, BlockBytes: n,
			Ref: "raw-odirect-read", DirectIO: true, Capacity: arenaBytes}
		at := order(c.order, k, c.parallel, uint64(n))
		p := Pair{Batch: max(1, (4<<20)/n)}
		p.Tier.Op = func(w, i int) error {
			key := keys[at(w, i)]
			blk, err := s.Get(ctx, key, tiers.GetOptions{})
			if err != nil {
				return err
			}
			gets.Add(1)
			if blk.From == tiers.LevelDRAM {
				fromDRAM.Add(1)
			}
			copy(dst[w], blk.Data)
			return s.Release(key)
		}
		p.Ref.Op = func(w, i int) error {
			_, err := raw.ReadAt(bufs[w][:n], int64(at(w, i))*int64(n))
			return err
		}
		if err := r.measure(ctx, row, p); err != nil {
			return err
		}
		last := &r.rows[len(r.rows)-1]
		last.Note = fmt.Sprintf("codec %s; %.1f%% of gets found the block still in DRAM", mode,
			100*float64(fromDRAM.Load())/float64(max(gets.Load(), 1)))
	}
	return nil
}
