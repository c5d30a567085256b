package dram

import (
	"fmt"

	"github.com/kvtier/kvtier/tiers"
)

// Errors returned by this package, besides the tiers sentinels (ErrFull,
// ErrNotFound, ErrInvalid, ErrClosed) that the HostTier contract names. They
// are wrapped with detail; test with errors.Is.
var (
	// ErrNotReserved: Commit or Abort of a slot that is not an outstanding
	// reservation (already committed, aborted, reused, or never handed out).
	// It wraps tiers.ErrInvalid.
	ErrNotReserved = fmt.Errorf("%w: dram: slot is not an outstanding reservation", tiers.ErrInvalid)
	// ErrNotSealed: Free of a slot that is not a sealed block.
	ErrNotSealed = fmt.Errorf("%w: dram: slot is not a sealed block", tiers.ErrInvalid)
	// ErrTooLarge: the block is larger than the whole arena, so no amount of
	// eviction makes room. It wraps tiers.ErrFull, so a caller that only knows
	// the tier contract still evicts and then gives up; a caller that checks
	// for it first (or compares with MaxBlockLen) can fail fast with
	// tiers.ErrExhausted.
	ErrTooLarge = fmt.Errorf("%w: dram: block larger than the arena", tiers.ErrFull)
	// ErrNoRoom: no free slot of the block's size class and no free run of
	// chunks to carve one from. It wraps tiers.ErrFull: evict and retry.
	ErrNoRoom = fmt.Errorf("%w: dram: no free slot for the block's size class", tiers.ErrFull)
)
