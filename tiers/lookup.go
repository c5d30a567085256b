package tiers

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
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
	return s.lookup(ctx, ns, layer, chainSource{hashes: hashes}, len(hashes), levels)
}

// LookupPacked is Lookup for a chain given as its block hashes back to
// back, hashSize (16 or 32) bytes each, the form the daemon receives: it
// reads the digests in place, with no []Hash to build. len(packed) must be
// a multiple of hashSize; levels, when non-nil, must have room for
// len(packed)/hashSize blocks. The answer is Lookup's for the same chain.
func (s *Store) LookupPacked(ctx context.Context, ns string, layer int16, packed []byte, hashSize int, levels []Level) (int, error) {
	if hashSize != 16 && hashSize != 32 {
		return 0, fmt.Errorf("%w: hash size: %d, want 16 or 32", ErrInvalid, hashSize)
	}
	if len(packed)%hashSize != 0 {
		return 0, fmt.Errorf("%w: packed hashes: %d bytes is not a multiple of %d", ErrInvalid, len(packed), hashSize)
	}
	return s.lookup(ctx, ns, layer, chainSource{packed: packed, size: hashSize}, len(packed)/hashSize, levels)
}

// chainSource is a chain in either of its forms: hashes, or packed digests
// of size bytes each (size is 0 for the first form).
type chainSource struct {
	hashes []Hash
	packed []byte
	size   int
}

// fingerprints computes the fingerprints of blocks base..base+len(fps)-1
// into fps; mix is the call's namespace and layer part of them (see
// fingerprintMix). On a bad block it returns the block's offset from base
// and an error.
func (c chainSource) fingerprints(seed maphash.Seed, mix uint64, base int, fps []uint64) (int, error) {
	if c.size == 0 {
		for j := range fps {
			h := &c.hashes[base+j]
			if h.n != 16 && h.n != 32 {
				return j, fmt.Errorf("%w: hashes[%d]: %d bytes, want 16 or 32", ErrInvalid, base+j, h.n)
			}
			fps[j] = maphash.Bytes(seed, h.b[:h.n]) ^ mix
		}
		return len(fps), nil
	}
	size := c.size
	p := c.packed[base*size : (base+len(fps))*size]
	for j := range fps {
		fps[j] = maphash.Bytes(seed, p[j*size:(j+1)*size]) ^ mix
	}
	return len(fps), nil
}

// lookup is the loop Lookup and LookupPacked share: it validates the call,
// then fingerprints and probes the n blocks of c one window at a time,
// stopping at the first block that is not cached.
func (s *Store) lookup(ctx context.Context, ns string, layer int16, c chainSource, n int, levels []Level) (int, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if err := ValidateNamespace(ns); err != nil {
		return 0, err
	}
	if layer < AllLayers || layer > MaxLayer {
		return 0, fmt.Errorf("%w: layer: %d not in -1..%d", ErrInvalid, layer, MaxLayer)
	}
	if levels != nil && len(levels) < n {
		return 0, fmt.Errorf("%w: levels: room for %d, %d hashes", ErrInvalid, len(levels), n)
	}
	mix := fingerprintMix(nsHash(s.seed, ns), layer)
	w := windowPool.Get().(*lookupWindow)
	defer windowPool.Put(w)
	for base := 0; base < n; base += windowLen {
		if err := ctx.Err(); err != nil {
			return base, err
		}
		m := min(n-base, windowLen)
		if j, err := c.fingerprints(s.seed, mix, base, w.fps[:m]); err != nil {
			return base + j, err
		}
		s.probe(w, m)
		hit := 0
		for hit < m && w.lvls[hit] != LevelNone {
			hit++
		}
		if levels != nil {
			copy(levels[base:base+hit], w.lvls[:hit])
		}
		if hit < m {
			return base + hit, nil
		}
	}
	return n, nil
}

// windowLen is how many blocks Lookup probes per batch.
const windowLen = 1024

// lookupWindow is Lookup's scratch for one batch. It is pooled rather
// than kept on the stack: at 11 KiB it would grow the stack of every fresh
// goroutine that looks up (gRPC runs most concurrent calls on new ones).
var windowPool = sync.Pool{New: func() any { return new(lookupWindow) }}

// lookupWindow is Lookup's scratch for one batch.
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
