package nvme

import (
	"context"

	"github.com/kvtier/kvtier/tiers"
)

// EvictLRU deletes blocks least recently used first (recency = last Put or
// Get; after Open, last write) until at least want bytes of frames have
// been freed or no candidate is left, and returns the bytes freed.
//
// protect, when not nil, vetoes a block (pinned, or continued by a cached
// child); vetoed blocks keep their place. protect is called with the tier's
// index lock held: it must be quick and must not call the Tier.
//
// A block written again after it was picked is left alone. On a context or
// Badger error EvictLRU stops and returns what it freed so far with the error.
func (t *Tier) EvictLRU(ctx context.Context, want int64, protect func(tiers.Key) bool) (freed int64, err error) {
	if err := t.enter(); err != nil {
		return 0, err
	}
	defer t.opsMu.RUnlock()
	type victim struct {
		key  string
		seq  uint64
		size int64
	}
	var vs []victim
	// A few passes: a victim may vanish (deleted or rewritten concurrently)
	// between picking and deleting.
	for pass := 0; pass < 4 && freed < want; pass++ {
		if err := ctx.Err(); err != nil {
			return freed, err
		}
		vs = vs[:0]
		var picked int64
		t.mu.Lock()
		for i := t.idx.lru; i != nilEntry && freed+picked < want; i = t.idx.at(i).newer {
			e := t.idx.at(i)
			if protect != nil {
				if k, err := tiers.ParseKey([]byte(e.key)); err == nil && protect(k) {
					continue
				}
			}
			vs = append(vs, victim{key: e.key, seq: e.seq, size: int64(e.size)})
			picked += int64(e.size)
		}
		t.mu.Unlock()
		if len(vs) == 0 {
			break
		}
		for _, v := range vs {
			if err := ctx.Err(); err != nil {
				return freed, err
			}
			n, err := t.remove([]byte(v.key), v.seq)
			if err != nil {
				return freed, err
			}
			freed += n
		}
	}
	return freed, nil
}

// Oldest calls fn with up to n blocks, least recently used first, and their
// frame lengths, until fn returns false. It works on a snapshot taken under
// the index lock; fn runs without it and may call the Tier (a block may be
// gone by the time fn sees it).
func (t *Tier) Oldest(n int, fn func(k tiers.Key, size int64) bool) {
	if err := t.enter(); err != nil {
		return
	}
	type rec struct {
		key  string
		size int64
	}
	t.mu.Lock()
	recs := make([]rec, 0, min(n, int(t.idx.count)))
	for i := t.idx.lru; i != nilEntry && len(recs) < n; i = t.idx.at(i).newer {
		e := t.idx.at(i)
		recs = append(recs, rec{key: e.key, size: int64(e.size)})
	}
	t.mu.Unlock()
	t.opsMu.RUnlock()
	for _, r := range recs {
		k, err := tiers.ParseKey([]byte(r.key))
		if err != nil {
			continue
		}
		if !fn(k, r.size) {
			return
		}
	}
}
