package nvme

import (
	"context"
	"errors"

	"github.com/kvtier/kvtier/tiers"
)

// EvictLRU deletes blocks least recently used first (recency = last Put or
// Get; after Open, last write) until at least want bytes of frames have
// been freed or no candidate is left, and returns the bytes freed.
//
// protect, when not nil, vetoes a block (pinned, or continued by a cached
// child); vetoed blocks keep their place. protect is called without the
// tier's locks but while the tier is in use: it must not call the Tier.
//
// A block written again after it was picked is left alone. On a context or
// Badger error EvictLRU stops and returns what it freed so far with the error.
func (t *Tier) EvictLRU(ctx context.Context, want int64, protect func(tiers.Key) bool) (freed int64, err error) {
	if err := t.enter(); err != nil {
		return 0, err
	}
	defer t.opsMu.RUnlock()
	type victim struct {
		seq  uint64
		size int64
	}
	var vs []victim
	skip := map[uint64]bool{} // writes vetoed, or gone since they were picked
	for freed < want {
		if err := ctx.Err(); err != nil {
			return freed, err
		}
		vs = vs[:0]
		var picked int64
		t.mu.Lock()
		for i := t.idx.lru; i != nilEntry && freed+picked < want; i = t.idx.at(i).newer {
			if e := t.idx.at(i); !skip[e.seq] {
				vs = append(vs, victim{seq: e.seq, size: int64(e.size)})
				picked += int64(e.size)
			}
		}
		t.mu.Unlock()
		if len(vs) == 0 {
			break
		}
		// Every victim is removed or skipped from now on, so the loop ends.
		for _, v := range vs {
			if err := ctx.Err(); err != nil {
				return freed, err
			}
			bk, err := t.keyOf(ctx, v.seq)
			if errors.Is(err, ErrFormat) {
				skip[v.seq] = true // deleted or rewritten meanwhile
				continue
			}
			if err != nil {
				return freed, err
			}
			if protect != nil {
				if k, err := tiers.ParseKey(bk); err == nil && protect(k) {
					skip[v.seq] = true
					continue
				}
			}
			n, err := t.remove(bk, v.seq)
			if err != nil {
				return freed, err
			}
			if n == 0 {
				skip[v.seq] = true
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
		seq  uint64
		size int64
	}
	t.mu.Lock()
	recs := make([]rec, 0, min(n, int(t.idx.count)))
	for i := t.idx.lru; i != nilEntry && len(recs) < n; i = t.idx.at(i).newer {
		e := t.idx.at(i)
		recs = append(recs, rec{seq: e.seq, size: int64(e.size)})
	}
	t.mu.Unlock()
	keys := make([]tiers.Key, len(recs))
	for j, r := range recs {
		bk, err := t.keyOf(context.Background(), r.seq)
		if err != nil {
			continue // gone meanwhile
		}
		if k, err := tiers.ParseKey(bk); err == nil {
			keys[j] = k
		}
	}
	t.opsMu.RUnlock()
	for j, r := range recs {
		if keys[j].Namespace == "" {
			continue
		}
		if !fn(keys[j], r.size) {
			return
		}
	}
}
