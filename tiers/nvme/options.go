package nvme

import (
	"fmt"
	"log/slog"
	"time"
)

// Option configures Open.
type Option func(*config)

type config struct {
	syncWrites   bool
	gcInterval   time.Duration
	gcAfterBytes int64
	discardRatio float64
	vlogFileSize int64
	memTableSize int64
	logger       *slog.Logger
	badgerLevel  slog.Level
	directReads  bool
	wrapStore    func(store) store // tests: fault injection
	statfs       statfsFunc        // free space of the directory's file system; tests replace it
	recover      RecoverMode
	spaceRetry   time.Duration // how often a read-only store retries a writable open
}

// Defaults. The value log file size bounds the largest frame (a frame must
// fit in one value log file) and the unit of GC: a file is rewritten when at
// least DiscardRatio of it is garbage.
const (
	DefaultGCInterval   = time.Minute
	DefaultDiscardRatio = 0.5
	DefaultVLogFileSize = 256 << 20
	DefaultMemTableSize = 8 << 20
	// DefaultGCAfterBytes is the garbage (frames deleted or replaced) after
	// which a collection starts without waiting for the timer, unless
	// capacity/8 is smaller.
	DefaultGCAfterBytes = 1 << 30
)

func defaultConfig(capacity int64) config {
	after := int64(DefaultGCAfterBytes)
	if c := capacity / 8; c > 0 && c < after {
		after = c
	}
	return config{
		gcInterval:   DefaultGCInterval,
		gcAfterBytes: after,
		discardRatio: DefaultDiscardRatio,
		vlogFileSize: DefaultVLogFileSize,
		memTableSize: DefaultMemTableSize,
		logger:       slog.Default(),
		badgerLevel:  slog.LevelWarn,
		directReads:  true,
		statfs:       statfs,
		spaceRetry:   spaceRetry,
	}
}

func (c *config) validate() error {
	switch {
	case c.gcInterval < 0:
		return fmt.Errorf("gc interval %v is negative", c.gcInterval)
	case c.gcAfterBytes < 0:
		return fmt.Errorf("gc-after bytes %d is negative", c.gcAfterBytes)
	case c.discardRatio <= 0 || c.discardRatio >= 1:
		return fmt.Errorf("discard ratio %v not in (0, 1)", c.discardRatio)
	case c.vlogFileSize < 1<<20 || c.vlogFileSize >= 2<<30:
		return fmt.Errorf("value log file size %d not in [1 MiB, 2 GiB)", c.vlogFileSize)
	case c.memTableSize < 1<<20:
		return fmt.Errorf("memtable size %d below 1 MiB", c.memTableSize)
	}
	return nil
}

// WithSyncWrites makes every Put durable before it returns (Badger
// SyncWrites). Off by default: call Sync to make earlier Puts durable.
func WithSyncWrites(on bool) Option {
	return func(c *config) { c.syncWrites = on }
}

// WithGCInterval sets how often value-log garbage collection runs in the
// background (default 1 minute; 0 disables the timer).
func WithGCInterval(d time.Duration) Option {
	return func(c *config) { c.gcInterval = d }
}

// WithGCAfterBytes starts a collection once this many frame bytes were
// deleted or replaced since the last one (default min(1 GiB, capacity/8);
// 0 disables the trigger).
func WithGCAfterBytes(n int64) Option {
	return func(c *config) { c.gcAfterBytes = n }
}

// WithDiscardRatio sets the share of garbage a value log file needs before
// GC rewrites it (default 0.5, range (0, 1)).
func WithDiscardRatio(r float64) Option {
	return func(c *config) { c.discardRatio = r }
}

// WithValueLogFileSize sets Badger's value log file size (default 256 MiB,
// range [1 MiB, 2 GiB)). It bounds the largest frame the tier accepts.
func WithValueLogFileSize(n int64) Option {
	return func(c *config) { c.vlogFileSize = n }
}

// WithMemTableSize sets Badger's memtable size (default 8 MiB, at least
// 1 MiB). Memtables hold only keys, value pointers and metas.
func WithMemTableSize(n int64) Option {
	return func(c *config) { c.memTableSize = n }
}

// WithLogger sends Badger's log records, at level and above (default
// slog.LevelWarn), to l (default slog.Default()).
func WithLogger(l *slog.Logger, level slog.Level) Option {
	return func(c *config) { c.logger, c.badgerLevel = l, level }
}

// WithDirectReads turns direct reads on or off (default on, Linux only):
// Get preads the frame from the value log file with O_DIRECT instead of
// copying it out of Badger's memory mapping, which cold random reads need
// to approach the disk's speed (see direct.go). Off, reads go through
// Badger and the page cache: faster for data that is already cached.
func WithDirectReads(on bool) Option {
	return func(c *config) { c.directReads = on }
}
