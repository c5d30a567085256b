package engine

import (
	"fmt"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/prefetch"
	"github.com/kvtier/kvtier/tiers"
)

// PrefetchPolicy drives the prefetcher's ranking (a prefetch.Request per
// request) the way an engine that links kvtier would: it reports the
// attention mass of the blocks a sparse step read (ObserveRead: partial
// observations, a block not read keeps its importance), the layer's query
// (the previous step's, when the next step is planned), and the key
// summary of every block the engine writes (tiers.SummarizeKeys), and asks
// Select for the blocks to keep resident.
type PrefetchPolicy struct {
	m    *Model
	opts prefetch.Options
	req  *prefetch.Request
	lay  codec.Layout

	sum  []byte    // scratch: one block's key summary
	idx  []uint32  // scratch: blocks read
	mass []float32 // scratch: their head-averaged mass
	sel  []uint32  // scratch: Select's answer
	cand []bool    // scratch: per block, a candidate
}

var _ Policy = (*PrefetchPolicy)(nil)

// NewPrefetchPolicy returns the prefetcher's policy opts.Kind for model m.
// The engine keeps the sink block and the recent window itself, so the
// Request is made without them (opts.Sink and opts.Recent are overridden).
func NewPrefetchPolicy(m *Model, opts prefetch.Options) (*PrefetchPolicy, error) {
	opts.Sink, opts.Recent = -1, -1
	p := &PrefetchPolicy{m: m, opts: opts, lay: m.BlockLayout(BlockTokens)}
	return p, p.Reset()
}

// Name implements Policy: the prefetch.Kind's name.
func (p *PrefetchPolicy) Name() string { return p.opts.Kind.String() }

// Request is the prefetcher's state of the current request.
func (p *PrefetchPolicy) Request() *prefetch.Request { return p.req }

// Reset implements Policy: a fresh prefetch.Request.
func (p *PrefetchPolicy) Reset() error {
	c := p.m.Config
	req, err := prefetch.NewRequest(prefetch.Shape{Layers: c.Layers, QHeads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim()}, p.opts)
	if err != nil {
		return fmt.Errorf("%w: policy %s: %w", ErrInput, p.Name(), err)
	}
	p.req = req
	return nil
}

func (p *PrefetchPolicy) usesQueries() bool {
	return p.opts.Kind == prefetch.Queries || p.opts.Kind == prefetch.ScoresQueries
}

// Observe implements Policy: the mass of the blocks read, averaged over
// query heads, as a partial observation.
func (p *PrefetchPolicy) Observe(l, _ int, mass []float64) error {
	if p.opts.Kind == prefetch.LRU {
		return nil
	}
	p.idx, p.mass = p.idx[:0], p.mass[:0]
	inv := 1 / float64(p.m.Heads)
	for b, v := range mass {
		if v >= 0 {
			p.idx = append(p.idx, uint32(b))
			p.mass = append(p.mass, float32(v*inv))
		}
	}
	return p.req.ObserveRead(l, p.idx, p.mass)
}

// ObserveQuery implements Policy.
func (p *PrefetchPolicy) ObserveQuery(l, _ int, q []float32) error {
	if !p.usesQueries() {
		return nil
	}
	return p.req.ObserveQuery(l, q)
}

// ObserveBlock implements Policy: the block's key summary.
func (p *PrefetchPolicy) ObserveBlock(l, b int, block []byte) error {
	if !p.usesQueries() {
		return nil
	}
	sum, err := tiers.SummarizeKeys(p.sum[:0], p.lay, block)
	if err != nil {
		return err
	}
	p.sum = sum
	return p.req.SetSummary(l, b, sum)
}

// Select implements Policy. The Request ranks every block below the
// highest candidate; the budget is raised by the non-candidates among them
// so that k candidates remain once those are dropped.
func (p *PrefetchPolicy) Select(l int, cands []int, k int, dst []int) ([]int, error) {
	if k <= 0 || len(cands) == 0 {
		return dst, nil
	}
	n := 0
	for _, b := range cands {
		n = max(n, b+1)
	}
	p.cand = growBool(p.cand, n)
	clear(p.cand)
	for _, b := range cands {
		p.cand[b] = true
	}
	sel, err := p.req.Select(p.sel[:0], l, n, k+n-len(cands))
	p.sel = sel
	if err != nil {
		return dst, err
	}
	for _, b := range sel {
		if k > 0 && p.cand[b] {
			dst = append(dst, int(b))
			k--
		}
	}
	return dst, nil
}

func growBool(b []bool, n int) []bool {
	if cap(b) < n {
		return make([]bool, n)
	}
	return b[:n]
}
