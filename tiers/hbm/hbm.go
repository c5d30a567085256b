package hbm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/kvtier/kvtier/cgo/gpu"
	"github.com/kvtier/kvtier/tiers"
)

// Defaults.
const (
	DefaultStreams   = 4
	DefaultChunkSize = 32 << 20
	// MinCapacity is the smallest arena New accepts.
	MinCapacity = 1 << 20
	// allocGranule: drivers carve allocations under 2 MiB out of larger
	// blocks, and an IPC handle exports the whole block. The arena's
	// allocation is rounded up to whole granules so that its export is its
	// own allocation, starting at the arena's base.
	allocGranule = 2 << 20
)

type config struct {
	streams    int
	chunkSize  int64
	hostRegion []byte
	hostChunk  int64
}

// Option configures New.
type Option func(*config)

// WithStreams sets how many streams (copy lanes) the tier uses; that many
// copies can be in flight at once. Default DefaultStreams.
func WithStreams(n int) Option { return func(c *config) { c.streams = n } }

// WithChunkSize sets the unit in which the arena is given to size classes.
// The default is DefaultChunkSize, or a sixteenth of the capacity when that
// is smaller, so that a small arena still has room for several classes.
// Blocks larger than half a chunk take whole chunks.
func WithChunkSize(n int64) Option { return func(c *config) { c.chunkSize = n } }

// FractionOfFree returns fraction of free bytes, rounded down to whole MiB:
// the capacity to pass to New when the arena should take a share of the
// GPU's free memory (free from Device.MemInfo, or nvmlinfo's MemFree).
func FractionOfFree(free int64, fraction float64) int64 {
	if free <= 0 || fraction <= 0 {
		return 0
	}
	return int64(float64(free)*min(fraction, 1)) &^ (1<<20 - 1)
}

// CapacityFromDevice is FractionOfFree of the device's free memory now.
func CapacityFromDevice(dev gpu.Device, fraction float64) (int64, error) {
	free, _, err := dev.MemInfo()
	if err != nil {
		return 0, fmt.Errorf("hbm: reading free device memory: %w", err)
	}
	return FractionOfFree(free, fraction), nil
}

// entry is one block in HBM.
type entry struct {
	off, size int64 // slot offset in the arena and slot size
	n         int64 // block length
	layout    tiers.Layout
	readers   int  // Gets copying out of the slot
	dead      bool // deleted or replaced while read: free when readers drop to 0
}

// Tier is the HBM tier: one device arena allocated at New, carved into slots
// by size class, filled and read by copies on the tier's own streams. It
// implements tiers.Tier and is safe for concurrent use.
type Tier struct {
	dev       gpu.Device
	base      gpu.DevPtr
	capacity  int64
	chunkSize int64
	lanes     chan gpu.Stream // idle streams; a copy takes one and gives it back
	pins      *hostPins       // nil without WithHostRegion

	// life is held shared by every operation for its whole length and
	// exclusively by Close, so the arena and streams are never freed
	// under a copy.
	life sync.RWMutex

	mu       sync.Mutex // protects the fields below
	closed   bool
	index    map[tiers.Key]*entry
	alloc    *allocator
	used     int64 // block bytes held
	reserved int64 // slot bytes taken, in-flight puts included
	ipc      *gpu.IPCHandle
	// importers maps each live IPC lease to its expiry; detached is
	// closed and replaced whenever one ends, waking Close.
	importers    map[uint64]time.Time
	nextImporter uint64
	detached     chan struct{}

	closing chan struct{} // closed when Close begins (Closing)
	now     func() time.Time

	putLat, getLat         Histogram
	putCopyLat, getCopyLat Histogram
}

var _ tiers.Tier = (*Tier)(nil)

// New allocates an arena of capacity bytes (rounded down to whole chunks) on
// dev and the tier's streams. The device stays owned by the caller, who
// closes it after the tier.
func New(dev gpu.Device, capacity int64, opts ...Option) (*Tier, error) {
	cfg := config{streams: DefaultStreams}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.chunkSize == 0 {
		cfg.chunkSize = max(min(DefaultChunkSize, capacity/16&^(minClass-1)), minClass)
	}
	switch {
	case dev == nil:
		return nil, fmt.Errorf("%w: hbm: no device", tiers.ErrInvalid)
	case capacity < MinCapacity:
		return nil, fmt.Errorf("%w: hbm: capacity %d below the %d-byte minimum", tiers.ErrInvalid, capacity, MinCapacity)
	case cfg.streams < 1 || cfg.streams > 64:
		return nil, fmt.Errorf("%w: hbm: %d streams not in 1..64", tiers.ErrInvalid, cfg.streams)
	case cfg.chunkSize < minClass || cfg.chunkSize%minClass != 0:
		return nil, fmt.Errorf("%w: hbm: chunk size %d is not a positive multiple of %d", tiers.ErrInvalid, cfg.chunkSize, minClass)
	}
	if cfg.chunkSize > capacity {
		cfg.chunkSize = capacity &^ (minClass - 1)
	}
	capacity = capacity / cfg.chunkSize * cfg.chunkSize
	pins, err := newHostPins(dev, cfg.hostRegion, cfg.hostChunk)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", tiers.ErrInvalid, err)
	}
	base, err := dev.Alloc((capacity + allocGranule - 1) / allocGranule * allocGranule)
	if err != nil {
		if errors.Is(err, gpu.ErrOutOfMemory) {
			return nil, fmt.Errorf("%w: hbm: allocating a %d-byte arena: %w", tiers.ErrExhausted, capacity, err)
		}
		return nil, fmt.Errorf("hbm: allocating a %d-byte arena: %w", capacity, err)
	}
	t := &Tier{
		dev:       dev,
		base:      base,
		capacity:  capacity,
		chunkSize: cfg.chunkSize,
		lanes:     make(chan gpu.Stream, cfg.streams),
		pins:      pins,
		index:     make(map[tiers.Key]*entry),
		alloc:     newAllocator(capacity, cfg.chunkSize),
		importers: make(map[uint64]time.Time),
		detached:  make(chan struct{}),
		closing:   make(chan struct{}),
		now:       time.Now,
	}
	for range cfg.streams {
		s, err := dev.NewStream()
		if err != nil {
			t.closeLanes()
			_ = dev.Free(base)
			return nil, fmt.Errorf("hbm: creating a stream: %w", err)
		}
		t.lanes <- s
	}
	return t, nil
}

// take waits for an idle stream.
func (t *Tier) take(ctx context.Context) (gpu.Stream, error) {
	select {
	case s := <-t.lanes:
		return s, nil
	default:
	}
	select {
	case s := <-t.lanes:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// enter starts an operation: on success it holds life shared, and the
// caller releases it with t.life.RUnlock.
func (t *Tier) enter() error {
	t.life.RLock()
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		t.life.RUnlock()
		return fmt.Errorf("%w: hbm tier", tiers.ErrClosed)
	}
	return nil
}

// Put copies data into a slot of the arena and waits for the copy. It
// returns an error wrapping tiers.ErrFull when no slot of the block's size
// class is free and no chunk is left to make one.
func (t *Tier) Put(ctx context.Context, k tiers.Key, l tiers.Layout, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := k.Validate(); err != nil {
		return err
	}
	if err := l.CheckLen(len(data)); err != nil {
		return fmt.Errorf("%w: %w", tiers.ErrInvalid, err)
	}
	if err := t.enter(); err != nil {
		return err
	}
	defer t.life.RUnlock()
	start := time.Now()
	n := int64(len(data))

	t.mu.Lock()
	off, size, ok := t.alloc.alloc(n)
	if !ok {
		reserved := t.reserved
		t.mu.Unlock()
		if n > t.capacity {
			return fmt.Errorf("%w: hbm: %d-byte block exceeds the %d-byte arena", tiers.ErrExhausted, n, t.capacity)
		}
		return fmt.Errorf("%w: hbm: no room for a %d-byte block (%d of %d bytes reserved)", tiers.ErrFull, n, reserved, t.capacity)
	}
	t.reserved += size
	t.mu.Unlock()

	t.pins.ensure(data)
	s, err := t.take(ctx)
	if err == nil {
		var d time.Duration
		d, err = s.CopyH2D(t.base+gpu.DevPtr(off), data)
		t.lanes <- s
		if err == nil {
			t.putCopyLat.Record(d)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.release(off, size)
		return fmt.Errorf("hbm: put %v: %w", k, err)
	}
	if old := t.index[k]; old != nil {
		t.drop(old)
	}
	t.index[k] = &entry{off: off, size: size, n: n, layout: l}
	t.used += n
	t.putLat.Record(time.Since(start))
	return nil
}

// drop forgets e's bytes; its slot is freed now or by the last reader.
// Called with t.mu held.
func (t *Tier) drop(e *entry) {
	t.used -= e.n
	if e.readers > 0 {
		e.dead = true
		return
	}
	t.release(e.off, e.size)
}

// release frees a slot and its reservation. Called with t.mu held.
func (t *Tier) release(off, size int64) {
	t.alloc.free(off, size)
	t.reserved -= size
}

// Get appends k's bytes to dst, copying them from the device, and returns
// the block's layout and the extended slice. HBM keeps no checksum (the DRAM
// copy, which is inclusive, has one), so Get never reports ErrCorrupt.
func (t *Tier) Get(ctx context.Context, k tiers.Key, dst []byte) (tiers.Layout, []byte, error) {
	if err := ctx.Err(); err != nil {
		return tiers.Layout{}, dst, err
	}
	if err := t.enter(); err != nil {
		return tiers.Layout{}, dst, err
	}
	defer t.life.RUnlock()
	start := time.Now()

	t.mu.Lock()
	e := t.index[k]
	if e == nil {
		t.mu.Unlock()
		return tiers.Layout{}, dst, fmt.Errorf("%w: hbm: %v", tiers.ErrNotFound, k)
	}
	e.readers++
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		if e.readers--; e.dead && e.readers == 0 {
			t.release(e.off, e.size)
		}
		t.mu.Unlock()
	}()

	s, err := t.take(ctx)
	if err != nil {
		return tiers.Layout{}, dst, err
	}
	n := len(dst)
	dst = slices.Grow(dst, int(e.n))[:n+int(e.n)]
	t.pins.ensure(dst[n:])
	d, err := s.CopyD2H(dst[n:], t.base+gpu.DevPtr(e.off))
	t.lanes <- s
	if err != nil {
		return tiers.Layout{}, dst[:n], fmt.Errorf("hbm: get %v: %w", k, err)
	}
	t.getCopyLat.Record(d)
	t.getLat.Record(time.Since(start))
	return e.layout, dst, nil
}

// Delete removes k. A Get in progress finishes reading the old bytes.
func (t *Tier) Delete(ctx context.Context, k tiers.Key) error {
	if err := t.enter(); err != nil {
		return err
	}
	defer t.life.RUnlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.index[k]; e != nil {
		delete(t.index, k)
		t.drop(e)
	}
	return nil
}

// Stats returns the tier's accounting.
func (t *Tier) Stats() tiers.TierStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return tiers.TierStats{
		Name:          "hbm",
		CapacityBytes: t.capacity,
		UsedBytes:     t.used,
		ReservedBytes: t.reserved,
		Blocks:        int64(len(t.index)),
	}
}

// Latency returns the tier's latency percentiles since New.
func (t *Tier) Latency() Latency {
	return Latency{
		Put:     t.putLat.Percentiles(),
		Get:     t.getLat.Percentiles(),
		PutCopy: t.putCopyLat.Percentiles(),
		GetCopy: t.getCopyLat.Percentiles(),
	}
}

// Base returns the arena's device address, for in-process device-to-device
// copies at the offsets Locate returns.
func (t *Tier) Base() gpu.DevPtr { return t.base }

// Locate returns where k's bytes are in the arena. The location is valid
// until k is deleted or replaced; the Store pins a block while an engine
// reads it.
func (t *Tier) Locate(k tiers.Key) (offset, length int64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, 0, fmt.Errorf("%w: hbm tier", tiers.ErrClosed)
	}
	e := t.index[k]
	if e == nil {
		return 0, 0, fmt.Errorf("%w: hbm: %v", tiers.ErrNotFound, k)
	}
	return e.off, e.n, nil
}

// Close stops new operations, tells IPC importers (Closing), waits until
// every importer lease has been detached or has expired (at most
// MaxIPCLease), waits for operations in progress, destroys the streams and
// frees the arena. The device is left open.
func (t *Tier) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.closing)
	t.mu.Unlock()
	// Freeing an exported allocation that another process still maps is
	// undefined behaviour: wait for the importers first.
	t.waitImporters()
	t.life.Lock()
	defer t.life.Unlock()
	t.mu.Lock()
	t.index = nil
	t.mu.Unlock()
	err := errors.Join(t.closeLanes(), t.pins.release())
	if ferr := t.dev.Free(t.base); ferr != nil {
		err = errors.Join(err, fmt.Errorf("hbm: freeing the arena: %w", ferr))
	}
	return err
}

// closeLanes destroys the idle streams (all of them, once operations ended).
func (t *Tier) closeLanes() error {
	var err error
	for {
		select {
		case s := <-t.lanes:
			if cerr := s.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("hbm: closing a stream: %w", cerr))
			}
		default:
			return err
		}
	}
}
