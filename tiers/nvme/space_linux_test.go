//go:build linux

package nvme

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvtier/kvtier/tiers"
)

// mountTmpfs mounts a tmpfs of size bytes under a fresh temporary directory
// and returns its path; it skips the test when that is not possible (not
// root, no mount permission).
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: mounting a small tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+itoa(size)); err != nil {
		t.Skipf("skipped: cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func itoa(n int64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// incompressible returns n random bytes.
func incompressible(r *rand.Rand, n int64) []byte {
	var seed [32]byte
	for i := 0; i < len(seed); i += 8 {
		binary.LittleEndian.PutUint64(seed[i:], r.Uint64())
	}
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(seed).Read(b)
	return b
}

// TestDiskFullTmpfs reproduces issue 11 fault 1 on a real file system: a
// 64 MiB tmpfs under a 16 MiB tier fed 1 MiB incompressible blocks, the
// oldest deleted whenever the tier is full (as the Store evicts), then the
// rest of the file system taken by another file. Before the fix Badger's
// value log write hit SIGBUS once the tmpfs filled and the test binary
// died; now puts are refused with tiers.ErrNoSpace, what was stored stays
// readable, the tier reopens on the full file system, and writes resume
// once space is freed (the store reopened read-only on the full file
// system goes back to writing by itself). A cap larger than the file
// system is lowered.
func TestDiskFullTmpfs(t *testing.T) {
	const fsSize = 64 << 20
	fs := mountTmpfs(t, fsSize)
	ctx := context.Background()
	l := testLayout(2048) // 1 MiB
	r := rand.New(rand.NewPCG(1, 2))
	dir := filepath.Join(fs, "nvme")
	opts := []Option{WithLogger(testLogger(t), 0), func(c *config) { c.spaceRetry = 50 * time.Millisecond }}

	t.Run("cap larger than the file system", func(t *testing.T) {
		tr, err := Open(filepath.Join(fs, "big"), 1<<30, opts...)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer func() { _ = tr.Close() }()
		if c := tr.Stats().CapacityBytes; c >= fsSize {
			t.Fatalf("capacity %d not lowered below the %d-byte file system", c, fsSize)
		}
	})

	tr, err := Open(dir, 16<<20, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer func() { _ = tr.Close() }()
	var live []int // keys stored, oldest first
	put := func(i int) error {
		for {
			err := tr.Put(ctx, testKey("ns", i), l, incompressible(r, l.Size()))
			if !errors.Is(err, tiers.ErrFull) || len(live) == 0 {
				return err
			}
			if err := tr.Delete(ctx, testKey("ns", live[0])); err != nil {
				return err
			}
			live = live[1:]
		}
	}
	i := 0
	for ; i < 100; i++ {
		if err := put(i); err != nil {
			t.Fatalf("put %d with the file system not full: %v", i, err)
		}
		live = append(live, i)
	}
	t.Logf("100 puts of 1 MiB through a 16 MiB tier: %d blocks held, %+v", len(live), tr.Stats())

	// Another program takes the rest of the file system.
	filler := filepath.Join(fs, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := incompressible(r, 1<<20)
	var filled int64
	for {
		n, err := f.Write(chunk)
		filled += int64(n)
		if err != nil {
			break // ENOSPC
		}
	}
	// It leaves 3 MiB, less than the tier's reserve: a disk nearly full
	// because of someone else. (Badger's background flushes need a few
	// MiB; with none at all they fault whatever the tier does.)
	if err := f.Truncate(filled - 3<<20); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	var refused error
	for ; i < 300 && refused == nil; i++ {
		if refused = put(i); refused == nil {
			live = append(live, i)
		}
	}
	st := tr.Stats()
	t.Logf("file system full: %v; %+v", refused, st)
	if !errors.Is(refused, tiers.ErrNoSpace) {
		t.Fatalf("put on a full file system: %v, want tiers.ErrNoSpace", refused)
	}
	if !st.WritesStopped {
		t.Fatalf("stats do not say writes stopped: %+v", st)
	}
	getAll := func(tr *Tier) {
		t.Helper()
		for _, k := range live {
			if _, _, err := tr.Get(ctx, testKey("ns", k), nil); err != nil {
				t.Fatalf("Get %d after the disk filled: %v", k, err)
			}
		}
	}
	getAll(tr)

	// A restart on the full file system neither crashes nor loses blocks.
	if err := tr.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	tr, err = Open(dir, 16<<20, opts...)
	if err != nil {
		t.Fatalf("reopen on a full file system: %v", err)
	}
	getAll(tr)
	if err := tr.Put(ctx, testKey("ns", 1000), l, chunk); !errors.Is(err, tiers.ErrNoSpace) {
		t.Fatalf("put after reopening on a full file system: %v, want tiers.ErrNoSpace", err)
	}

	// Space comes back: writes resume by themselves.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// Opened read-only, the tier reopens for writing within spaceRetry.
	if !waitFor(5*time.Second, func() bool { return !tr.Stats().WritesStopped }) {
		t.Fatalf("writes did not resume after freeing space: %+v", tr.Stats())
	}
	if err := put(2000); err != nil {
		t.Fatalf("put after freeing space: %v", err)
	}
	if st := tr.Stats(); st.WritesStopped {
		t.Fatalf("writes still stopped after freeing space: %+v", st)
	}
	getAll(tr)
}
