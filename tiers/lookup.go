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
	for n, h := range hashes {
		if n&1023 == 1023 {
			if err := ctx.Err(); err != nil {
				return n, err
			}
		}
		if h.n != 16 && h.n != 32 {
			return n, fmt.Errorf("%w: hashes[%d]: %d bytes, want 16 or 32", ErrInvalid, n, h.n)
		}
		k.Hash = h
		fp := fingerprint(s.seed, nh, k)
		sh := s.shards[shardIndex(fp, len(s.shards))]
		sh.mu.RLock()
		lvl := sh.topFP(fp)
		sh.mu.RUnlock()
		if lvl == LevelNone {
			return n, nil
		}
		if levels != nil {
			levels[n] = lvl
		}
	}
	return len(hashes), nil
}
