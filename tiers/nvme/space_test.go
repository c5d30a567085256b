package nvme

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kvtier/kvtier/tiers"
)

// fakeDisk is a statfs seam: the free space it reports, or an error.
type fakeDisk struct {
	free atomic.Int64
	fail atomic.Bool
}

func (d *fakeDisk) option() Option {
	return func(c *config) {
		c.statfs = func(string) (int64, error) {
			if d.fail.Load() {
				return 0, syscall.EIO
			}
			return d.free.Load(), nil
		}
	}
}

// TestSpaceGuard drives the disk-space guard through the statfs seam (and a
// store write failing with ENOSPC): puts stop below the reserve with
// tiers.ErrNoSpace, never tiers.ErrFull; reads go on; deletes go on down
// to half the reserve; stats say so; writes resume by themselves.
func TestSpaceGuard(t *testing.T) {
	ctx := context.Background()
	l := testLayout(8)
	disk := &fakeDisk{}
	disk.free.Store(1 << 40)
	f := &faultStore{}
	tr := openTest(t, t.TempDir(), 1<<30, disk.option(), withFaults(f))
	reserve := tr.space.reserve()
	for i := range 4 {
		mustPut(t, tr, testKey("ns", i), l, block(l, uint64(i)))
	}
	steps := []struct {
		name    string
		free    int64 // -1: statfs fails
		op      func() error
		want    error // nil: success
		stopped bool
	}{
		{"put below the reserve", reserve - 1, func() error { return tr.Put(ctx, testKey("ns", 10), l, block(l, 10)) }, tiers.ErrNoSpace, true},
		{"get while stopped", reserve - 1, func() error { _, _, err := tr.Get(ctx, testKey("ns", 1), nil); return err }, nil, true},
		{"delete above half the reserve", reserve - 1, func() error { return tr.Delete(ctx, testKey("ns", 0)) }, nil, true},
		{"delete below half the reserve", reserve / 4, func() error { return tr.Delete(ctx, testKey("ns", 1)) }, tiers.ErrNoSpace, true},
		{"gc below its room", 0, func() error { return tr.CollectGarbage(ctx) }, tiers.ErrNoSpace, true},
		{"statfs fails", -1, func() error { return tr.Put(ctx, testKey("ns", 11), l, block(l, 11)) }, tiers.ErrNoSpace, true},
		{"just above the reserve: still stopped (hysteresis)", reserve + 1<<20, func() error { return tr.Put(ctx, testKey("ns", 12), l, block(l, 12)) }, tiers.ErrNoSpace, true},
		{"space back", 1 << 40, func() error { return tr.Put(ctx, testKey("ns", 13), l, block(l, 13)) }, nil, false},
		{"gc with room", 1 << 40, func() error { return tr.CollectGarbage(ctx) }, nil, false},
		{"badger write fails with ENOSPC", 1 << 40, func() error {
			f.writes.Store(0)
			f.failWrite.Store(1)
			f.failErr.Store(&storeWriteErr{fmt.Errorf("write vlog: %w", syscall.ENOSPC)})
			defer f.failWrite.Store(0)
			return tr.Put(ctx, testKey("ns", 14), l, block(l, 14))
		}, syscall.ENOSPC, true},
		{"next put finds room again", 1 << 40, func() error { return tr.Put(ctx, testKey("ns", 15), l, block(l, 15)) }, nil, false},
	}
	for _, s := range steps {
		disk.fail.Store(s.free < 0)
		disk.free.Store(max(s.free, 0))
		err := s.op()
		switch {
		case s.want == nil && err != nil:
			t.Fatalf("%s: %v", s.name, err)
		case s.want != nil && !errors.Is(err, s.want):
			t.Fatalf("%s: %v, want %v", s.name, err, s.want)
		case errors.Is(err, tiers.ErrFull):
			t.Fatalf("%s: %v wraps tiers.ErrFull: the Store would evict for nothing", s.name, err)
		}
		if st := tr.Stats(); st.WritesStopped != s.stopped {
			t.Fatalf("%s: WritesStopped %v, want %v", s.name, st.WritesStopped, s.stopped)
		}
	}
	mustGet(t, tr, testKey("ns", 13), l, block(l, 13))
}

// TestOpenFitsDisk: Open sizes Badger's files to the capacity, lowers a
// capacity the file system cannot hold, and refuses (no fault) a file
// system with less than half the reserve free.
func TestOpenFitsDisk(t *testing.T) {
	disk := &fakeDisk{}
	disk.free.Store(64 << 20)
	tr, err := Open(t.TempDir(), 1<<30, WithLogger(testLogger(t), 0), disk.option())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	st := tr.Stats()
	if st.CapacityBytes >= 64<<20 || st.CapacityBytes < 32<<20 {
		t.Errorf("capacity %d for a 1 GiB cap on 64 MiB free, want lowered to 32-64 MiB", st.CapacityBytes)
	}
	if tr.cfg.vlogFileSize != 16<<20 {
		t.Errorf("value log file size %d, want 16 MiB (a quarter of the file system)", tr.cfg.vlogFileSize)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}

	disk.free.Store(1 << 20)
	if _, err := Open(t.TempDir(), 1<<30, WithLogger(testLogger(t), 0), disk.option()); !errors.Is(err, tiers.ErrNoSpace) {
		t.Fatalf("Open with 1 MiB free: %v, want tiers.ErrNoSpace", err)
	}
	disk.fail.Store(true)
	if _, err := Open(t.TempDir(), 1<<30, WithLogger(testLogger(t), 0), disk.option()); !errors.Is(err, tiers.ErrNoSpace) {
		t.Fatalf("Open with statfs failing: %v, want tiers.ErrNoSpace", err)
	}
}

// TestReadOnlyUntilSpaceReturns: an existing store on a file system with
// too little space to open it for writing opens read-only (Badger writes
// nothing), serves its blocks with writes refused, and reopens for writing
// by itself once space returns.
func TestReadOnlyUntilSpaceReturns(t *testing.T) {
	ctx := context.Background()
	l := testLayout(64)
	dir := t.TempDir()
	disk := &fakeDisk{}
	disk.free.Store(1 << 40)
	retry := func(c *config) { c.spaceRetry = 10 * time.Millisecond }
	tr := openTest(t, dir, 1<<30, disk.option(), retry)
	reserve := tr.space.reserve()
	for i := range 8 {
		mustPut(t, tr, testKey("ro", i), l, block(l, uint64(i)))
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}

	disk.free.Store(reserve / 4)
	tr = openTest(t, dir, 1<<30, disk.option(), retry)
	if st := tr.Stats(); !st.WritesStopped || st.Blocks != 8 {
		t.Fatalf("stats %+v, want writes stopped and the 8 blocks", st)
	}
	for i := range 8 {
		mustGet(t, tr, testKey("ro", i), l, block(l, uint64(i)))
	}
	if err := tr.Put(ctx, testKey("ro", 100), l, block(l, 100)); !errors.Is(err, tiers.ErrNoSpace) {
		t.Fatalf("Put on a read-only store: %v, want tiers.ErrNoSpace", err)
	}
	if err := tr.Delete(ctx, testKey("ro", 1)); !errors.Is(err, tiers.ErrNoSpace) {
		t.Fatalf("Delete on a read-only store: %v, want tiers.ErrNoSpace", err)
	}
	time.Sleep(50 * time.Millisecond) // retries find no room yet
	if !tr.Stats().WritesStopped {
		t.Fatal("writes resumed without space")
	}

	disk.free.Store(1 << 40)
	if !waitFor(5*time.Second, func() bool { return !tr.Stats().WritesStopped }) {
		t.Fatal("the store was not reopened for writing after space returned")
	}
	mustPut(t, tr, testKey("ro", 100), l, block(l, 100))
	if err := tr.Delete(ctx, testKey("ro", 1)); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	tr = openTest(t, dir, 1<<30, disk.option())
	if st := tr.Stats(); st.Blocks != 8 || st.WritesStopped {
		t.Fatalf("after reopening: %+v, want 8 blocks and writes going on", st)
	}
	mustGet(t, tr, testKey("ro", 100), l, block(l, 100))
}
