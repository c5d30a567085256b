package tiers

import (
	"context"
	"errors"
	"fmt"
)

// LevelStats is one level's accounting and traffic.
type LevelStats struct {
	Level Level
	TierStats
	Hits       int64 // Gets served with this as the fastest level holding the block
	Evictions  int64 // copies evicted from this level
	Promotions int64 // copies brought into this level from below
	// LogicalBytes is what the level's blocks take decoded (the sum of their
	// layout sizes); UsedBytes is what they take as stored, which is less
	// where the level keeps codec frames (NVMe, compressed DRAM).
	LogicalBytes int64
}

// Stats is a snapshot of the store.
type Stats struct {
	Levels          []LevelStats // fastest first; only the configured levels
	IndexedBlocks   int64        // blocks with at least one copy
	PinnedBlocks    int64        // blocks some reader holds
	Misses          int64        // Gets of blocks not cached (including corrupt ones)
	Corrupt         int64        // copies that failed their checksum and were removed
	Demotions       int64        // DRAM blocks copied to NVMe (write-behind and on eviction)
	WriteBehindWait int          // blocks queued for NVMe
}

// Stats sums the shards' counters and asks each tier for its accounting.
// Counters are read shard by shard, so the snapshot is not atomic.
func (s *Store) Stats() Stats {
	var c counters
	var st Stats
	for _, sh := range s.shards {
		sh.mu.RLock()
		for l := range c.hits {
			c.hits[l] += sh.ctr.hits[l]
			c.evictions[l] += sh.ctr.evictions[l]
			c.promotions[l] += sh.ctr.promotions[l]
			c.logical[l] += sh.ctr.logical[l]
		}
		c.misses += sh.ctr.misses
		c.demotions += sh.ctr.demotions
		c.corrupt += sh.ctr.corrupt
		st.IndexedBlocks += int64(sh.count)
		st.PinnedBlocks += int64(sh.pinned)
		sh.mu.RUnlock()
	}
	add := func(lvl Level, t interface{ Stats() TierStats }) {
		if t == nil {
			return
		}
		ts := t.Stats()
		st.Corrupt += ts.Corrupt
		st.Levels = append(st.Levels, LevelStats{
			Level: lvl, TierStats: ts,
			Hits: c.hits[lvl], Evictions: c.evictions[lvl], Promotions: c.promotions[lvl],
			LogicalBytes: c.logical[lvl],
		})
	}
	add(LevelHBM, s.hbm)
	add(LevelDRAM, s.dram)
	add(LevelNVMe, s.nvme)
	st.Corrupt += c.corrupt
	st.Misses = c.misses
	st.Demotions = c.demotions
	st.WriteBehindWait = len(s.wbq)
	return st
}

// Close flushes every DRAM block NVMe lacks (the write-behind queue and
// anything it skipped), syncs NVMe, and closes the tiers. Callers must stop
// using Blocks and Reservations before Close: their views point into the
// DRAM arena, which Close unmaps.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return ErrClosed
	}
	close(s.done)
	s.wbWG.Wait()
	var errs []error
	if s.nvme != nil {
		ctx := context.Background()
		lost := 0 // blocks NVMe had no space for: a cache may drop them
		for _, sh := range s.shards {
			var keys []Key
			sh.mu.RLock()
			sh.each(func(i int32) {
				if e := sh.at(i); e.where&inDRAM != 0 && e.where&inNVMe == 0 {
					keys = append(keys, sh.key(i))
				}
			})
			sh.mu.RUnlock()
			for _, k := range keys {
				if err := s.persist(ctx, k); errors.Is(err, ErrNoSpace) {
					lost++
				} else if err != nil {
					errs = append(errs, fmt.Errorf("tiers: flushing %v to NVMe: %w", k, err))
					break
				}
			}
		}
		if lost > 0 {
			s.log.Warn("tiers: NVMe tier out of disk space; DRAM blocks not kept across the restart", "blocks", lost)
		}
		if sy, ok := s.nvme.(Syncer); ok {
			if err := sy.Sync(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, t := range []interface{ Close() error }{s.hbm, s.dram, s.nvme} {
		if t != nil {
			if err := t.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
