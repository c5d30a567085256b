package tiers

import (
	"context"
	"errors"
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

// evictSample is how many shards eviction compares candidates from.
const evictSample = 8

// candidate is a shard's proposal for eviction.
type candidate struct {
	sh      *shard
	key     Key
	lastUse uint64
	demote  bool
}

// evict removes one unpinned copy from the level that list l tracks and
// reports whether it freed anything, and, when it did not, whether blocks
// held only by the store's own I/O (write-behind) were in the way, so that
// waiting briefly will help.
//
// Each shard publishes the age of its lists' tails (shard.publishTail).
// Eviction first asks the shard with the oldest tail for its least recently
// used eligible copy, and takes it when it is free to drop and no older than
// any other shard's tail: then it is the store's oldest eligible copy, found
// under one shard lock, and blocks put one after another are evicted in the
// order they came, so the slots they free are reused in address order.
// Otherwise each of evictSample shards (taken round robin from a moving
// cursor) proposes its least recently used eligible copy, and the oldest
// proposal is evicted: an approximate global LRU without a global lock.
// Eligibility, in order of preference:
//   - a DRAM copy that NVMe also holds, or an HBM copy: dropped for free;
//   - where the copy is the block's last, a leaf of its prefix chain (a
//     block no cached block continues), so cached chains stay prefixes;
//   - a DRAM copy NVMe lacks: demoted (written to NVMe) first;
//   - only when nothing above exists anywhere: any unpinned copy.
func (s *Store) evict(ctx context.Context, l int) (freed, busy bool) {
	if s.evictVictim(l) { // the importance policy, when a source is set
		return true, false
	}
	if freed, busy = s.evictOldest(l); freed {
		return true, false
	}
	n := len(s.shards)
	start := int(s.evictCursor[l].Add(1))
	for _, strict := range [...]bool{true, false} {
		var best candidate
		found, sampled := false, 0
		for j := 0; j < n && sampled < evictSample; j++ {
			sh := s.shards[(start+j)%n]
			sh.mu.Lock()
			i, demote, b := s.pickVictim(sh, l, strict)
			busy = busy || b
			if i != nilIdx {
				sampled++
				e := sh.at(i)
				better := !found || (best.demote && !demote) || (best.demote == demote && e.lastUse < best.lastUse)
				if better {
					best, found = candidate{sh: sh, key: sh.key(i), lastUse: e.lastUse, demote: demote}, true
				}
			}
			sh.mu.Unlock()
		}
		if found {
			freed, changed := s.evictCandidate(ctx, l, best)
			// When the candidate changed under us (pinned meanwhile), the
			// caller may retry; a failed demotion is final.
			return freed, busy || changed
		}
	}
	return false, busy
}

// evictCandidate evicts the copy a shard proposed, if it is still eligible,
// and reports whether it freed room or found the candidate changed.
func (s *Store) evictCandidate(ctx context.Context, l int, c candidate) (freed, changed bool) {
	bit := bitOf[l]
	sh := c.sh
	noSpace := false
	if c.demote {
		// Write the DRAM copy to NVMe under an I/O pin, then drop it.
		if err := s.persist(ctx, c.key); err != nil {
			if !errors.Is(err, ErrNoSpace) {
				s.log.Warn("tiers: demoting block to NVMe", "key", c.key.String(), "err", err)
				return false, false
			}
			// NVMe is out of disk space (it says so once in the log): drop
			// the copy rather than fail the put that needs its room.
			noSpace = true
		}
	}
	sh.mu.Lock()
	i := sh.find(c.key)
	if i == nilIdx {
		sh.mu.Unlock()
		return true, false // deleted meanwhile: its room is free anyway
	}
	e := sh.at(i)
	if e.pins > 0 || e.where&bit == 0 || (c.demote && !noSpace && e.where&inNVMe == 0) {
		gone := e.where&bit == 0
		sh.mu.Unlock()
		return gone, !gone
	}
	s.evictAt(sh, i, l)
	return true, false
}

// evictOldest evicts the least recently used eligible copy on list l of
// the shard whose tail is oldest, when it needs no demotion and is no
// younger than any other shard's tail. It reports whether it evicted, and
// whether blocks held by the store's own I/O were in the way.
func (s *Store) evictOldest(l int) (freed, busy bool) {
	oldest, next, at := uint64(noAge), uint64(noAge), -1
	for j := range s.tailAges[l] {
		switch a := s.tailAges[l][j].Load(); {
		case a < oldest:
			oldest, next, at = a, oldest, j
		case a < next:
			next = a
		}
	}
	if at < 0 {
		return false, false
	}
	sh := s.shards[at]
	sh.mu.Lock()
	i, demote, busy := s.pickVictim(sh, l, true)
	if i == nilIdx || demote || sh.at(i).lastUse > next {
		sh.mu.Unlock()
		return false, busy
	}
	s.evictAt(sh, i, l)
	return true, false
}

// evictAt drops entry i's copy on list l. Caller holds sh.mu, which
// evictAt releases.
func (s *Store) evictAt(sh *shard, i int32, l int) {
	sh.ctr.evictions[levelOf[l]]++
	s.dropCopies(sh, i, s.dropBits(bitOf[l]))
	s.unlock(sh)
}

// dropBits is what evicting a copy removes: DRAM is inclusive of HBM, so
// evicting from DRAM drops the HBM copy too.
func (s *Store) dropBits(bit uint8) uint8 {
	if bit == inDRAM {
		return inDRAM | inHBM
	}
	return bit
}

// pickVictim proposes the copy to evict from list l of sh, and whether it
// must be demoted to NVMe first, scanning up to LeafScan unpinned copies
// from the least recently used end. When strict, it proposes only a copy
// that is free to drop, a chain leaf, or one to demote. busy reports blocks
// skipped because the store's own I/O holds them. Caller holds sh.mu.
func (s *Store) pickVictim(sh *shard, l int, strict bool) (victim int32, demote, busy bool) {
	fallback, unpersisted := int32(nilIdx), int32(nilIdx)
	scanned := 0
	for i := sh.lru[l].tail; i != nilIdx; i = sh.at(i).lists[l].prev {
		e := sh.at(i)
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
		if scanned >= s.cfg.LeafScan {
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
