package tierbench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/kvtier/kvtier/benchmarks/gpulink"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/nvme"
)

// nvme measures the NVMe tier at block size n in a fresh directory under
// cfg.Dir. Reads: the tier's direct reads (O_DIRECT, its default) of a
// data set of cfg.NVMeSetBytes, against O_DIRECT preads of the same sizes
// from a raw file of the same size in the same directory, so no byte of
// either side comes from the page cache. Writes: tier puts (Badger's
// value log, through the page cache) ending each batch with the tier's
// Sync, against O_DIRECT pwrites of the same sizes ending each batch with
// fdatasync: both sides' bytes are on the device when a batch ends.
func (r *Runner) nvme(ctx context.Context, n int) error {
	l, err := gpulink.LayoutFor(int64(n))
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(r.cfg.Dir, "kvtier-tierbench-")
	if err != nil {
		return fmt.Errorf("tierbench: %w", err)
	}
	defer os.RemoveAll(dir)
	capacity := freeBytes(r.cfg.Dir)
	tr, err := nvme.Open(filepath.Join(dir, "tier"), max(capacity, 1<<30), nvme.WithDirectReads(true),
		nvme.WithGCInterval(0), nvme.WithGCAfterBytes(0), nvme.WithLogger(quietLogger(), slog.LevelError))
	if err != nil {
		return fmt.Errorf("tierbench: nvme tier: %w", err)
	}
	defer tr.Close()
	raw, err := openDirect(filepath.Join(dir, "raw"))
	if err != nil {
		return err
	}
	defer raw.Close()
	rawW, err := openDirect(filepath.Join(dir, "raw-write"))
	if err != nil {
		return err
	}
	defer rawW.Close()

	par := r.cfg.Parallel
	bufs := make([][]byte, par) // aligned, one per worker
	for w := range bufs {
		b, free, err := directBuffer(n)
		if err != nil {
			return err
		}
		defer free()
		fill(b, 3)
		bufs[w] = b
	}
	src := bufs[0][:n:n]
	k := max(16, int(r.cfg.NVMeSetBytes/int64(n)))
	for i := range k {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := tr.Put(ctx, benchKey("nvme", i), l, src); err != nil {
			return fmt.Errorf("tierbench: filling the nvme tier: %w", err)
		}
		if _, err := raw.WriteAt(src, int64(i)*int64(n)); err != nil {
			return fmt.Errorf("tierbench: writing the raw file: %w", err)
		}
	}
	if err := errors.Join(tr.Sync(), datasync(raw)); err != nil {
		return fmt.Errorf("tierbench: sync: %w", err)
	}
	keys := make([]tiers.Key, k)
	for i := range keys {
		keys[i] = benchKey("nvme", i)
	}
	dst := make([][]byte, par)
	for w := range dst {
		dst[w] = make([]byte, 0, n)
	}
	var next atomic.Int64
	next.Store(int64(k))
	for _, c := range r.cfg.cells() {
		row := Row{Tier: TierNVMe, Op: c.op, Order: c.order, Parallel: c.parallel, BlockBytes: n,
			Capacity: capacity}
		var p Pair
		switch c.op {
		case OpRead:
			row.Ref, row.DirectIO = "raw-odirect-read", true
			row.Note = "O_DIRECT on both sides"
			at := order(c.order, k, c.parallel, uint64(n))
			p.Tier.Op = func(w, i int) error {
				_, out, err := tr.Get(ctx, keys[at(w, i)], dst[w][:0])
				if err == nil && len(out) != n {
					err = fmt.Errorf("tierbench: nvme get: %d bytes, want %d", len(out), n)
				}
				return err
			}
			p.Ref.Op = func(w, i int) error {
				_, err := raw.ReadAt(bufs[w][:n], int64(at(w, i))*int64(n))
				return err
			}
		case OpWrite:
			row.Ref = "raw-odirect-write"
			row.Note = "tier: page-cache writes + Sync per batch; reference: O_DIRECT + fdatasync per batch"
			at := order(Seq, k, c.parallel, uint64(n))
			p.Tier.Op = func(w, i int) error {
				return tr.Put(ctx, benchKey("nvme", int(next.Add(1))), l, src)
			}
			p.Tier.Flush = func(int) error { return tr.Sync() }
			p.Ref.Op = func(w, i int) error {
				_, err := rawW.WriteAt(bufs[w][:n], int64(at(w, i))*int64(n))
				return err
			}
			p.Ref.Flush = func(int) error { return datasync(rawW) }
		}
		// Whole batches of about 4 MiB, so a sync is paid per 4 MiB.
		p.Batch = max(1, (4<<20)/n)
		if err := r.measure(ctx, row, p); err != nil {
			return err
		}
	}
	return nil
}
