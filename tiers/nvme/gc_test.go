package nvme

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvtier/kvtier/tiers"
)

// TestGCReclaimsSpace deletes most of the data and checks that the
// directory's allocated size drops after a collection, and that the blocks
// that stayed (whose frames GC moved) are still served bit-exact.
func TestGCReclaimsSpace(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tr := openTest(t, dir, 1<<30)
	l := testLayout(256) // 128 KiB blocks, 8 per 1 MiB value log file
	const n, keep = 96, 8
	for i := range n {
		mustPut(t, tr, testKey("ns", i), l, block(l, uint64(i)))
	}
	if err := tr.Sync(); err != nil {
		t.Fatal(err)
	}
	for i := range n { // direct reads open every value log file
		mustGet(t, tr, testKey("ns", i), l, block(l, uint64(i)))
	}
	full, _ := diskUsage(dir)
	for i := range n {
		if i%(n/keep) == 0 {
			continue
		}
		if err := tr.Delete(ctx, testKey("ns", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.CollectGarbage(ctx); err != nil {
		t.Fatal(err)
	}
	after, _ := diskUsage(dir)
	live := int64(keep) * frameLen(l)
	t.Logf("disk usage: %d KiB with %d blocks, %d KiB after deleting all but %d (%d KiB live)",
		full>>10, n, after>>10, keep, live>>10)
	// Deleting 90% of the frames must give back at least half of the space.
	if after > full/2 {
		t.Fatalf("disk usage %d after GC, was %d with all blocks", after, full)
	}
	// Deleted files must not stay open: they would keep their blocks.
	if held := openDeletedFiles(dir); len(held) > 0 {
		t.Fatalf("deleted value log files still open: %v", held)
	}
	if s := tr.Stats(); s.ReservedBytes != max(after, s.UsedBytes) || s.UsedBytes != live {
		t.Fatalf("stats %+v, disk usage %d", s, after)
	}
	for i := 0; i < n; i += n / keep {
		mustGet(t, tr, testKey("ns", i), l, block(l, uint64(i)))
	}
	// And they survive a restart after the rewrite.
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	tr = openTest(t, dir, 1<<30)
	for i := 0; i < n; i += n / keep {
		mustGet(t, tr, testKey("ns", i), l, block(l, uint64(i)))
	}
}

// TestGCAfterEvictionBurst checks that an eviction burst larger than
// WithGCAfterBytes starts a collection without waiting for the timer.
func TestGCAfterEvictionBurst(t *testing.T) {
	ctx := context.Background()
	l := testLayout(256)
	fl := frameLen(l)
	tr := openTest(t, t.TempDir(), 1<<30, WithGCAfterBytes(16*fl))
	for i := range 48 {
		mustPut(t, tr, testKey("ns", i), l, block(l, uint64(i)))
	}
	if tr.gcRuns.Load() != 0 {
		t.Fatal("GC ran before anything was deleted")
	}
	for i := range 40 {
		if err := tr.Delete(ctx, testKey("ns", i)); err != nil {
			t.Fatal(err)
		}
	}
	if !waitFor(20*time.Second, func() bool { return tr.gcRuns.Load() > 0 }) {
		t.Fatal("no collection after the burst of deletes")
	}
	// Garbage added while a collection ran triggers the next one; what is
	// left below the trigger waits for the timer.
	if !waitFor(10*time.Second, func() bool { return tr.garbage.Load() < 16*fl }) {
		t.Fatalf("garbage counter %d after collections, trigger %d", tr.garbage.Load(), 16*fl)
	}
	for i := 40; i < 48; i++ {
		mustGet(t, tr, testKey("ns", i), l, block(l, uint64(i)))
	}
}

// TestGCTimer checks that the timer runs collections and that concurrent
// Puts are not failed by the memtable flush.
func TestGCTimer(t *testing.T) {
	ctx := context.Background()
	l := testLayout(64)
	tr := openTest(t, t.TempDir(), 1<<30, WithGCInterval(20*time.Millisecond))
	deadline := time.Now().Add(time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		k := testKey("ns", i%32)
		mustPut(t, tr, k, l, block(l, uint64(i)))
		if i%3 == 0 {
			if err := tr.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	if tr.gcRuns.Load() == 0 {
		t.Fatal("timer never ran a collection")
	}
	var n int64
	tr.Scan(ctx, func(tiers.Key, tiers.Layout, int64) error { n++; return nil })
	if s := tr.Stats(); s.Blocks != n {
		t.Fatalf("index has %d blocks, store %d", s.Blocks, n)
	}
}

// openDeletedFiles lists files under dir that this process holds open
// after they were deleted (Linux; nil elsewhere).
func openDeletedFiles(dir string) []string {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	var held []string
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, dir) && strings.HasSuffix(target, " (deleted)") {
			held = append(held, target)
		}
	}
	return held
}
