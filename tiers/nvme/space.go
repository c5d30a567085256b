package nvme

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kvtier/kvtier/tiers"
)

// Disk space.
//
// Badger writes its value log, its memtable write-ahead logs and its tables
// through shared memory mappings of sparse files. When the file system has
// no block left for a page the write touches, the kernel answers with
// SIGBUS, not ENOSPC, in one of Badger's own goroutines: the process dies
// (issue 11: after ~60 puts of 1 MiB on a 64 MiB tmpfs), and again at every
// restart, when Badger writes the header of a fresh value log file.
// Nothing can catch that signal, so the tier never lets Badger get there:
//
//   - Before every write it asks the file system how much is free (statfs,
//     one system call) and refuses the write with tiers.ErrNoSpace when
//     less than the write plus a reserve would be left. The reserve covers
//     what Badger writes on its own: memtable write-ahead logs and their
//     flush to tables, a compaction rewriting the LSM tree, the discard
//     statistics file, the headers of new files, and the live part of one
//     value log file for a GC pass (see reserveFor). Writes in flight are
//     counted, so concurrent puts cannot overshoot it together.
//   - Deletes need room too (a tombstone goes to the write-ahead log); they
//     are refused only below half the reserve, so the Store can still drop
//     blocks when puts have stopped.
//   - A value-log GC round runs only when the live part of a value log file,
//     a memtable flush and an LSM rewrite fit (gcRoom); the reserve puts
//     stop at leaves that room, so GC can still give deleted frames' space
//     back once puts have stopped.
//   - Open sizes value log files and memtables to the capacity and lowers
//     a capacity larger than the file system can hold (with a warning). On
//     a file system with less than half the reserve free it opens an
//     existing store read-only (Badger then writes nothing), serves it with
//     writes stopped, and reopens it for writing once the reserve is free
//     again (checked every 5 s); it refuses, with an error and
//     no crash, to create a store there.
//   - A write that Badger fails with ENOSPC, EIO or EROFS stops writes too.
//
// While writes are stopped the tier serves what it holds; the log says so
// once, TierStats.WritesStopped and FreeBytes show it, and writes resume by
// themselves once a check finds the reserve (plus a quarter, so the state
// does not flap) free again.
//
// What this cannot prevent: another program filling the file system
// between the check and Badger's write, and an I/O error (EIO) on a page
// Badger writes through its mapping, which is still SIGBUS.

// statfsFunc returns the bytes of the file system holding dir that an
// unprivileged writer may still use. Tests replace it (WithStatfs).
type statfsFunc func(dir string) (int64, error)

// space is the tier's disk-space guard.
type space struct {
	dir    string
	statfs statfsFunc
	log    *slog.Logger
	base   int64        // fixed part of the reserve (reserveFor)
	lsm    atomic.Int64 // bytes of LSM tables on disk, refreshed with the disk usage
	inFly  atomic.Int64 // bytes of admitted writes not yet done
	free   atomic.Int64 // last statfs reading

	mu      sync.Mutex // protects stopped's transitions and their log lines
	stopped atomic.Bool
	// readOnly: Open found too little space to open Badger for writing and
	// opened it read-only; every write is refused until the tier reopens
	// it for writing (Tier.reopenWritable).
	readOnly atomic.Bool
}

// metaWrite is what a delete or a repair may add to Badger's files.
const metaWrite = 64 << 10

// reserveFor returns the fixed part of the reserve for Badger's own writes
// with these options: two memtable write-ahead logs and the level-0
// tables they flush to (each about a memtable), the 1 MiB discard file,
// headers, and the live part of one value log file rewritten by GC.
func reserveFor(cfg config) int64 {
	return 4*cfg.memTableSize + 2<<20 + int64(float64(cfg.vlogFileSize)*(1-cfg.discardRatio))
}

// reserve is the space kept free: the fixed part and room for a compaction
// to rewrite the whole LSM tree.
func (s *space) reserve() int64 { return s.base + 2*s.lsm.Load() }

// measure reads the free space.
func (s *space) measure() (int64, error) {
	free, err := s.statfs(s.dir)
	if err != nil {
		return 0, fmt.Errorf("%w: nvme: statfs %s: %w", tiers.ErrNoSpace, s.dir, err)
	}
	s.free.Store(free)
	return free, nil
}

// admit reserves n bytes for a put about to be written; the caller calls
// done(n) once the write returned. It refuses with an error wrapping
// tiers.ErrNoSpace when the reserve would not be left free, and stops
// writes until a later check finds room.
func (s *space) admit(n int64) error {
	if err := s.writable(); err != nil {
		return err
	}
	fly := s.inFly.Add(n)
	free, err := s.measure()
	need := s.reserve() + fly
	if s.stopped.Load() {
		need += s.reserve() / 4
	}
	if err == nil && free < need {
		err = fmt.Errorf("%w: nvme: %s: a write of %d bytes would leave %d of the %d bytes free that Badger needs to itself",
			tiers.ErrNoSpace, s.dir, n, free-fly, s.reserve())
	}
	if err != nil {
		s.inFly.Add(-n)
		s.stop(err)
		return err
	}
	s.resume(free)
	return nil
}

func (s *space) done(n int64) { s.inFly.Add(-n) }

// writable refuses every write while the store is open read-only.
func (s *space) writable() error {
	if s.readOnly.Load() {
		return fmt.Errorf("%w: nvme: %s: store opened read-only for lack of disk space; it reopens for writing once space returns",
			tiers.ErrNoSpace, s.dir)
	}
	return nil
}

// admitMeta checks that a small write (a delete, a repair) can go ahead:
// it needs half the reserve free. It does not change whether puts are
// stopped.
func (s *space) admitMeta() error {
	if err := s.writable(); err != nil {
		return err
	}
	free, err := s.measure()
	if err != nil {
		return err
	}
	if free-s.inFly.Load() < s.reserve()/2+metaWrite {
		return fmt.Errorf("%w: nvme: %s: %d bytes free, below half the %d-byte reserve", tiers.ErrNoSpace, s.dir, free, s.reserve())
	}
	return nil
}

// gcRoom checks that one value-log GC round fits: it rewrites the live
// part of a value log file, flushes a memtable and rewrites the LSM tree
// before the file it empties is deleted. The reserve puts stop at covers
// it, so GC can run while puts are stopped and give space back.
func (s *space) gcRoom(cfg config) error {
	if err := s.writable(); err != nil {
		return err
	}
	n := int64(float64(cfg.vlogFileSize)*(1-cfg.discardRatio)) + 2*cfg.memTableSize + s.lsm.Load() + metaWrite
	free, err := s.measure()
	if err != nil {
		return err
	}
	if free-s.inFly.Load() < n {
		return fmt.Errorf("%w: nvme: %s: %d bytes free, a value log GC round needs %d", tiers.ErrNoSpace, s.dir, free, n)
	}
	return nil
}

// closeRoom checks that Badger can close: it flushes its memtable to a
// table and writes its manifest.
func (s *space) closeRoom(cfg config) error {
	n := 2*cfg.memTableSize + metaWrite
	free, err := s.measure()
	if err != nil {
		return err
	}
	if free < n {
		return fmt.Errorf("%w: nvme: %s: %d bytes free, closing the store needs %d", tiers.ErrNoSpace, s.dir, free, n)
	}
	return nil
}

// recheck resumes writes when a fresh reading finds room; it changes
// nothing while writes go on.
func (s *space) recheck() {
	if !s.stopped.Load() {
		return
	}
	free, err := s.measure()
	if r := s.reserve(); err == nil && free-s.inFly.Load() >= r+r/4 {
		s.resume(free)
	}
}

// failed looks at an error of a Badger write: ENOSPC, EIO or EROFS stop
// writes, as a failed space check does.
func (s *space) failed(err error) {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EDQUOT) {
		s.stop(err)
	}
}

func (s *space) stop(err error) {
	if s.stopped.Load() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped.Swap(true) || s.log == nil {
		return
	}
	s.log.LogAttrs(context.Background(), slog.LevelError,
		"nvme: out of disk space; the NVMe tier takes no writes until space is freed (reads go on)",
		slog.String("dir", s.dir), slog.Int64("free_bytes", s.free.Load()), slog.Int64("reserve_bytes", s.reserve()),
		slog.Any("err", err))
}

func (s *space) resume(free int64) {
	if !s.stopped.Load() || s.readOnly.Load() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped.Swap(false) && s.log != nil {
		s.log.LogAttrs(context.Background(), slog.LevelWarn, "nvme: disk space is back; the NVMe tier takes writes again",
			slog.String("dir", s.dir), slog.Int64("free_bytes", free), slog.Int64("reserve_bytes", s.reserve()))
	}
}

// fitToDisk prepares the guard of the store in dir before Badger opens it:
// it sizes value log files (a quarter of the capacity, or of the file
// system when that is smaller) and memtables (a 64th) down to what the
// capacity calls for, at least 1 MiB each, so a
// small tier does not keep hundreds of MiB of sparse files, and it lowers
// a capacity the file system cannot hold (what the directory already
// takes, plus the free space, less the reserve) with a warning. On a file
// system with less than half the reserve free, where Badger would fault
// writing the headers of its new files, an existing store is marked for a
// read-only open and a new one is refused.
func fitToDisk(dir string, capacity int64, cfg *config) (int64, *space, error) {
	const mib = 1 << 20
	roundUp := func(n int64) int64 { return (n + mib - 1) / mib * mib }
	sp := &space{dir: dir, statfs: cfg.statfs, log: cfg.logger}
	used, tables := diskUsage(dir)
	sp.lsm.Store(tables)
	free, err := sp.measure()
	if err != nil {
		return 0, nil, err
	}
	size := min(capacity, used+free) // what the tier can ever hold here
	cfg.vlogFileSize = min(cfg.vlogFileSize, max(mib, roundUp(size/4)))
	cfg.memTableSize = min(cfg.memTableSize, max(mib, roundUp(size/64)))
	sp.base = reserveFor(*cfg)
	if need := sp.reserve() / 2; free < need {
		err := fmt.Errorf("%w: nvme: %s: %d bytes free, at least %d needed to open the store for writing without risking a fault in Badger",
			tiers.ErrNoSpace, dir, free, need)
		if _, serr := os.Stat(filepath.Join(dir, "MANIFEST")); serr != nil {
			return 0, nil, fmt.Errorf("%w; free some space", err)
		}
		// A store is there: open it read-only (Badger writes nothing
		// then) and serve it until space returns.
		sp.readOnly.Store(true)
		sp.stop(fmt.Errorf("%w; opening it read-only until space returns", err))
	}
	if room := used + free - sp.reserve(); capacity > room {
		lowered := max(room, used, mib) // never below what the directory holds
		if cfg.logger != nil {
			cfg.logger.LogAttrs(context.Background(), slog.LevelWarn,
				"nvme: capacity larger than the file system can hold; lowered until restart",
				slog.String("dir", dir), slog.Int64("nvme_bytes", capacity), slog.Int64("lowered_to", lowered),
				slog.Int64("free_bytes", free), slog.Int64("reserve_bytes", sp.reserve()))
		}
		capacity = lowered
	}
	return capacity, sp, nil
}

// spaceRetry is how often a tier opened read-only checks whether it can
// reopen for writing.
const spaceRetry = 5 * time.Second

// reopenWritable reopens a store opened read-only for writing once the
// reserve is free. It runs on the GC goroutine and holds opsMu exclusively
// while it swaps the store, so no call sees it half done. The index stays:
// the store holds the same blocks either way. If the writable open fails,
// the store is opened read-only again; if that fails too the tier closes.
func (t *Tier) reopenWritable() {
	if !t.space.readOnly.Load() {
		return
	}
	free, err := t.space.measure()
	if r := t.space.reserve(); err != nil || free < r+r/4 {
		return
	}
	t.opsMu.Lock()
	defer t.opsMu.Unlock()
	if t.closed {
		return
	}
	log := t.cfg.logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := t.st.close(); err != nil {
		log.Warn("nvme: closing the read-only store", "dir", t.dir, "err", err)
	}
	st, err := openStore(t.dir, t.cfg, false)
	if err == nil {
		t.st = st
		t.space.readOnly.Store(false)
		t.space.resume(free)
		return
	}
	log.Error("nvme: reopening the store for writing failed; staying read-only", "dir", t.dir, "err", err)
	if t.st, err = openStore(t.dir, t.cfg, true); err != nil {
		t.closed = true
		log.Error("nvme: reopening the store read-only failed too; the NVMe tier is closed", "dir", t.dir, "err", err)
	}
}
