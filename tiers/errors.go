package tiers

import (
	"errors"

	"github.com/kvtier/kvtier/codec"
)

// Errors returned by the store and the tiers. They are wrapped with detail;
// test with errors.Is. The daemon maps each to one gRPC code.
var (
	// ErrInvalid: a key, layout or argument is malformed. The message names the field.
	// Layout errors also wrap codec.ErrLayout or codec.ErrSize.
	ErrInvalid = errors.New("tiers: invalid argument")
	// ErrNotFound: the block is not cached (in the tier asked, or anywhere).
	ErrNotFound = errors.New("tiers: block not found")
	// ErrFull: a tier has no room for the block without evicting. Tiers return
	// it; the Store evicts and retries, and never passes it to callers.
	ErrFull = errors.New("tiers: tier full")
	// ErrExhausted: the store cannot make room because the blocks that fill it
	// are pinned (or the block is larger than the tier). Nothing was stored.
	ErrExhausted = errors.New("tiers: resource exhausted")
	// ErrCorrupt: a stored copy failed its checksum. It has been removed and
	// counted; callers see it only from a tier, never from Store.Get, which
	// reports the block as not found instead.
	ErrCorrupt = errors.New("tiers: corrupt block")
	// ErrNotPinned: Release of a block the caller does not hold.
	ErrNotPinned = errors.New("tiers: block not pinned")
	// ErrPinned: the operation needs the block unpinned (Delete of a block a
	// reader holds, or a put that would replace it with another layout).
	ErrPinned = errors.New("tiers: block is pinned")
	// ErrUnavailable: the request needs a tier this store does not have (HBM without a GPU).
	ErrUnavailable = errors.New("tiers: tier unavailable")
	// ErrNoSpace: the tier's device is out of space (or failing), so the tier
	// takes no writes until space returns. Unlike ErrFull, evicting the
	// tier's blocks does not help at once: the Store keeps blocks in the
	// faster tiers, and drops DRAM copies it cannot demote.
	ErrNoSpace = errors.New("tiers: tier out of disk space")
	// ErrClosed: the store or tier is closed.
	ErrClosed = errors.New("tiers: closed")
)

// IsCorrupt reports whether err says that stored bytes were damaged.
func IsCorrupt(err error) bool {
	return errors.Is(err, ErrCorrupt) || errors.Is(err, codec.ErrCorrupt)
}
