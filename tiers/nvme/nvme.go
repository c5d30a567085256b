package nvme

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
)

var (
	_ tiers.Tier    = (*Tier)(nil)
	_ tiers.Scanner = (*Tier)(nil)
	_ tiers.Syncer  = (*Tier)(nil)
)

const (
	numStripes = 64
	// keyBufLen holds the longest binary key: 1+128+1+32+2 bytes.
	keyBufLen = 1 + tiers.MaxNamespaceLen + 1 + 32 + 2
	// frameHeadroom is what a value log entry adds around a frame (Badger's
	// entry header, the key, the checksum), kept free in a value log file.
	frameHeadroom = 4 << 10
	// usageTTL is how long Stats reuses a measured disk usage.
	usageTTL = time.Second
	// repairBatch bounds the operations of one repair transaction on Open.
	repairBatch = 256
)

// poisonedCloseWait bounds Close once a fault hit Badger's internals.
var poisonedCloseWait = 5 * time.Second

// Tier is the NVMe tier: codec frames in a Badger database, with a byte
// capacity, an in-memory index and background value-log GC. Safe for
// concurrent use.
type Tier struct {
	dir      string
	capacity int64
	maxFrame int64
	cfg      config
	st       store
	space    *space // disk-space guard: every Badger write asks it first

	// opsMu is held for reading by every method that uses st and for
	// writing by Close, so st is never used once closed.
	opsMu  sync.RWMutex
	closed bool // guarded by opsMu

	// gate is held for reading by every Badger write (Put, Delete, eviction,
	// corruption drops) and for writing by the memtable flush of a GC pass:
	// Badger fails writes attempted while it flushes that way.
	gate sync.RWMutex

	// stripes serialise the writers of one key: a writer holds
	// stripes[hash(key)%numStripes] across its Badger write and its index
	// update, so both happen in the same order for every key.
	// Lock order: opsMu → gcMu → stripe → gate → mu.
	stripes [numStripes]sync.Mutex

	mu      sync.Mutex // protects idx, pending, nextSeq
	idx     *index
	pending int64  // frame bytes of Puts admitted but not yet indexed
	nextSeq uint64 // sequence number of the next write

	bufs sync.Pool // *[]byte frame buffers, reused across Puts

	corrupt atomic.Int64 // copies found damaged and removed since Open
	// quarantined is 1 when Open set a damaged store aside (recover.go).
	quarantined atomic.Int64
	poisoned    atomic.Bool  // the value log is damaged under Badger (see poison)
	garbage     atomic.Int64 // frame bytes deleted or replaced since the last collection began
	gcRuns      atomic.Int64 // completed collections

	usageMu sync.Mutex // protects usage, usageAt
	usage   int64
	usageAt time.Time

	gcMu     sync.Mutex    // serialises CollectGarbage
	kick     chan struct{} // capacity 1: wakes the GC goroutine early
	gcCtx    context.Context
	gcCancel context.CancelFunc
	gcDone   chan struct{} // closed when the GC goroutine exits
}

// Open opens (creating if needed) the tier stored in dir, with a bound of
// capacity bytes of frames. On an existing directory it rebuilds the index
// from a key-only pass over Badger's LSM tree (no value is read): blocks are
// served at once; Scan reports them in the order of their last write.
func Open(dir string, capacity int64, opts ...Option) (*Tier, error) {
	if capacity <= 0 {
		return nil, fmt.Errorf("%w: nvme: capacity %d", tiers.ErrInvalid, capacity)
	}
	cfg := defaultConfig(capacity)
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("%w: nvme: %v", tiers.ErrInvalid, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStore, err)
	}
	capacity, sp, err := fitToDisk(dir, capacity, &cfg)
	if err != nil {
		return nil, err
	}
	t, err := open(dir, capacity, cfg, sp)
	if err == nil {
		return t, nil
	}
	if err := recoverStore(dir, cfg, err); err != nil {
		return nil, err
	}
	if t, err = open(dir, capacity, cfg, sp); err != nil {
		return nil, err
	}
	t.quarantined.Store(1)
	return t, nil
}

// open opens the store in dir and rebuilds the index from it.
func open(dir string, capacity int64, cfg config, sp *space) (*Tier, error) {
	if err := checkManifest(dir); err != nil {
		return nil, err
	}
	st, err := openStore(dir, cfg, sp.readOnly.Load())
	if err != nil {
		return nil, err
	}
	t := &Tier{
		dir:      dir,
		capacity: capacity,
		maxFrame: cfg.vlogFileSize - frameHeadroom,
		cfg:      cfg,
		st:       st,
		space:    sp,
		idx:      newIndex(),
		kick:     make(chan struct{}, 1),
		gcDone:   make(chan struct{}),
	}
	if err := t.load(context.Background()); err != nil {
		_ = st.close()
		return nil, err
	}
	t.refreshUsage()
	t.gcCtx, t.gcCancel = context.WithCancel(context.Background())
	go t.gcLoop()
	return t, nil
}

// openStore opens Badger in dir and wraps it in the tier's store.
func openStore(dir string, cfg config, readOnly bool) (store, error) {
	db, err := openBadger(dir, cfg, readOnly)
	if err != nil {
		return nil, err
	}
	var direct *directReader
	if cfg.directReads {
		direct = newDirectReader(dir)
	}
	var st store = newBadgerStore(db, direct)
	if cfg.wrapStore != nil {
		st = cfg.wrapStore(st)
	}
	return st, nil
}

func openBadger(dir string, cfg config, readOnly bool) (db *badger.DB, err error) {
	defer recoverTo(&err)
	opt := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{l: cfg.logger, level: cfg.badgerLevel}).
		WithSyncWrites(cfg.syncWrites).
		WithNumVersionsToKeep(1).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithValueThreshold(valueThreshold).
		WithMemTableSize(cfg.memTableSize).
		WithNumMemtables(2).
		WithNumCompactors(2).
		WithNumGoroutines(1).
		WithValueLogFileSize(cfg.vlogFileSize).
		WithMetricsEnabled(false).
		WithDetectConflicts(false).
		WithReadOnly(readOnly)
	db, err = badger.OpenManaged(opt)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", ErrStore, dir, err)
	}
	return db, nil
}

// enter takes opsMu for reading; it fails once the tier is closed. The
// caller releases with t.opsMu.RUnlock.
func (t *Tier) enter() error {
	t.opsMu.RLock()
	if t.closed {
		t.opsMu.RUnlock()
		return fmt.Errorf("%w: nvme tier", tiers.ErrClosed)
	}
	return nil
}

// enterKey is enter for a call on key k: after the closed check it also
// fails, releasing opsMu, when ctx is done or k is invalid.
func (t *Tier) enterKey(ctx context.Context, k tiers.Key) error {
	if err := t.enter(); err != nil {
		return err
	}
	err := ctx.Err()
	if err == nil {
		err = k.Validate()
	}
	if err != nil {
		t.opsMu.RUnlock()
	}
	return err
}

// stripe returns the writers' lock of the key with fingerprint fp.
func (t *Tier) stripe(fp fingerprint) *sync.Mutex {
	return &t.stripes[fp[0]%numStripes]
}

func (t *Tier) getBuf(n int) *[]byte {
	bp, _ := t.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	if cap(*bp) < n {
		*bp = make([]byte, 0, n)
	}
	return bp
}

// Put stores data under k in a raw frame (checksummed, not compressed),
// replacing any copy there; the Store stores frames in its codec policy's
// mode with PutFrame instead. It fails with an error wrapping tiers.ErrFull when the frame does not fit in the remaining capacity (and
// also tiers.ErrExhausted when it could never fit), tiers.ErrInvalid for a
// bad key or a length that does not match l, and ErrStore when Badger fails;
// on any error nothing is indexed and the previous copy, if any, remains.
func (t *Tier) Put(ctx context.Context, k tiers.Key, l tiers.Layout, data []byte) error {
	if err := t.enterKey(ctx, k); err != nil {
		return err
	}
	defer t.opsMu.RUnlock()
	if err := l.CheckLen(len(data)); err != nil {
		return fmt.Errorf("%w: nvme: put %v: %w", tiers.ErrInvalid, k, err)
	}
	const mode = codec.Raw // the Store encodes in its codec policy's mode and calls PutFrame
	bp := t.getBuf(codec.MaxFrameLen(l, mode))
	defer t.bufs.Put(bp)
	frame, err := codec.Encode((*bp)[:0], l, data, codec.Options{Mode: mode})
	*bp = frame[:0]
	if err != nil {
		return fmt.Errorf("%w: nvme: put %v: encode: %w", tiers.ErrInvalid, k, err)
	}
	return t.put(ctx, k, l, mode, frame)
}

var _ tiers.FrameTier = (*Tier)(nil)

// PutFrame stores frame, an encoded block (codec.Encode), under k as it is,
// whatever the namespace's mode: the Store persists blocks that DRAM keeps
// compressed this way. A frame that fails its checksum is tiers.ErrInvalid;
// otherwise it behaves as Put.
func (t *Tier) PutFrame(ctx context.Context, k tiers.Key, frame []byte) error {
	if err := t.enterKey(ctx, k); err != nil {
		return err
	}
	defer t.opsMu.RUnlock()
	h, err := codec.Verify(frame)
	if err != nil {
		return fmt.Errorf("%w: nvme: put frame %v: %w", tiers.ErrInvalid, k, err)
	}
	return t.put(ctx, k, h.Layout, h.Mode, frame)
}

// put stores frame, holding a block of layout l in mode, under k. Caller
// is inside enter.
func (t *Tier) put(ctx context.Context, k tiers.Key, l tiers.Layout, mode codec.Mode, frame []byte) error {
	n := int64(len(frame))
	if n > t.capacity || n > t.maxFrame {
		return fmt.Errorf("%w: %w: nvme: frame of %d bytes exceeds capacity %d or the largest frame %d",
			tiers.ErrFull, tiers.ErrExhausted, n, t.capacity, t.maxFrame)
	}
	// Out of disk space is said before out of capacity: evicting this
	// tier's blocks would not make room on the disk at once.
	if err := t.space.admit(n); err != nil {
		return fmt.Errorf("nvme: put %v: %w", k, err)
	}
	defer t.space.done(n)
	var kb [keyBufLen]byte
	bk := k.AppendBinary(kb[:0])
	fp := t.idx.fingerprint(bk)

	s := t.stripe(fp)
	s.Lock()
	defer s.Unlock()
	t.gate.RLock()
	defer t.gate.RUnlock()

	t.mu.Lock()
	i := t.idx.findFP(fp)
	var oldSeq uint64
	var oldSize int64
	if i != nilEntry {
		e := t.idx.at(i)
		oldSeq, oldSize = e.seq, int64(e.size)
	}
	if used := t.idx.used + t.pending; used-oldSize+n > t.capacity {
		t.mu.Unlock()
		return fmt.Errorf("%w: nvme: frame of %d bytes, %d of %d bytes used", tiers.ErrFull, n, used, t.capacity)
	}
	t.pending += n
	seq := t.nextSeq
	t.nextSeq++
	t.mu.Unlock()

	err := ctx.Err()
	if err == nil {
		meta := appendMeta(make([]byte, 0, metaLen), blockMeta{mode: mode, layout: l, frameLen: uint32(n)})
		ops := make([]op, 2, 3)
		ops[0] = op{key: dataKey(bk), val: frame, userMeta: userMetaFrame}
		ops[1] = op{key: metaKey(seq, bk), val: meta}
		if oldSeq != 0 {
			ops = append(ops, op{key: metaKey(oldSeq, bk), del: true})
		}
		err = t.st.write(ops)
		t.space.failed(err)
	}

	t.mu.Lock()
	t.pending -= n
	if err == nil {
		if i != nilEntry {
			t.idx.update(i, seq, uint32(n))
		} else {
			t.idx.insertFP(fp, seq, uint32(n))
		}
	}
	t.mu.Unlock()
	if err != nil {
		return fmt.Errorf("nvme: put %v: %w", k, err)
	}
	t.addGarbage(oldSize)
	return nil
}

// Get verifies k's frame (CRC-32C over header and payload) and decodes it,
// appending the block to dst. A missing block is tiers.ErrNotFound. A frame
// that fails verification is counted in TierStats.Corrupt, deleted, and
// reported as an error wrapping tiers.ErrCorrupt; its bytes are never
// returned. On error dst is returned unchanged.
func (t *Tier) Get(ctx context.Context, k tiers.Key, dst []byte) (tiers.Layout, []byte, error) {
	return t.get(ctx, k, dst, true)
}

// GetFrame verifies k's frame as Get does and appends it to dst as it is,
// undecoded, with the block's layout. Errors are as for Get.
func (t *Tier) GetFrame(ctx context.Context, k tiers.Key, dst []byte) (tiers.Layout, []byte, error) {
	return t.get(ctx, k, dst, false)
}

// get is Get (decode) or GetFrame.
func (t *Tier) get(ctx context.Context, k tiers.Key, dst []byte, decode bool) (tiers.Layout, []byte, error) {
	if err := t.enterKey(ctx, k); err != nil {
		return tiers.Layout{}, dst, err
	}
	defer t.opsMu.RUnlock()
	var kb [keyBufLen]byte
	bk := k.AppendBinary(kb[:0])

	t.mu.Lock()
	i := t.idx.find(bk)
	if i == nilEntry {
		t.mu.Unlock()
		return tiers.Layout{}, dst, fmt.Errorf("%w: nvme: %v", tiers.ErrNotFound, k)
	}
	t.mu.Unlock()

	// A failed read is tried again before the block is declared corrupt:
	// value-log GC may have moved the frame between the lookup and the read.
	var (
		l       tiers.Layout
		out     []byte
		version uint64
		err     error
	)
	for range 3 {
		l, out, version, err = t.readFrame(bk, dst, decode)
		if err == nil {
			return l, out, nil
		}
		if errors.Is(err, errPoisoned) || !(errors.Is(err, errDirectRetry) || isBadRead(err)) {
			break
		}
	}
	switch {
	case errors.Is(err, errNoKey):
		// The index said present. Either a concurrent Delete won, or the
		// index and Badger disagree; drop the index entry in the second case.
		t.forgetMissing(bk)
		return tiers.Layout{}, dst, fmt.Errorf("%w: nvme: %v", tiers.ErrNotFound, k)
	case !isBadRead(err):
		return tiers.Layout{}, dst, fmt.Errorf("nvme: get %v: %w", k, err)
	}
	if errors.Is(err, errPoisoned) || errors.Is(err, errTruncated) {
		t.poison(err)
	}
	t.corrupt.Add(1)
	t.dropCorrupt(bk, version)
	return tiers.Layout{}, dst, fmt.Errorf("%w: nvme: %v removed: %w", tiers.ErrCorrupt, k, err)
}

// poison records that the value log is damaged in a way Badger does not
// survive (a file shorter than its entries, a fault inside Badger): value
// log GC, which would read the damaged file through its mapping, stops, and
// Close stops waiting for Badger after poisonedCloseWait. Reads and writes
// go on; a restart reopens the files at their real size.
func (t *Tier) poison(err error) {
	if t.poisoned.CompareAndSwap(false, true) && t.cfg.logger != nil {
		t.cfg.logger.LogAttrs(context.Background(), slog.LevelError,
			"nvme: value log damaged; value log GC stopped, restart to recover",
			slog.String("dir", t.dir), slog.Any("err", err))
	}
}

// readFrame reads binary key bk's frame and appends to dst the block it
// decodes to, or, unless decode, the frame itself once verified. It returns
// the Badger version of what it read.
func (t *Tier) readFrame(bk, dst []byte, decode bool) (l tiers.Layout, out []byte, version uint64, err error) {
	var decErr error
	called := false
	version, err = t.st.get(dataKey(bk), func(val []byte) error {
		called = true
		if decode {
			l, out, decErr = codec.Decode(dst, val)
			return nil
		}
		var h codec.Header
		if h, decErr = codec.Verify(val); decErr == nil {
			l, out = h.Layout, append(dst, val...)
		}
		return nil
	})
	switch {
	case err != nil:
	case decErr != nil:
		err = fmt.Errorf("%w: %w", errBadFrame, decErr)
	case !called:
		err = errNoValue
	}
	return l, out, version, err
}

// isBadRead reports whether a read error says the stored bytes are damaged.
func isBadRead(err error) bool {
	return errors.Is(err, errBadFrame) || errors.Is(err, errNoValue) ||
		errors.Is(err, errTruncated) || errors.Is(err, errFault)
}

// Delete removes k. Deleting a missing block is not an error.
func (t *Tier) Delete(ctx context.Context, k tiers.Key) error {
	if err := t.enterKey(ctx, k); err != nil {
		return err
	}
	defer t.opsMu.RUnlock()
	var kb [keyBufLen]byte
	if _, err := t.remove(k.AppendBinary(kb[:0]), 0); err != nil {
		return fmt.Errorf("nvme: delete %v: %w", k, err)
	}
	return nil
}

// remove deletes binary key bk if it is indexed and, when seq is not 0, was
// last written with seq. It returns the frame bytes freed.
func (t *Tier) remove(bk []byte, seq uint64) (int64, error) {
	fp := t.idx.fingerprint(bk)
	s := t.stripe(fp)
	s.Lock()
	defer s.Unlock()
	t.gate.RLock()
	defer t.gate.RUnlock()

	t.mu.Lock()
	i := t.idx.findFP(fp)
	if i == nilEntry || (seq != 0 && t.idx.at(i).seq != seq) {
		t.mu.Unlock()
		return 0, nil
	}
	e := t.idx.at(i)
	seq, size := e.seq, int64(e.size)
	t.mu.Unlock()

	if err := t.writeMeta([]op{{key: dataKey(bk), del: true}, {key: metaKey(seq, bk), del: true}}); err != nil {
		return 0, err
	}
	t.mu.Lock()
	t.idx.remove(i)
	t.mu.Unlock()
	t.addGarbage(size)
	return size, nil
}

// errFound stops a scan at its first key.
var errFound = errors.New("nvme: found")

// keyOf returns the binary key of the block last written with seq, read
// back from its meta key (the index keeps only fingerprints). ErrFormat
// when there is no such meta key.
func (t *Tier) keyOf(ctx context.Context, seq uint64) ([]byte, error) {
	prefix := binary.BigEndian.AppendUint64([]byte{prefixMeta}, seq)
	var bk []byte
	err := t.st.scan(ctx, prefix, nil, false, func(key, _ []byte) error {
		if _, k, err := parseMetaKey(key); err == nil {
			bk = append([]byte(nil), k...)
		}
		return errFound
	})
	if err != nil && !errors.Is(err, errFound) {
		return nil, err
	}
	if bk == nil {
		return nil, fmt.Errorf("%w: no meta key with sequence number %d", ErrFormat, seq)
	}
	return bk, nil
}

// dropCorrupt deletes bk after a read found its frame damaged, unless a
// writer replaced it since (its Badger version is no longer version; version
// 0 means unknown: delete regardless).
func (t *Tier) dropCorrupt(bk []byte, version uint64) {
	fp := t.idx.fingerprint(bk)
	s := t.stripe(fp)
	s.Lock()
	defer s.Unlock()
	t.gate.RLock()
	defer t.gate.RUnlock()

	v, err := t.st.get(dataKey(bk), nil)
	if err != nil && !errors.Is(err, errNoKey) {
		return // cannot tell; the next read retries
	}
	if err == nil && version != 0 && v != version {
		return
	}
	t.mu.Lock()
	i := t.idx.findFP(fp)
	ops := []op{{key: dataKey(bk), del: true}}
	var size int64
	if i != nilEntry {
		e := t.idx.at(i)
		size = int64(e.size)
		ops = append(ops, op{key: metaKey(e.seq, bk), del: true})
	}
	t.mu.Unlock()
	if err := t.writeMeta(ops); err != nil {
		return
	}
	if i != nilEntry {
		t.mu.Lock()
		t.idx.remove(i)
		t.mu.Unlock()
		t.addGarbage(size)
	}
}

// forgetMissing drops bk from the index (and its meta) when Badger has no
// frame for it.
func (t *Tier) forgetMissing(bk []byte) {
	fp := t.idx.fingerprint(bk)
	s := t.stripe(fp)
	s.Lock()
	defer s.Unlock()
	if _, err := t.st.get(dataKey(bk), nil); !errors.Is(err, errNoKey) {
		return
	}
	t.gate.RLock()
	defer t.gate.RUnlock()
	t.mu.Lock()
	i := t.idx.findFP(fp)
	if i == nilEntry {
		t.mu.Unlock()
		return
	}
	seq := t.idx.at(i).seq
	t.mu.Unlock()
	if err := t.writeMeta([]op{{key: metaKey(seq, bk), del: true}}); err != nil {
		return
	}
	t.mu.Lock()
	t.idx.remove(i)
	t.mu.Unlock()
}

// Sync returns once every Put that returned before the call is on stable
// storage (value log and memtable write-ahead log fsynced).
func (t *Tier) Sync() error {
	if err := t.enter(); err != nil {
		return err
	}
	defer t.opsMu.RUnlock()
	return t.st.sync()
}

// Stats returns the tier's accounting. UsedBytes is the sum of frame
// lengths; ReservedBytes is the space the directory takes on disk (value log,
// LSM tree, write-ahead logs; garbage not yet collected included), at least
// UsedBytes, measured at most once a second.
func (t *Tier) Stats() tiers.TierStats {
	t.mu.Lock()
	used, blocks := t.idx.used, t.idx.count
	t.mu.Unlock()
	return tiers.TierStats{
		Name:          tiers.LevelNVMe.String(),
		CapacityBytes: t.capacity,
		UsedBytes:     used,
		ReservedBytes: max(used, t.diskUsage(false)),
		Blocks:        blocks,
		Corrupt:       t.corrupt.Load(),
		WritesStopped: t.space.stopped.Load(),
		FreeBytes:     t.space.free.Load(),
		Quarantined:   t.quarantined.Load(),
	}
}

func (t *Tier) diskUsage(force bool) int64 {
	t.usageMu.Lock()
	defer t.usageMu.Unlock()
	if force || time.Since(t.usageAt) > usageTTL {
		var tables int64
		t.usage, tables = diskUsage(t.dir)
		t.usageAt = time.Now()
		t.space.lsm.Store(tables)
		_, _ = t.space.measure()
		t.space.recheck() // space may have come back without a write to notice it
	}
	return t.usage
}

func (t *Tier) refreshUsage() { t.diskUsage(true) }

// Close stops background GC and closes Badger. Every method called after
// Close returns an error wrapping tiers.ErrClosed (Stats keeps working).
func (t *Tier) Close() error {
	t.gcCancel()
	<-t.gcDone
	t.opsMu.Lock()
	defer t.opsMu.Unlock()
	if t.closed {
		return fmt.Errorf("%w: nvme tier", tiers.ErrClosed)
	}
	t.closed = true
	if err := t.space.closeRoom(t.cfg); err != nil && !t.space.readOnly.Load() {
		// Badger flushes its memtable to a table as it closes; on a full
		// file system that write faults. Leave its files as they are: the
		// write-ahead log is replayed at the next Open.
		return fmt.Errorf("%w: not closing the store cleanly: %w", ErrStore, err)
	}
	if !t.poisoned.Load() {
		return t.st.close()
	}
	// Badger may wait forever on a lock the fault left held.
	done := make(chan error, 1)
	go func() { done <- t.st.close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(poisonedCloseWait):
		return fmt.Errorf("%w: close did not finish after a fault in the storage engine; files left open", ErrStore)
	}
}

// Scan calls fn for every block, oldest write first (the order of the
// write sequence numbers in the meta keys), with the block's layout and its
// frame length. It reads batches under short snapshots, so fn may call the
// tier; blocks written or deleted during the scan may or may not be seen.
func (t *Tier) Scan(ctx context.Context, fn func(k tiers.Key, l tiers.Layout, size int64) error) error {
	type rec struct {
		k    tiers.Key
		l    tiers.Layout
		size int64
	}
	const batch = 1024
	start := []byte{prefixMeta}
	recs := make([]rec, 0, batch)
	for {
		recs = recs[:0]
		var last []byte
		err := t.scanBatch(ctx, start, func(key, val []byte) error {
			if len(recs) == batch {
				return errBatchFull
			}
			last = append(last[:0], key...)
			_, bk, err := parseMetaKey(key)
			if err != nil {
				return nil
			}
			k, err := tiers.ParseKey(bk)
			if err != nil {
				return nil
			}
			m, err := parseMeta(val)
			if err != nil {
				return nil
			}
			recs = append(recs, rec{k: k, l: m.layout, size: int64(m.frameLen)})
			return nil
		})
		if err != nil && !errors.Is(err, errBatchFull) {
			return err
		}
		for _, r := range recs {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(r.k, r.l, r.size); err != nil {
				return err
			}
		}
		if !errors.Is(err, errBatchFull) {
			return nil
		}
		start = append(bytes.Clone(last), 0) // the next key after last
	}
}

var errBatchFull = errors.New("nvme: batch full")

func (t *Tier) scanBatch(ctx context.Context, start []byte, fn func(key, val []byte) error) error {
	if err := t.enter(); err != nil {
		return err
	}
	defer t.opsMu.RUnlock()
	return t.st.scan(ctx, []byte{prefixMeta}, start, true, fn)
}

// load checks the directory's format and rebuilds the index from the meta
// keys (in write order) and the data keys, repairing what a crash or a bug
// could leave: metas without a frame, frames without a meta, unreadable
// metas (counted as corrupt), two metas for one key (the later wins).
func (t *Tier) load(ctx context.Context) error {
	if err := t.checkFormat(ctx); err != nil {
		return err
	}
	var drop []op
	var maxSeq uint64
	err := t.st.scan(ctx, []byte{prefixMeta}, nil, true, func(key, val []byte) error {
		seq, bk, err := parseMetaKey(key)
		var m blockMeta
		if err == nil {
			_, err = tiers.ParseKey(bk)
		}
		if err == nil {
			m, err = parseMeta(val)
		}
		if err != nil {
			t.corrupt.Add(1)
			drop = append(drop, op{key: append([]byte(nil), key...), del: true})
			return nil
		}
		maxSeq = max(maxSeq, seq)
		fp := t.idx.fingerprint(bk)
		if i := t.idx.findFP(fp); i != nilEntry {
			drop = append(drop, op{key: metaKey(t.idx.at(i).seq, bk), del: true})
			t.idx.update(i, seq, m.frameLen)
			return nil
		}
		t.idx.insertFP(fp, seq, m.frameLen)
		return nil
	})
	if err != nil {
		return fmt.Errorf("nvme: rebuilding index: %w", err)
	}
	seen := make([]uint64, (t.idx.n+63)/64)
	sizes := vlogSizes(t.dir)
	var lost int64
	err = t.st.pointers(ctx, []byte{prefixData}, func(key []byte, vp valuePointer, ok bool) error {
		i := t.idx.find(key[1:])
		if i == nilEntry {
			drop = append(drop, op{key: append([]byte(nil), key...), del: true})
			return nil
		}
		if ok && sizes != nil {
			// A frame past the end of its value log file (cut short, or
			// gone) is lost: drop it now rather than have the Store
			// believe it cached until a Get finds out.
			if size, found := sizes[vp.fid]; !found || int64(vp.offset)+int64(vp.len) > size {
				lost++
				drop = append(drop, op{key: append([]byte(nil), key...), del: true})
				return nil // not seen: its meta and index entry go below
			}
		}
		seen[i/64] |= 1 << (i % 64)
		return nil
	})
	if lost > 0 {
		t.corrupt.Add(lost)
		if t.cfg.logger != nil {
			t.cfg.logger.LogAttrs(ctx, slog.LevelWarn, "nvme: blocks point past the end of their value log file; dropped",
				slog.String("dir", t.dir), slog.Int64("blocks", lost))
		}
	}
	if err != nil {
		return fmt.Errorf("nvme: rebuilding index: %w", err)
	}
	for i := int32(0); i < t.idx.n; i++ {
		e := t.idx.at(i)
		if !e.live() || seen[i/64]&(1<<(i%64)) != 0 {
			continue
		}
		// A meta without its frame: read its key back to delete it.
		if bk, err := t.keyOf(ctx, e.seq); err == nil {
			drop = append(drop, op{key: metaKey(e.seq, bk), del: true})
		}
		t.idx.remove(i)
	}
	if t.space.readOnly.Load() {
		drop = nil // no repair while read-only; the next Open repairs
	}
	for len(drop) > 0 {
		n := min(len(drop), repairBatch)
		if err := t.writeMeta(drop[:n]); err != nil {
			return fmt.Errorf("nvme: repairing index: %w", err)
		}
		drop = drop[n:]
	}
	t.nextSeq = maxSeq + 1
	return nil
}

// checkFormat accepts a directory holding this format, or an empty one
// (which it marks); anything else is ErrFormat.
func (t *Tier) checkFormat(ctx context.Context) error {
	_, err := t.st.get(formatKey, func(v []byte) error {
		if len(v) != 1 || v[0] != formatVersion {
			return fmt.Errorf("%w: format %q, want %q", ErrFormat, v, formatVersion)
		}
		return nil
	})
	if !errors.Is(err, errNoKey) {
		return err
	}
	empty := true
	err = t.st.scan(ctx, nil, nil, false, func([]byte, []byte) error {
		empty = false
		return errBatchFull
	})
	if err != nil && !errors.Is(err, errBatchFull) {
		return err
	}
	if !empty {
		return fmt.Errorf("%w: %s holds a Badger database without a kvtier format key", ErrFormat, t.dir)
	}
	return t.writeMeta([]op{{key: formatKey, val: []byte{formatVersion}}})
}

// writeMeta is st.write for writes without a frame (deletes, repairs, the
// format key), after the space guard's check.
func (t *Tier) writeMeta(ops []op) error {
	if err := t.space.admitMeta(); err != nil {
		return err
	}
	err := t.st.write(ops)
	t.space.failed(err)
	return err
}
