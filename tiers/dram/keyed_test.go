package dram

import (
	"context"
	"fmt"
	"sync"

	"github.com/kvtier/kvtier/tiers"
)

// keyed is a key index over the arena's slot API: Put, Get, View, Delete,
// and Reserve → Commit, blocks named by tiers.Key. The arena had this API
// itself; only tests used it (the Store keeps each block's slot in its own
// index), so it lives here, where the tests drive the allocator through it.
// Keyed blocks are sealed slots.
type keyed struct {
	*Arena
	shards      [nShards]keyShard
	errNotFound error // preallocated: a miss must not allocate
}

type keyShard struct {
	// mu protects m. Put and Get hold it shared while they copy into or out
	// of the mapping, so a slot is never freed under a copy; Close takes
	// every shard exclusively before it unmaps.
	mu sync.RWMutex
	m  map[tiers.Key]tiers.Slot
	l  map[tiers.Key]tiers.Layout
}

func keyedOf(a *Arena) *keyed {
	k := &keyed{Arena: a, errNotFound: fmt.Errorf("%w in %s", tiers.ErrNotFound, a.name)}
	for i := range k.shards {
		k.shards[i].m = make(map[tiers.Key]tiers.Slot)
		k.shards[i].l = make(map[tiers.Key]tiers.Layout)
	}
	return k
}

func (a *keyed) shard(k tiers.Key) *keyShard {
	// The digest is uniformly distributed; per-layer keys share it, so mix
	// the layer in.
	x := k.Hash.EventID() ^ uint64(uint16(k.Layer))*0x9e3779b97f4a7c15
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	return &a.shards[x&(nShards-1)]
}

// Put stores a copy of data under k, replacing any copy already there.
func (a *keyed) Put(ctx context.Context, k tiers.Key, l tiers.Layout, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := k.Validate(); err != nil {
		return err
	}
	if err := l.CheckLen(len(data)); err != nil {
		return fmt.Errorf("%w: %w", tiers.ErrInvalid, err)
	}
	sh := a.shard(k)
	sh.mu.RLock()
	if a.closed.Load() {
		sh.mu.RUnlock()
		return tiers.ErrClosed
	}
	s, view, err := a.reserve(int64(len(data)))
	if err != nil {
		sh.mu.RUnlock()
		return err
	}
	copy(view, data)
	sh.mu.RUnlock()
	if err := a.commit(k, l, s); err != nil {
		a.release(s.Offset, s.Gen, stateReserved)
		return err
	}
	return nil
}

// Get appends k's bytes to dst, copied under the key's shard read lock.
func (a *keyed) Get(ctx context.Context, k tiers.Key, dst []byte) (tiers.Layout, []byte, error) {
	if err := ctx.Err(); err != nil {
		return tiers.Layout{}, dst, err
	}
	if err := k.Validate(); err != nil {
		return tiers.Layout{}, dst, err
	}
	sh := a.shard(k)
	sh.mu.RLock()
	if a.closed.Load() {
		sh.mu.RUnlock()
		return tiers.Layout{}, dst, tiers.ErrClosed
	}
	s, ok := sh.m[k]
	if !ok {
		sh.mu.RUnlock()
		return tiers.Layout{}, dst, a.errNotFound
	}
	l := sh.l[k]
	dst = append(dst, a.mem[s.Offset:s.Offset+s.Len]...)
	sh.mu.RUnlock()
	return l, dst, nil
}

// View returns k's bytes in place, with its layout and slot.
func (a *keyed) View(k tiers.Key) (tiers.Layout, tiers.Slot, []byte, error) {
	if a.closed.Load() {
		return tiers.Layout{}, tiers.Slot{}, nil, tiers.ErrClosed
	}
	if err := k.Validate(); err != nil {
		return tiers.Layout{}, tiers.Slot{}, nil, err
	}
	sh := a.shard(k)
	sh.mu.RLock()
	s, ok := sh.m[k]
	l := sh.l[k]
	sh.mu.RUnlock()
	if !ok {
		return tiers.Layout{}, tiers.Slot{}, nil, a.errNotFound
	}
	return l, s, a.mem[s.Offset : s.Offset+s.Len : s.Offset+s.Len], nil
}

// Delete removes k and frees its slot. Deleting a missing block is not an error.
func (a *keyed) Delete(ctx context.Context, k tiers.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if a.closed.Load() {
		return tiers.ErrClosed
	}
	if err := k.Validate(); err != nil {
		return err
	}
	sh := a.shard(k)
	sh.mu.Lock()
	s, ok := sh.m[k]
	if ok {
		delete(sh.m, k)
		delete(sh.l, k)
	}
	sh.mu.Unlock()
	if ok {
		a.dropCommitted(s)
	}
	return nil
}

// dropCommitted frees the slot of a block just removed from the index, as
// Free does but also while Close runs (a replacing Put may race it).
func (a *keyed) dropCommitted(s tiers.Slot) {
	if _, ok := a.release(s.Offset, s.Gen, stateSealed); !ok {
		// Only the index frees keyed slots, and it just gave this one up.
		panic(fmt.Sprintf("dram: keyed slot at %d (gen %d) was not live", s.Offset, s.Gen))
	}
	c := a.sealedCounter(s.Offset)
	c.used.Add(-s.Len)
	c.blocks.Add(-1)
}

// Reserve allocates a slot for a block of layout l without making it
// visible. Fill the returned bytes, then Commit or Abort.
func (a *keyed) Reserve(l tiers.Layout) (tiers.Slot, []byte, error) {
	if a.closed.Load() {
		return tiers.Slot{}, nil, tiers.ErrClosed
	}
	if err := l.Validate(); err != nil {
		return tiers.Slot{}, nil, fmt.Errorf("%w: %w", tiers.ErrInvalid, err)
	}
	return a.reserve(l.Size())
}

// Commit makes the reserved slot s visible as k, replacing (and freeing) any
// copy of k already there; an error leaves the reservation as it was.
func (a *keyed) Commit(k tiers.Key, l tiers.Layout, s tiers.Slot) error {
	if a.closed.Load() {
		return tiers.ErrClosed
	}
	if err := k.Validate(); err != nil {
		return err
	}
	if !a.wellFormed(s) {
		return fmt.Errorf("%w: offset %d, length %d, gen %d", ErrNotReserved, s.Offset, s.Len, s.Gen)
	}
	if err := l.CheckLen(int(s.Len)); err != nil {
		return fmt.Errorf("%w: %w", tiers.ErrInvalid, err)
	}
	return a.commit(k, l, s)
}

// commit seals a well-formed slot s, as Seal does but also while Close
// runs, and indexes it; k and l are valid.
func (a *keyed) commit(k tiers.Key, l tiers.Layout, s tiers.Slot) error {
	if err := a.claim(s, stateSealed); err != nil {
		return err
	}
	c := a.sealedCounter(s.Offset)
	c.used.Add(s.Len)
	c.blocks.Add(1)
	sh := a.shard(k)
	sh.mu.Lock()
	old, had := sh.m[k]
	sh.m[k], sh.l[k] = s, l
	sh.mu.Unlock()
	if had {
		a.dropCommitted(old)
	}
	return nil
}

// Close waits for the copies of Put and Get in flight, then closes the arena.
func (a *keyed) Close() error {
	for i := range a.shards {
		a.shards[i].mu.Lock()
	}
	err := a.Arena.Close()
	for i := range a.shards {
		a.shards[i].mu.Unlock()
	}
	return err
}

// indexed returns every indexed block's slot, for checkInvariants.
func (a *keyed) indexed() map[tiers.Key]tiers.Slot {
	all := map[tiers.Key]tiers.Slot{}
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.RLock()
		for k, s := range sh.m {
			if a.shard(k) != sh {
				panic(fmt.Sprintf("%v is in the wrong shard", k))
			}
			all[k] = s
		}
		sh.mu.RUnlock()
	}
	return all
}
