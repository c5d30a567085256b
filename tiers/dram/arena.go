package dram

import (
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/cpu"

	"github.com/kvtier/kvtier/tiers"
)

var _ tiers.HostTier = (*Arena)(nil)

// nShards is the number of sealed-slot counter pairs, spread by offset; a
// power of two.
const nShards = 64

// counterPair counts the bytes and blocks of sealed slots.
type counterPair struct {
	used   atomic.Int64
	blocks atomic.Int64
	_      cpu.CacheLinePad
}

// Arena is the DRAM tier: one shared memory mapping carved into slots by size
// class. It implements tiers.HostTier and is safe for concurrent use. See the package documentation for the design and caveats.
type Arena struct {
	name       string
	size       int64 // mapping length: a multiple of chunkSize
	chunkSize  int64
	chunkShift uint
	nChunks    int
	wpc        int // slot-bitmap words per chunk

	// closed is set once by Close; methods check it on entry.
	closed atomic.Bool
	mem    []byte   // the mapping; immutable, unmapped by Close
	file   *os.File // the memfd (or unlinked file); nil on platforms without one
	unmap  func([]byte) error

	// meta holds, for every 4 KiB page, gen<<genShift|state of the slot that
	// starts there. Accessed atomically only; a successful CompareAndSwap out
	// of a live state is what makes a caller the one that frees a slot.
	meta []atomic.Uint32

	sealed [nShards]counterPair // accounting of sealed slots, by offset

	classes []class // sorted by size; size/chunks/slots immutable, the rest under class.mu

	runMu       sync.Mutex // protects freeChunks, nFreeChunks, runHint; chunkHead is written under it
	freeChunks  []uint64   // bit set: chunk is free
	nFreeChunks int
	runHint     int            // no chunk below it is free
	chunkHead   []atomic.Int32 // first chunk of the span that owns each chunk, noSpan when free
	spans       []span         // indexed by a span's first chunk; see span
	slotBits    []uint64       // free-slot bitmaps, wpc words per chunk, under the span's class lock

	largeReserved atomic.Int64 // slot bytes of dedicated runs; per-class counters hold the rest
}

// New maps an arena of capacity bytes, rounded down to a multiple of the
// chunk size (which must leave at least one chunk).
func New(capacity int64, opts ...Option) (*Arena, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	chunk := o.chunkSize
	size := capacity &^ (chunk - 1)
	if capacity <= 0 || size < chunk {
		return nil, fmt.Errorf("%w: dram: capacity %d is less than one %d-byte chunk", tiers.ErrInvalid, capacity, chunk)
	}
	if size > math.MaxInt || size/chunk > math.MaxInt32 {
		return nil, fmt.Errorf("%w: dram: capacity %d is too large for this platform or chunk size", tiers.ErrInvalid, capacity)
	}
	nChunks := int(size / chunk)
	mem, file, unmap, err := mapArena(o.name, size, &o)
	if err != nil {
		return nil, err
	}
	a := &Arena{
		name:        o.name,
		size:        size,
		chunkSize:   chunk,
		chunkShift:  uint(log2(chunk)),
		nChunks:     nChunks,
		wpc:         int((chunk/pageSize + 63) / 64),
		mem:         mem,
		file:        file,
		unmap:       unmap,
		meta:        make([]atomic.Uint32, size/pageSize),
		classes:     buildClasses(chunk, nChunks),
		freeChunks:  make([]uint64, (nChunks+63)/64),
		nFreeChunks: nChunks,
		chunkHead:   make([]atomic.Int32, nChunks),
		spans:       make([]span, nChunks),
	}
	a.slotBits = make([]uint64, nChunks*a.wpc)
	setRange(a.freeChunks, nChunks)
	for i := range a.chunkHead {
		a.chunkHead[i].Store(noSpan)
	}
	return a, nil
}

func log2(n int64) int {
	i := 0
	for int64(1)<<i < n {
		i++
	}
	return i
}

func (a *Arena) reserve(n int64) (tiers.Slot, []byte, error) {
	if n > a.size {
		return tiers.Slot{}, nil, fmt.Errorf("%w: %s: %d-byte block, the arena holds %d bytes", ErrTooLarge, a.name, n, a.size)
	}
	off, _, gen, ok := a.alloc(n)
	if !ok {
		// The Store meets this on every put once the arena is full, so it
		// is a preallocated error: no allocation on the hot path.
		return tiers.Slot{}, nil, ErrNoRoom
	}
	return tiers.Slot{Offset: off, Len: n, Gen: gen}, a.mem[off : off+n : off+n], nil
}

// Abort frees a reservation that will not be sealed. Aborting a slot that
// is not an outstanding reservation is ErrNotReserved.
func (a *Arena) Abort(s tiers.Slot) error { return a.releaseFrom(s, stateReserved, ErrNotReserved) }

// claim moves the outstanding reservation s, well formed, to state to
// (sealed), after checking that s.Len fits its slot; anything
// else is ErrNotReserved (or ErrInvalid for the length), and s is left as
// it was.
func (a *Arena) claim(s tiers.Slot, to uint32) error {
	p := &a.meta[s.Offset>>pageShift]
	if !p.CompareAndSwap(s.Gen<<genShift|stateReserved, s.Gen<<genShift|to) {
		return fmt.Errorf("%w: offset %d, gen %d", ErrNotReserved, s.Offset, s.Gen)
	}
	// The slot is ours now: its span cannot be released under us.
	if size := a.spans[a.chunkHead[s.Offset>>a.chunkShift].Load()].slotSize.Load(); s.Len > size {
		p.Store(s.Gen<<genShift | stateReserved)
		return fmt.Errorf("%w: dram: %d-byte block does not fit the %d-byte slot at %d", tiers.ErrInvalid, s.Len, size, s.Offset)
	}
	return nil
}

// releaseFrom frees slot s if it is in state from (reserved or sealed);
// anything else is notErr, and nothing changes.
func (a *Arena) releaseFrom(s tiers.Slot, from uint32, notErr error) error {
	if a.closed.Load() {
		return tiers.ErrClosed
	}
	if !a.wellFormed(s) {
		return fmt.Errorf("%w: offset %d, length %d, gen %d", notErr, s.Offset, s.Len, s.Gen)
	}
	if _, ok := a.release(s.Offset, s.Gen, from); !ok {
		return fmt.Errorf("%w: offset %d, gen %d", notErr, s.Offset, s.Gen)
	}
	return nil
}

// wellFormed reports whether s could name a slot of this arena: inside the
// mapping, page aligned, a generation that can have been handed out.
func (a *Arena) wellFormed(s tiers.Slot) bool {
	return s.Offset >= 0 && s.Offset < a.size && s.Offset&(pageSize-1) == 0 &&
		s.Len > 0 && s.Len <= a.size-s.Offset && s.Gen != 0 && s.Gen <= maxGen
}

// Validate reports whether s is still the live (reserved or sealed) slot
// at s.Offset with generation s.Gen, and s.Len fits in it. The shared-memory
// data plane uses it to reject a client's stale slot: every time a region is
// handed out again its generation changes.
func (a *Arena) Validate(s tiers.Slot) bool {
	if a.closed.Load() {
		return false
	}
	if !a.wellFormed(s) {
		return false
	}
	p := &a.meta[s.Offset>>pageShift]
	m := p.Load()
	if m&stateMask == stateFree || m>>genShift != s.Gen {
		return false
	}
	h := a.chunkHead[s.Offset>>a.chunkShift].Load()
	if h == noSpan || s.Len > a.spans[h].slotSize.Load() {
		return false
	}
	// The span was read while the slot was live; if it still is, it was the
	// slot's own span.
	return p.Load() == m
}

// Stats returns the arena's accounting. UsedBytes is the sum of sealed
// block lengths; ReservedBytes the sum of the slot sizes of sealed blocks
// and outstanding reservations.
//
// The counters are spread by offset and kept per class, where the locks
// already are, so they cost the hot path no shared cache line; Stats sums
// them, and under concurrent updates the sum is a moment's approximation.
func (a *Arena) Stats() tiers.TierStats {
	st := tiers.TierStats{Name: a.name, CapacityBytes: a.size, ReservedBytes: a.largeReserved.Load()}
	for i := range a.sealed {
		st.UsedBytes += a.sealed[i].used.Load()
		st.Blocks += a.sealed[i].blocks.Load()
	}
	for i := range a.classes {
		st.ReservedBytes += a.classes[i].reserved.Load()
	}
	return st
}

// Close unmaps the arena and closes its file. Every method returns
// tiers.ErrClosed afterwards. Views handed out earlier (by Alloc or Bytes)
// must not be used after it: the Store closes the arena only once no
// reader holds a block.
func (a *Arena) Close() error {
	if a.closed.Swap(true) {
		return tiers.ErrClosed
	}
	err := a.unmap(a.mem)
	if a.file != nil {
		if cerr := a.file.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("dram: close %s: %w", a.name, err)
	}
	return nil
}

// File returns the file that backs the mapping (a memfd on Linux), to be
// passed to local clients over a Unix socket (SCM_RIGHTS) and mapped
// MAP_SHARED with length Size. The arena owns it: do not close it. On
// platforms without file-backed shared memory it is nil. Nil after Close.
func (a *Arena) File() *os.File {
	if a.closed.Load() {
		return nil
	}
	return a.file
}

// Size returns the length of the mapping in bytes (the capacity).
func (a *Arena) Size() int64 { return a.size }

// Base returns the whole mapping, for registering it with a GPU as pinned
// host memory (&Base()[0] is page aligned) and for tests. Slot offsets index
// it. Nil after Close; never use it after Close.
func (a *Arena) Base() []byte {
	if a.closed.Load() {
		return nil
	}
	return a.mem
}

// ChunkSize returns the allocation granule between size classes.
func (a *Arena) ChunkSize() int64 { return a.chunkSize }

// MaxBlockLen returns the largest block the arena can ever hold (when empty).
// A longer block is ErrTooLarge.
func (a *Arena) MaxBlockLen() int64 { return a.size }

// SlotSize returns the bytes a block of n bytes consumes (its slot), or 0
// when it can never fit.
func (a *Arena) SlotSize(n int64) int64 { return a.slotSizeFor(n) }

// Name returns the tier's name.
func (a *Arena) Name() string { return a.name }
