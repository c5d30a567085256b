package tiers

import (
	"context"
	"fmt"
)

// Lookup reports how many leading blocks of a chain are cached: hashes are
// the chain's block hashes in order, in namespace ns at layer. It stops at
// the first block that is not cached. When levels is non-nil, levels[i]
// receives the fastest level holding block i for every cached block (it
// must be at least as long as hashes). Lookup takes only read locks and
// does not change recency; Get does.
//
// Lookup trusts the index's 64-bit fingerprints (keyed with a per-store
// random seed) without comparing whole keys, which keeps it to one map
// probe and one byte per block. Two cached keys would have to share a
// fingerprint for it to err (odds about n²/2⁶⁵ for n cached blocks), and
// even then only by reporting a block as cached that Get then misses,
// which callers must handle anyway: a block can be evicted between the two.
func (s *Store) Lookup(ctx context.Context, ns string, layer int16, hashes []Hash, levels []Level) (int, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if err := ValidateNamespace(ns); err != nil {
		return 0, err
	}
	if layer < AllLayers || layer > MaxLayer {
		return 0, fmt.Errorf("%w: layer: %d not in -1..%d", ErrInvalid, layer, MaxLayer)
	}
	if levels != nil && len(levels) < len(hashes) {
		return 0, fmt.Errorf("%w: levels: room for %d, %d hashes", ErrInvalid, len(levels), len(hashes))
	}
	k := Key{Namespace: ns, Layer: layer}
	nh := nsHash(s.seed, ns)
	var w lookupWindow
	for base := 0; base < len(hashes); base += windowLen {
		if err := ctx.Err(); err != nil {
			return base, err
		}
		chunk := hashes[base:min(len(hashes), base+windowLen)]
		for j, h := range chunk {
			if h.n != 16 && h.n != 32 {
				return base + j, fmt.Errorf("%w: hashes[%d]: %d bytes, want 16 or 32", ErrInvalid, base+j, h.n)
			}
			k.Hash = h
			w.fps[j] = fingerprint(s.seed, nh, k)
		}
		s.probe(&w, len(chunk))
		for j := range chunk {
			if w.lvls[j] == LevelNone {
				return base + j, nil
			}
			if levels != nil {
				levels[base+j] = w.lvls[j]
			}
		}
	}
	return len(hashes), nil
}

// windowLen is how many blocks Lookup probes per batch.
const windowLen = 512

// lookupWindow is Lookup's scratch for one batch, kept on its stack.
type lookupWindow struct {
	fps   [windowLen]uint64
	lvls  [windowLen]Level
	order [windowLen]uint16 // batch positions grouped by shard
	start [maxBatchedShards + 1]uint16
}

// maxBatchedShards: with more shards than this, probe takes each lock per block.
const maxBatchedShards = 256

// probe fills w.lvls[:n] from w.fps[:n]. The positions are grouped by
// shard (a counting sort), so each shard's read lock is taken once per
// batch rather than once per block.
func (s *Store) probe(w *lookupWindow, n int) {
	ns := len(s.shards)
	if ns > maxBatchedShards {
		for j := range n {
			sh := s.shards[shardIndex(w.fps[j], ns)]
			sh.mu.RLock()
			w.lvls[j] = sh.topFP(w.fps[j])
			sh.mu.RUnlock()
		}
		return
	}
	start := w.start[:ns+1]
	clear(start)
	for j := range n {
		start[shardIndex(w.fps[j], ns)+1]++
	}
	for i := 1; i <= ns; i++ {
		start[i] += start[i-1]
	}
	for j := range n {
		si := shardIndex(w.fps[j], ns)
		w.order[start[si]] = uint16(j)
		start[si]++
	}
	// start[i] is now the end of shard i's run; shard i starts at start[i-1].
	lo := uint16(0)
	for i := 0; i < ns; i++ {
		hi := start[i]
		if hi == lo {
			continue
		}
		sh := s.shards[i]
		sh.mu.RLock()
		for _, j := range w.order[lo:hi] {
			w.lvls[j] = sh.topFP(w.fps[j])
		}
		sh.mu.RUnlock()
		lo = hi
	}
}
