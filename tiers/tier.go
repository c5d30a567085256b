package tiers

import (
	"context"

	"github.com/kvtier/kvtier/codec"
)

// Layout describes the tensor a block holds; it is owned by the codec, which
// is the package that interprets block bytes.
type Layout = codec.Layout

// Level names a place in the hierarchy, fastest first.
type Level uint8

const (
	LevelNone Level = iota // not cached
	LevelHBM
	LevelDRAM
	LevelNVMe
)

func (l Level) String() string {
	switch l {
	case LevelHBM:
		return "hbm"
	case LevelDRAM:
		return "dram"
	case LevelNVMe:
		return "nvme"
	}
	return "none"
}

// TierStats is a tier's accounting at one moment.
type TierStats struct {
	Name          string
	CapacityBytes int64 // hard bound
	UsedBytes     int64 // bytes of blocks held (block lengths, or frame lengths on disk)
	ReservedBytes int64 // bytes the tier actually consumes (slot sizes, value log); ≥ UsedBytes
	Blocks        int64
	Corrupt       int64 // copies found damaged and removed since open
	// WritesStopped: the tier takes no writes because its device is out of
	// space or failing (puts fail with ErrNoSpace); it resumes by itself.
	WritesStopped bool
	FreeBytes     int64 // space left on the tier's file system at the last check (0: not measured)
	Quarantined   int64 // damaged stores moved aside when the tier opened
}

// Tier is one level of block storage with a hard byte capacity. NVMe and HBM
// implement it, and a remote tier would; the DRAM arena, which the Store
// addresses by slot, is a HostTier instead. A Tier is keyed storage and
// nothing more: placement, eviction, promotion and pins belong to the Store.
// Implementations are safe for concurrent use.
type Tier interface {
	// Put stores a copy of data, whose length must be l.Size(), under k,
	// replacing any copy already there. It returns an error wrapping ErrFull
	// when the tier has no room; it never evicts on its own.
	Put(ctx context.Context, k Key, l Layout, data []byte) error
	// Get appends k's bytes to dst and returns the block's layout and the
	// extended slice. A missing block is ErrNotFound. A copy that fails its
	// checksum is removed and reported as ErrCorrupt.
	Get(ctx context.Context, k Key, dst []byte) (Layout, []byte, error)
	// Delete removes k. Deleting a missing block is not an error.
	Delete(ctx context.Context, k Key) error
	// Stats returns the tier's current accounting.
	Stats() TierStats
	// Close releases the tier's resources. The tier is unusable afterwards.
	Close() error
}

// Slot is a reserved or committed region of a host arena, addressable by
// offset within the arena's shared mapping.
type Slot struct {
	Offset int64  // byte offset of the block within the arena mapping
	Len    int64  // block length in bytes
	Gen    uint32 // bumped every time the region is handed out again
}

// HostTier is the DRAM arena: host memory the caller can address, carved
// into slots. The Store lands every block here and serves reads from it in
// place. It keeps no key index of its own: the Store records each block's
// slot in its index entry, so a block costs the Go heap nothing here.
//
// A slot's life is Alloc → fill → Seal → … → Free, or Alloc → Abort. Bytes
// of a slot are valid until it is freed or aborted; the Store guarantees
// that for a block's readers by never freeing a pinned block. Never keep a
// view past Release. Implementations are safe for concurrent use.
type HostTier interface {
	// Alloc reserves a slot of n bytes and returns it with its bytes. An
	// error wrapping ErrFull means no room; it never evicts on its own.
	Alloc(n int64) (Slot, []byte, error)
	// Seal makes a reserved slot a held block, counted in Stats.
	Seal(s Slot) error
	// Abort frees a reservation that will not be sealed.
	Abort(s Slot) error
	// Free frees a sealed block's slot.
	Free(s Slot) error
	// Bytes returns a reserved or sealed slot's bytes in place.
	Bytes(s Slot) []byte
	// SlotSize returns the bytes a block of n bytes takes (its slot), or 0
	// when it can never fit.
	SlotSize(n int64) int64
	// Stats returns the arena's accounting: UsedBytes the sealed blocks'
	// lengths, ReservedBytes what their slots and the reservations consume.
	Stats() TierStats
	// Close releases the arena. It is unusable afterwards.
	Close() error
}

// Scanner is implemented by persistent tiers: Scan calls fn for every block
// the tier holds, so the Store can rebuild its index on restart. Blocks are
// visited oldest write first where the tier knows the order.
type Scanner interface {
	Scan(ctx context.Context, fn func(k Key, l Layout, size int64) error) error
}

// FrameTier is implemented by tiers that store codec frames (NVMe). Blocks
// that DRAM keeps compressed move between DRAM and such a tier as frames,
// never decoded and encoded again (which, in a lossy mode, would drift).
type FrameTier interface {
	// PutFrame stores frame, a complete codec frame of k's block, as it is.
	// A frame that fails its checksum is ErrInvalid; capacity errors are as
	// for Put.
	PutFrame(ctx context.Context, k Key, frame []byte) error
	// GetFrame appends k's frame, its checksum verified, to dst and returns
	// the block's layout and the extended slice. Errors are as for Get.
	GetFrame(ctx context.Context, k Key, dst []byte) (Layout, []byte, error)
}

// Syncer is implemented by persistent tiers: Sync returns once every Put that
// returned before the call is on stable storage.
type Syncer interface {
	Sync() error
}
