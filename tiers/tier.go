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
}

// Tier is one level of block storage with a hard byte capacity. DRAM, NVMe
// and HBM implement it; a remote tier would too. A Tier is keyed storage and
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

// HostTier is a Tier whose blocks live in host memory the caller can address:
// the DRAM arena. The Store lands every block here and serves reads from it
// without copying.
//
// A view returned by Reserve or View is valid until the block is deleted
// (or the reservation aborted); the Store guarantees that by never deleting a
// pinned block. Never keep a view past Release.
type HostTier interface {
	Tier
	// Reserve allocates room for a block of layout l without making it
	// visible. The caller fills the returned bytes, then calls Commit or
	// Abort. ErrFull when there is no room.
	Reserve(l Layout) (Slot, []byte, error)
	// Commit makes a reserved slot visible as k, replacing any existing copy
	// of k (whose slot is freed). A slot is committed at most once.
	Commit(k Key, l Layout, s Slot) error
	// Abort frees a reservation that will not be committed.
	Abort(s Slot) error
	// View returns k's bytes in place, with its layout and slot.
	View(k Key) (Layout, Slot, []byte, error)
}

// Scanner is implemented by persistent tiers: Scan calls fn for every block
// the tier holds, so the Store can rebuild its index on restart. Blocks are
// visited oldest write first where the tier knows the order.
type Scanner interface {
	Scan(ctx context.Context, fn func(k Key, l Layout, size int64) error) error
}

// Syncer is implemented by persistent tiers: Sync returns once every Put that
// returned before the call is on stable storage.
type Syncer interface {
	Sync() error
}
