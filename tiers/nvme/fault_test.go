package nvme

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
)

func TestWriteFaults(t *testing.T) {
	ctx := context.Background()
	l := testLayout(8)
	k := testKey("ns", 1)
	old, next := block(l, 1), block(l, 2)
	tests := []struct {
		name  string
		setup bool // put old under k before arming the fault
		op    func(tr *Tier) error
		want  []byte // what Get(k) returns afterwards; nil: not found
	}{
		{"put of a new block", false, func(tr *Tier) error { return tr.Put(ctx, k, l, next) }, nil},
		{"put replacing a block", true, func(tr *Tier) error { return tr.Put(ctx, k, l, next) }, old},
		{"delete", true, func(tr *Tier) error { return tr.Delete(ctx, k) }, old},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &faultStore{}
			tr := openTest(t, t.TempDir(), 1<<30, withFaults(f))
			if tc.setup {
				mustPut(t, tr, k, l, old)
			}
			before := accounting(tr)
			f.writes.Store(0)
			f.failWrite.Store(1)
			if err := tc.op(tr); !errors.Is(err, ErrStore) || !errors.Is(err, errInjected) {
				t.Fatalf("got %v, want the injected store error", err)
			}
			if s := accounting(tr); s != before {
				t.Fatalf("stats changed by a failed write: %+v → %+v", before, s)
			}
			if tc.want == nil {
				if _, _, err := tr.Get(ctx, k, nil); !errors.Is(err, tiers.ErrNotFound) {
					t.Fatalf("Get: %v, want ErrNotFound", err)
				}
			} else {
				mustGet(t, tr, k, l, tc.want)
			}
			// The next write goes through.
			mustPut(t, tr, k, l, next)
			mustGet(t, tr, k, l, next)
		})
	}
}

func TestReadFaults(t *testing.T) {
	ctx := context.Background()
	l := testLayout(8)
	k := testKey("ns", 1)
	d := block(l, 1)
	t.Run("I/O error is not corruption", func(t *testing.T) {
		f := &faultStore{}
		tr := openTest(t, t.TempDir(), 1<<30, withFaults(f))
		mustPut(t, tr, k, l, d)
		f.failRead.Store(f.reads.Load() + 1)
		_, got, err := tr.Get(ctx, k, []byte("dst"))
		if !errors.Is(err, errInjected) || tiers.IsCorrupt(err) || string(got) != "dst" {
			t.Fatalf("Get = %q, %v; want the injected error and dst unchanged", got, err)
		}
		if s := tr.Stats(); s.Corrupt != 0 || s.Blocks != 1 {
			t.Fatalf("stats %+v", s)
		}
		mustGet(t, tr, k, l, d)
	})
	t.Run("a damaged read that reads back intact is served", func(t *testing.T) {
		f := &faultStore{}
		tr := openTest(t, t.TempDir(), 1<<30, withFaults(f))
		mustPut(t, tr, k, l, d)
		f.flipFrom.Store(f.reads.Load() + 1)
		f.flipTo.Store(f.reads.Load() + 1)
		mustGet(t, tr, k, l, d)
		if s := tr.Stats(); s.Corrupt != 0 || s.Blocks != 1 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("flipped byte is a counted, removed miss", func(t *testing.T) {
		dir := t.TempDir()
		f := &faultStore{}
		tr := openTest(t, dir, 1<<30, withFaults(f))
		mustPut(t, tr, k, l, d)
		mustPut(t, tr, testKey("ns", 2), l, block(l, 2))
		f.flipFrom.Store(f.reads.Load() + 1)
		f.flipTo.Store(math.MaxInt64)
		_, got, err := tr.Get(ctx, k, []byte("dst"))
		if !errors.Is(err, tiers.ErrCorrupt) || !errors.Is(err, codec.ErrCorrupt) || string(got) != "dst" {
			t.Fatalf("Get = %d bytes, %v; want ErrCorrupt and dst unchanged", len(got), err)
		}
		if s := tr.Stats(); s.Corrupt != 1 || s.Blocks != 1 || s.UsedBytes != frameLen(l) {
			t.Fatalf("stats %+v, want 1 corrupt and 1 block left", s)
		}
		if _, _, err := tr.Get(ctx, k, nil); !errors.Is(err, tiers.ErrNotFound) {
			t.Fatalf("second Get: %v, want ErrNotFound", err)
		}
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
		tr = openTest(t, dir, 1<<30)
		if _, _, err := tr.Get(ctx, k, nil); !errors.Is(err, tiers.ErrNotFound) {
			t.Fatalf("Get after reopen: %v, want ErrNotFound", err)
		}
		mustGet(t, tr, testKey("ns", 2), l, block(l, 2))
	})
}

// vlogFiles returns dir's value log files in file-id order.
func vlogFiles(t *testing.T, dir string) []string {
	fs, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(fs) // zero-padded ids
	return fs
}

// locate returns the file and offset holding data.
func locate(t *testing.T, files []string, data []byte) (string, int) {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, data[:256]); i >= 0 {
			return f, i
		}
	}
	t.Fatal("block not found in any value log file")
	return "", 0
}

func flipAt(t *testing.T, path string, off int64) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

// TestDiskCorruption damages the value log files of a closed tier, reopens
// it and checks that no read hands out damaged bytes.
func TestDiskCorruption(t *testing.T) {
	ctx := context.Background()
	l := testLayout(256) // 128 KiB blocks, ~8 per value log file
	const n = 32
	tests := []struct {
		name    string
		damage  func(t *testing.T, files []string) (hit []int)
		corrupt []int // blocks that must read as ErrCorrupt
	}{
		{"payload byte", func(t *testing.T, files []string) []int {
			f, off := locate(t, files, block(l, 5))
			flipAt(t, f, int64(off)+l.Size()/2)
			return []int{5}
		}, []int{5}},
		{"frame header byte", func(t *testing.T, files []string) []int {
			f, off := locate(t, files, block(l, 12))
			flipAt(t, f, int64(off)-codec.HeaderLen+10) // in the layout
			return []int{12}
		}, []int{12}},
		{"scattered bytes in every file", func(t *testing.T, files []string) []int {
			for _, f := range files {
				st, err := os.Stat(f)
				if err != nil {
					t.Fatal(err)
				}
				for off := int64(4099); off < st.Size(); off += 65521 {
					flipAt(t, f, off)
				}
			}
			return nil
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tr, err := Open(dir, 1<<30, smallOpts(t)...)
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				mustPut(t, tr, testKey("ns", i), l, block(l, uint64(i)))
			}
			if err := tr.Close(); err != nil {
				t.Fatal(err)
			}
			files := vlogFiles(t, dir)
			if len(files) < 3 {
				t.Fatalf("want several value log files, got %v", files)
			}
			// Blocks in the last file may also be lost: Badger checks that
			// file's entries on open and truncates it at the first bad one.
			last := files[len(files)-1]
			inLast := map[int]bool{}
			for i := range n {
				if f, _ := locate(t, files, block(l, uint64(i))); f == last {
					inLast[i] = true
				}
			}
			tc.damage(t, files)

			tr = openTest(t, dir, 1<<30)
			var bad int
			for i := range n {
				d := block(l, uint64(i))
				gl, got, err := tr.Get(ctx, testKey("ns", i), nil)
				switch {
				case err == nil:
					if gl != l || !bytes.Equal(got, d) {
						t.Fatalf("block %d: Get returned damaged data", i)
					}
					if slices.Contains(tc.corrupt, i) {
						t.Fatalf("block %d: damaged block was served", i)
					}
				case errors.Is(err, tiers.ErrCorrupt) || errors.Is(err, tiers.ErrNotFound):
					bad++
					if slices.Contains(tc.corrupt, i) && !errors.Is(err, tiers.ErrCorrupt) {
						t.Fatalf("block %d: %v, want ErrCorrupt", i, err)
					}
					if tc.corrupt != nil && !slices.Contains(tc.corrupt, i) && !inLast[i] {
						t.Fatalf("block %d: intact block lost: %v", i, err)
					}
					// A corrupt block is gone afterwards.
					if _, _, err := tr.Get(ctx, testKey("ns", i), nil); !errors.Is(err, tiers.ErrNotFound) {
						t.Fatalf("block %d: second Get: %v, want ErrNotFound", i, err)
					}
				default:
					t.Fatalf("block %d: unexpected error %v", i, err)
				}
			}
			s := tr.Stats()
			t.Logf("%d of %d blocks unreadable, %d counted corrupt", bad, n, s.Corrupt)
			if bad == 0 || s.Corrupt == 0 {
				t.Fatalf("damage went unnoticed: %d unreadable, stats %+v", bad, s)
			}
			if s.Blocks != int64(n-bad) {
				t.Fatalf("stats %+v, want %d blocks", s, n-bad)
			}
		})
	}
}

// TestTruncatedValueLog cuts a value log file under an open tier. A direct
// read sees a short file: corrupt, and the tier is poisoned (Badger's GC
// would fault on that file). Through Badger's mapping the read faults
// (SIGBUS), which must come back as a corrupt block, not a crash: a fault in
// the payload (inside the tier's decode) is clean; one in Badger's entry
// header leaves Badger's file lock held: poisoned. Poisoned, the tier stops
// GC and Close gives up after a bounded wait.
func TestTruncatedValueLog(t *testing.T) {
	tests := []struct {
		name         string
		direct       bool
		wantPoisoned []bool // after reading block 0, block 1
	}{
		{"direct reads", true, []bool{true, true}},
		{"reads through the mapping", false, []bool{false, true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.direct && !directIOSupported {
				t.Skip("no direct I/O here")
			}
			ctx := context.Background()
			dir := t.TempDir()
			tr, err := Open(dir, 1<<30, append(smallOpts(t), WithDirectReads(tc.direct))...)
			if err != nil {
				t.Fatal(err)
			}
			l := testLayout(256)
			for i := range 16 {
				mustPut(t, tr, testKey("ns", i), l, block(l, uint64(i)))
			}
			if err := tr.Sync(); err != nil {
				t.Fatal(err)
			}
			files := vlogFiles(t, dir)
			if err := os.Truncate(files[0], 8192); err != nil { // inside block 0's payload
				t.Fatal(err)
			}
			for i, want := range tc.wantPoisoned {
				if _, _, err := tr.Get(ctx, testKey("ns", i), nil); !errors.Is(err, tiers.ErrCorrupt) {
					t.Fatalf("Get block %d from a truncated file: %v, want ErrCorrupt", i, err)
				}
				if tr.poisoned.Load() != want {
					t.Fatalf("block %d: poisoned = %v", i, !want)
				}
			}
			if s := tr.Stats(); s.Corrupt != 2 || s.Blocks != 14 {
				t.Fatalf("stats %+v", s)
			}
			mustGet(t, tr, testKey("ns", 15), l, block(l, 15))
			poisoned := tr.poisoned.Load()
			if err := tr.CollectGarbage(ctx); poisoned != errors.Is(err, ErrStore) {
				t.Fatalf("CollectGarbage: %v (poisoned %v)", err, poisoned)
			}
			defer func(d time.Duration) { poisonedCloseWait = d }(poisonedCloseWait)
			poisonedCloseWait = 100 * time.Millisecond
			start := time.Now()
			err = tr.Close()
			t.Logf("Close: %v (%v)", err, time.Since(start).Round(time.Millisecond))
			if !poisoned && err != nil {
				t.Fatal(err)
			}
		})
	}
}
