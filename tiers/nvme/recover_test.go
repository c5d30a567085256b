package nvme

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kvtier/kvtier/tiers"
)

// filesWith returns the files of dir (not below it) with extension ext.
func filesWith(t *testing.T, dir, ext string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+ext))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// filledStore writes n blocks into a fresh tier in a new directory and
// closes it (which flushes Badger's memtable into a table).
func filledStore(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	tr, err := Open(dir, 1<<30, smallOpts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	l := testLayout(256)
	for i := range n {
		mustPut(t, tr, testKey("ns", i), l, block(l, uint64(i)))
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestDamagedStore: a store Badger cannot open (a damaged table, a missing
// MANIFEST) is set aside by default and the tier starts empty, counted in
// TierStats.Quarantined; with RecoverFail Open fails as before. At most one
// quarantined copy is kept; a MANIFEST-less store's orphaned files are
// removed.
func TestDamagedStore(t *testing.T) {
	damage := []struct {
		name string
		do   func(t *testing.T, dir string)
		kept bool // the files are kept in QuarantineDir (else removed)
	}{
		{"table fails its checksum", func(t *testing.T, dir string) {
			ssts := filesWith(t, dir, ".sst")
			if len(ssts) == 0 {
				t.Fatal("no table written")
			}
			for _, f := range ssts {
				st, err := os.Stat(f)
				if err != nil {
					t.Fatal(err)
				}
				for off := st.Size() - 64; off < st.Size(); off += 7 {
					flipAt(t, f, off)
				}
			}
		}, true},
		{"MANIFEST deleted", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "MANIFEST")); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, d := range damage {
		t.Run(d.name+"/fail", func(t *testing.T) {
			dir := filledStore(t, 16)
			d.do(t, dir)
			tr, err := Open(dir, 1<<30, append(smallOpts(t), WithRecover(RecoverFail))...)
			if err == nil {
				_ = tr.Close()
				t.Fatal("Open of a damaged store succeeded with RecoverFail")
			}
			t.Logf("RecoverFail: %v", err)
		})
		t.Run(d.name+"/quarantine", func(t *testing.T) {
			dir := filledStore(t, 16)
			vlogs := filesWith(t, dir, ".vlog")
			d.do(t, dir)
			for round := range 2 { // the second quarantine replaces the first copy
				tr := openTest(t, dir, 1<<30)
				st := tr.Stats()
				if st.Quarantined != 1 || st.Blocks != 0 {
					t.Fatalf("round %d: stats %+v, want 1 quarantined and an empty tier", round, st)
				}
				l := testLayout(8)
				mustPut(t, tr, testKey("new", 1), l, block(l, 1))
				mustGet(t, tr, testKey("new", 1), l, block(l, 1))
				if err := tr.Close(); err != nil {
					t.Fatal(err)
				}
				q := filepath.Join(dir, QuarantineDir)
				_, err := os.Stat(q)
				switch {
				case d.kept && err != nil:
					t.Fatalf("round %d: no quarantined copy: %v", round, err)
				case !d.kept && err == nil:
					t.Fatalf("round %d: orphaned files kept in %s", round, q)
				}
				if d.kept {
					if sub, _ := os.ReadDir(q); len(sub) == 0 {
						t.Fatalf("round %d: quarantine directory empty", round)
					} else {
						for _, e := range sub {
							if e.IsDir() {
								t.Fatalf("round %d: quarantine holds a directory %s: more than one copy", round, e.Name())
							}
						}
					}
				} else {
					for _, v := range vlogs {
						if st, err := os.Stat(v); err == nil && st.Size() > 1<<16 {
							t.Fatalf("round %d: orphaned value log %s (%d bytes) left", round, v, st.Size())
						}
					}
				}
				d.do(t, dir) // damage the new store the same way
			}
		})
	}
}

// TestOpenDropsLostFrames: blocks whose frames lie past the end of a value
// log file that was cut short are dropped at Open: Scan (what the Store
// rebuilds its index from) never reports them, so Lookup cannot say they
// are cached.
func TestOpenDropsLostFrames(t *testing.T) {
	ctx := context.Background()
	const n = 32
	dir := filledStore(t, n)
	files := vlogFiles(t, dir)
	if len(files) < 3 {
		t.Fatalf("want several value log files, got %v", files)
	}
	st, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(files[0], st.Size()/2); err != nil {
		t.Fatal(err)
	}
	tr := openTest(t, dir, 1<<30)
	s := tr.Stats()
	if s.Corrupt == 0 || s.Blocks == n {
		t.Fatalf("stats %+v: no block dropped after cutting %s in half", s, files[0])
	}
	scanned := 0
	err = tr.Scan(ctx, func(k tiers.Key, l tiers.Layout, size int64) error {
		scanned++
		if _, _, err := tr.Get(ctx, k, nil); err != nil {
			t.Errorf("Scan reports %v, whose Get fails: %v", k, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if int64(scanned) != s.Blocks {
		t.Fatalf("Scan saw %d blocks, stats say %d", scanned, s.Blocks)
	}
	t.Logf("%d of %d blocks kept, %d dropped at Open", scanned, n, s.Corrupt)
	if errors.Is(err, tiers.ErrCorrupt) {
		t.Fatal(err)
	}
}
