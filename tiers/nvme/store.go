package nvme

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"sync/atomic"

	badger "github.com/dgraph-io/badger/v4"
)

// store is the seam between the tier and Badger: every Badger operation the
// tier performs goes through it, so tests can wrap it to fail the Nth write or
// read, or damage a value as it is read (Badger has no VFS to hook).
//
// Byte slices passed to fn are valid only during the call.
type store interface {
	// write applies ops atomically (one Badger transaction).
	write(ops []op) error
	// get looks key up and returns its version (Badger commit timestamp,
	// kept across value-log GC). When fn is non-nil it is called with the
	// value. A missing key is errNoKey.
	get(key []byte, fn func(val []byte) error) (version uint64, err error)
	// scan calls fn for each key under prefix, in key order from start (or
	// from the first key when start is nil), stopping at the first error. val
	// is nil unless values is set; only ask for values that live in the LSM
	// tree (metas), never frames.
	scan(ctx context.Context, prefix, start []byte, values bool, fn func(key, val []byte) error) error
	// pointers calls fn for each key under prefix with where its value lives
	// in the value log; ok is false when that is unknown (a value kept in
	// the LSM tree, or Badger's item layout not found: see direct.go).
	pointers(ctx context.Context, prefix []byte, fn func(key []byte, vp valuePointer, ok bool) error) error
	// sync makes every completed write durable.
	sync() error
	// flush writes every memtable to a level-0 table.
	flush() error
	// flatten compacts the LSM tree into one level, so that tombstones meet
	// the values they delete and the value log learns what is garbage.
	// Versions written after the last flush are not discarded.
	flatten() error
	// gcOnce rewrites at most one value log file holding at least ratio
	// garbage; it reports whether it rewrote one.
	gcOnce(ratio float64) (bool, error)
	close() error
}

// op is one set or delete of a write.
type op struct {
	key, val []byte
	userMeta byte
	del      bool
}

// badgerStore implements store on a Badger DB opened in managed mode: the
// store picks each write's commit timestamp (the version Badger keeps with
// every key) and reads at the newest, so a transaction never goes through
// Badger's oracle. Its watermarks hand every begin and end of a transaction
// to a goroutine over a channel; on a small machine waking it cost about
// 20 µs a read, a sixth of reading a 64 KiB block from disk.
//
// Writes of one key are serialised by the tier's stripe locks and take
// their timestamps inside them, so a key's versions follow its writes.
// Nothing reads an older version, so every version written before a flush
// may be discarded once superseded or deleted (flush moves the discard
// timestamp up).
type badgerStore struct {
	db     *badger.DB
	direct *directReader // nil: every read goes through Badger's mapping
	ts     atomic.Uint64 // the last commit timestamp handed out
}

// newBadgerStore wraps db, opened in managed mode, going on from the newest
// version it holds; direct may be nil.
func newBadgerStore(db *badger.DB, direct *directReader) *badgerStore {
	s := &badgerStore{db: db, direct: direct}
	s.ts.Store(db.MaxVersion())
	return s
}

// readTs reads the newest committed version of every key.
const readTs = math.MaxUint64

func (s *badgerStore) write(ops []op) (err error) {
	defer recoverTo(&err)
	txn := s.db.NewTransactionAt(readTs, true)
	defer txn.Discard()
	for _, o := range ops {
		if o.del {
			err = txn.Delete(o.key)
		} else {
			err = txn.SetEntry(badger.NewEntry(o.key, o.val).WithMeta(o.userMeta))
		}
		if err != nil {
			return storeErr("write", err)
		}
	}
	return storeErr("commit", txn.CommitAt(s.ts.Add(1), nil))
}

func (s *badgerStore) get(key []byte, fn func(val []byte) error) (version uint64, err error) {
	// A value is read through Badger's mapping of the value log. If the file
	// was truncated or the device fails, touching the mapping faults; turn
	// that (and any panic inside Badger) into an error for this read. A fault
	// inside fn leaves Badger consistent (its locks are released by defers);
	// one inside Badger itself, before it hands out the value, can leave a
	// value log file's lock held: that is reported as errPoisoned.
	inFn := false
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %w: %v", ErrStore, errFault, r)
			if !inFn {
				err = fmt.Errorf("%w: %w", errPoisoned, err)
			}
		}
	}()
	err = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		version = item.Version()
		if fn == nil {
			return nil
		}
		if s.direct != nil {
			if vp, ok := valuePointerOf(item); ok {
				if err := s.direct.read(vp, key, version, fn); !errors.Is(err, errDirectMiss) {
					return err
				}
			}
		}
		return item.Value(func(v []byte) error {
			inFn = true
			err := fn(v)
			inFn = false
			return err
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, errNoKey
	}
	return version, err
}

func (s *badgerStore) scan(ctx context.Context, prefix, start []byte, values bool, fn func(key, val []byte) error) error {
	return s.each(ctx, prefix, start, func(item *badger.Item) error {
		key := item.Key()
		if !values {
			return fn(key, nil)
		}
		return item.Value(func(val []byte) error { return fn(key, val) })
	})
}

func (s *badgerStore) pointers(ctx context.Context, prefix []byte, fn func(key []byte, vp valuePointer, ok bool) error) error {
	return s.each(ctx, prefix, nil, func(item *badger.Item) error {
		vp, ok := valuePointerOf(item)
		return fn(item.Key(), vp, ok)
	})
}

// each calls fn for each item under prefix, in key order from start (or
// from the first key when start is nil), values not prefetched, in one
// read-only transaction, stopping at the first error.
func (s *badgerStore) each(ctx context.Context, prefix, start []byte, fn func(item *badger.Item) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverTo(&err)
	return s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = prefix
		it := txn.NewIterator(opts)
		defer it.Close()
		if start != nil {
			it.Seek(start)
		} else {
			it.Rewind()
		}
		for ; it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(it.Item()); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *badgerStore) sync() (err error) {
	defer recoverTo(&err)
	return storeErr("sync", s.db.Sync())
}

var flushKey = []byte{prefixFlush, 'f', 'l', 'u', 's', 'h'}

// flush: Badger has no call that flushes the memtable. DropPrefix flushes
// every memtable to level 0 before it drops a prefix, so write a sentinel
// under a prefix nothing else uses and drop it. DropPrefix blocks writes
// while it runs (they fail with ErrBlockedWrites); the tier holds its write
// gate exclusively around flush so that none are attempted.
func (s *badgerStore) flush() (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverTo(&err)
	if err := s.write([]op{{key: flushKey, val: []byte{1}}}); err != nil {
		return err
	}
	// No write is in flight (the tier's write gate is held), so every
	// version up to the last timestamp is committed: let compaction drop
	// those that are superseded or deleted.
	s.db.SetDiscardTs(s.ts.Load())
	return storeErr("flush", s.db.DropPrefix([]byte{prefixFlush}))
}

func (s *badgerStore) flatten() (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverTo(&err)
	return storeErr("flatten", s.db.Flatten(1))
}

func (s *badgerStore) gcOnce(ratio float64) (ok bool, err error) {
	// The rewrite reads a whole value log file through its mapping.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverTo(&err)
	if s.direct != nil {
		// Files deleted by this or an earlier pass (Badger defers deletion
		// while iterators are open).
		defer s.direct.closeDeleted()
	}
	switch err := s.db.RunValueLogGC(ratio); {
	case err == nil:
		return true, nil
	case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
		return false, nil
	default:
		return false, storeErr("value log gc", err)
	}
}

func (s *badgerStore) close() (err error) {
	defer recoverTo(&err)
	if s.direct != nil {
		s.direct.close()
	}
	return storeErr("close", s.db.Close())
}

func storeErr(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %s: %w", ErrStore, what, err)
}

// recoverTo turns a panic (a Badger assertion, a fault on a mapped file) into
// an error, so that none reaches the tier's callers.
func recoverTo(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: %w: %v", ErrStore, errFault, r)
	}
}
