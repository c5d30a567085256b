package dram

import (
	"fmt"

	"github.com/kvtier/kvtier/tiers"
)

// The slot-addressed API: blocks named by their tiers.Slot, with no key
// index. The Store uses it, keeping each block's slot in its own index, so
// the DRAM tier costs the Go heap nothing per block. A slot goes
// Alloc → (fill) → Seal → … → Free, or Alloc → Abort.

// Alloc reserves a slot of n bytes. Fill the
// returned bytes, then Seal or Abort. The error wraps tiers.ErrFull when
// there is no room.
func (a *Arena) Alloc(n int64) (tiers.Slot, []byte, error) {
	if a.closed.Load() {
		return tiers.Slot{}, nil, tiers.ErrClosed
	}
	if n <= 0 {
		return tiers.Slot{}, nil, fmt.Errorf("%w: dram: %d-byte slot", tiers.ErrInvalid, n)
	}
	return a.reserve(n)
}

// Seal turns the outstanding reservation s into a held block: counted in
// Stats and left alone until Free. Sealing anything else is ErrNotReserved.
func (a *Arena) Seal(s tiers.Slot) error {
	if a.closed.Load() {
		return tiers.ErrClosed
	}
	if !a.wellFormed(s) {
		return fmt.Errorf("%w: offset %d, length %d, gen %d", ErrNotReserved, s.Offset, s.Len, s.Gen)
	}
	if err := a.claim(s, stateSealed); err != nil {
		return err
	}
	c := a.sealedCounter(s.Offset)
	c.used.Add(s.Len)
	c.blocks.Add(1)
	return nil
}

// Free releases the sealed slot s. Freeing anything else (a reservation, a
// slot already freed or handed out again) is ErrNotSealed and changes
// nothing.
func (a *Arena) Free(s tiers.Slot) error {
	if err := a.releaseFrom(s, stateSealed, ErrNotSealed); err != nil {
		return err
	}
	c := a.sealedCounter(s.Offset)
	c.used.Add(-s.Len)
	c.blocks.Add(-1)
	return nil
}

// Bytes returns the bytes of slot s in place: s.Len bytes at s.Offset. It
// does not check that s is live (the caller owns it, by its reservation or
// its index); nil for a slot outside the mapping.
func (a *Arena) Bytes(s tiers.Slot) []byte {
	if s.Offset < 0 || s.Len < 0 || s.Offset > a.size || s.Len > a.size-s.Offset {
		return nil
	}
	return a.mem[s.Offset : s.Offset+s.Len : s.Offset+s.Len]
}

// sealedCounter is the per-shard counter pair a sealed slot is accounted in,
// spread by offset so that no counter is shared by every operation.
func (a *Arena) sealedCounter(off int64) *counterPair {
	return &a.sealed[(off>>pageShift)&(nShards-1)]
}
