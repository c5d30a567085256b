package tiers

import (
	"context"
	"time"
)

// busyWait is how long makeRoom waits for the store's own I/O to let go of
// blocks it would otherwise evict.
const busyWait = 50 * time.Microsecond

// makeRoom evicts one copy from list l. It waits while only blocks under
// write-behind are in the way, and fails with ErrExhausted when every
// candidate is pinned by a reader.
func (s *Store) makeRoom(ctx context.Context, l int) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		freed, busy := s.evict(ctx, l)
		if freed {
			return nil
		}
		if !busy {
			return ErrExhausted
		}
		if err := sleepCtx(ctx, busyWait); err != nil {
			return err
		}
	}
}

// sleepCtx waits for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// bitOf maps a recency list to the copy bit it tracks.
var bitOf = [numLists]uint8{listHBM: inHBM, listDRAM: inDRAM, listNVMe: inNVMe}

// levelOf maps a recency list to its level.
var levelOf = [numLists]Level{listHBM: LevelHBM, listDRAM: LevelDRAM, listNVMe: LevelNVMe}

// evict removes one unpinned copy from the level that list l tracks and
// reports whether it freed anything, and, when it did not, whether blocks
// held only by the store's own I/O (write-behind) were in the way, so that
// waiting briefly will help. Shards are visited round robin from a
// moving cursor, so eviction approximates a global LRU without a global lock.
//
// Within a shard the least recently used copies are examined first:
//   - a DRAM copy that NVMe also holds is dropped for free; one that it does
//     not is demoted (written to NVMe) first, unless there is no NVMe tier;
//   - where the copy is the block's last, leaves of prefix chains (blocks no
//     cached block continues) go first, so cached chains stay prefixes.
func (s *Store) evict(ctx context.Context, l int) (freed, busy bool) {
	n := len(s.shards)
	start := int(s.evictCursor[l].Add(1))
	// First pass: only victims that cost nothing to lose (a copy that is not
	// the block's last, or a chain leaf). Second pass: whatever is unpinned.
	for _, strict := range [...]bool{true, false} {
		for j := 0; j < n; j++ {
			sh := s.shards[(start+j)%n]
			ok, b := s.evictFrom(ctx, sh, l, strict)
			if ok {
				return true, false
			}
			busy = busy || b
		}
	}
	return false, busy
}

// evictFrom tries to evict one copy tracked by list l from sh.
func (s *Store) evictFrom(ctx context.Context, sh *shard, l int, strict bool) (freed, busy bool) {
	bit := bitOf[l]
	sh.mu.Lock()
	victim, demote, busy := s.pickVictim(sh, l, strict)
	if victim == nilIdx {
		sh.mu.Unlock()
		return false, busy
	}
	if !demote {
		sh.ctr.evictions[levelOf[l]]++
		s.dropCopies(sh, victim, s.dropBits(bit))
		s.unlock(sh)
		return true, false
	}
	// Demote: write the DRAM copy to NVMe under an I/O pin, then drop it.
	k := sh.slab[victim].key
	sh.mu.Unlock()
	if err := s.persist(ctx, k); err != nil {
		s.log.Warn("tiers: demoting block to NVMe", "key", k.String(), "err", err)
		return false, false
	}
	sh.mu.Lock()
	i := sh.find(k)
	if i == nilIdx {
		// Deleted meanwhile: its room is free anyway.
		sh.mu.Unlock()
		return true, false
	}
	e := &sh.slab[i]
	if e.pins > 0 || e.where&inDRAM == 0 || e.where&inNVMe == 0 {
		gone := e.where&inDRAM == 0
		sh.mu.Unlock()
		return gone, !gone
	}
	sh.ctr.evictions[LevelDRAM]++
	s.dropCopies(sh, i, s.dropBits(bit))
	s.unlock(sh)
	return true, false
}

// dropBits is what evicting a copy removes: DRAM is inclusive of HBM, so
// evicting from DRAM drops the HBM copy too.
func (s *Store) dropBits(bit uint8) uint8 {
	if bit == inDRAM {
		return inDRAM | inHBM
	}
	return bit
}

// pickVictim chooses the copy to evict from list l of sh, and whether it
// must be demoted to NVMe first. When strict, it settles only for a copy
// that is free to drop or a chain leaf. Caller holds sh.mu.
func (s *Store) pickVictim(sh *shard, l int, strict bool) (victim int32, demote, busy bool) {
	fallback, unpersisted := int32(nilIdx), int32(nilIdx)
	scanned := 0
	for i := sh.lru[l].tail; i != nilIdx; i = sh.slab[i].lists[l].prev {
		e := &sh.slab[i]
		if e.pins > 0 {
			busy = busy || e.userPins == 0
			continue
		}
		scanned++
		last := e.where&^s.dropBits(bitOf[l]) == 0 // evicting drops the block from the store
		switch {
		case l == listDRAM && s.nvme != nil && e.where&inNVMe == 0:
			if unpersisted == nilIdx {
				unpersisted = i
			}
		case !last || e.children == 0:
			return i, false, false
		case fallback == nilIdx:
			fallback = i
		}
		if scanned >= s.cfg.LeafScan && (fallback != nilIdx || unpersisted != nilIdx) {
			break
		}
	}
	if unpersisted != nilIdx {
		return unpersisted, true, false
	}
	if strict {
		return nilIdx, false, busy
	}
	return fallback, false, busy
}
