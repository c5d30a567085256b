package prefetch

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/kvtier/kvtier/codec"
	pf "github.com/kvtier/kvtier/prefetch"
	"github.com/kvtier/kvtier/tiers"
)

// Policy names the replay understands: the prefetch package's policies,
// queries with the current step's query instead of the previous one, and
// the oracle, which knows the step's true mass.
const (
	PolicyLRU           = "lru"
	PolicyScores        = "scores"
	PolicyQueries       = "queries"         // the previous step's query: what an engine has one step ahead
	PolicyQueriesNow    = "queries@current" // the current query: the Quest setting
	PolicyScoresQueries = "scores+queries"
	PolicyOracle        = "oracle"
)

// AllPolicies is the default set, in report order.
var AllPolicies = []string{PolicyLRU, PolicyScores, PolicyQueries, PolicyQueriesNow, PolicyScoresQueries, PolicyOracle}

// Config sets a replay.
type Config struct {
	// Budget is the fast tier's room per layer, as a fraction of the
	// request's blocks (rounded, at least one block).
	Budget float64
	// BlockTokens is the tokens per block. Default 16.
	BlockTokens int
	// Policies to replay; default AllPolicies.
	Policies []string
	// LayerTime is the deadline for a layer's moves, measured from when its
	// plan is made; moves that would start after it are dropped and counted
	// late. 0: no deadline.
	LayerTime time.Duration
	// Options tune the prefetch policies (Kind is set per policy).
	Options pf.Options
}

// Result is one policy's figures on one trace.
type Result struct {
	Trace  string  `json:"trace"`
	Policy string  `json:"policy"`
	Budget float64 `json:"budget"`
	// Recall: mean over layers and steps of the true (head-averaged)
	// attention mass on the resident blocks.
	Recall float64 `json:"recall"`
	// HitRate: the share of each step's most needed blocks (its true top
	// budget blocks) that were resident.
	HitRate float64 `json:"hit_rate"`
	// BytesMoved: bytes copied into the fast tier, the initial fill included.
	BytesMoved int64 `json:"bytes_moved"`
	// Late: blocks a plan dropped because the layer's deadline had passed.
	Late int64 `json:"late"`
	// Wasted: blocks moved in and evicted (or left at the end) without
	// ever being among a step's most needed while resident.
	Wasted int64 `json:"wasted"`
	Blocks int   `json:"blocks"` // resident blocks per layer (the budget)
	Steps  int   `json:"steps"`  // evaluated decode steps
}

func (c *Config) ensureDefaults() {
	if c.BlockTokens == 0 {
		c.BlockTokens = 16
	}
	if len(c.Policies) == 0 {
		c.Policies = AllPolicies
	}
}

func (c *Config) validate(t *Trace) error {
	switch {
	case !(c.Budget > 0 && c.Budget <= 1):
		return fmt.Errorf("%w: budget %v not in (0, 1]", ErrConfig, c.Budget)
	case c.BlockTokens <= 0 || t.Tokens%c.BlockTokens != 0:
		return fmt.Errorf("%w: %d tokens per block do not divide the trace's %d", ErrConfig, c.BlockTokens, t.Tokens)
	case c.LayerTime < 0:
		return fmt.Errorf("%w: layer time %v", ErrConfig, c.LayerTime)
	}
	for _, p := range c.Policies {
		if !slices.Contains(AllPolicies, p) {
			return fmt.Errorf("%w: unknown policy %q (want one of %v)", ErrConfig, p, AllPolicies)
		}
	}
	return nil
}

// Namespace is the store namespace replays put their blocks under.
const Namespace = "bench-prefetch"

// blockKey names block b of layer l of trace t in the store.
func blockKey(t *Trace, l, b int) tiers.Key {
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], uint64(b))
	h := xxh3.Hash128Seed(append([]byte(t.Name), buf[:]...), 0x6b7674696572).Bytes()
	hash, _ := tiers.HashFromBytes(h[:]) // 16 bytes: always a valid hash
	return tiers.Key{Namespace: Namespace, Hash: hash, Layer: int16(l)}
}

// Load puts every block of t into st (per-layer fp16 blocks, K then V) and
// returns the layout it used.
func Load(ctx context.Context, st *tiers.Store, t *Trace, blockTokens int) (tiers.Layout, error) {
	l := tiers.Layout{DType: codec.FP16, Order: codec.KVSeparate, Layers: 1,
		KVHeads: uint16(t.KVHeads), HeadDim: uint16(t.HeadDim), Tokens: uint32(blockTokens)}
	if err := l.Validate(); err != nil {
		return l, fmt.Errorf("%w: %w", ErrTrace, err)
	}
	var buf []byte
	for layer := range t.Layers {
		for b := range t.Tokens / blockTokens {
			buf = t.block(buf, layer, b, blockTokens)
			opts := tiers.PutOptions{}
			if b > 0 {
				opts.Parent = blockKey(t, layer, b-1).Hash
			}
			if err := st.Put(ctx, blockKey(t, layer, b), l, buf, opts); err != nil {
				return l, err
			}
		}
	}
	return l, nil
}

// summaries reads every block of layer back from the store and returns
// their key summaries back to back.
func summaries(ctx context.Context, st *tiers.Store, t *Trace, layer, nBlocks int, l tiers.Layout) ([]byte, error) {
	var out, one []byte
	for b := range nBlocks {
		k := blockKey(t, layer, b)
		blk, err := st.Get(ctx, k, tiers.GetOptions{})
		if err != nil {
			return nil, err
		}
		one, err = tiers.SummarizeKeys(one, l, blk.Data)
		_ = st.Release(k)
		if err != nil {
			return nil, err
		}
		out = append(out, one...)
	}
	return out, nil
}

// Replay runs every configured policy over t, whose blocks Load put in st,
// and returns one Result per policy.
//
// Steps are the positions the trace has attention rows for. Before each
// layer of each step the policy selects the resident set; blocks that
// enter it are read from the store (Get, copy into a fast-tier buffer,
// Release) and counted as moved. After the step, policies that use
// reported mass observe the step's true mass (what an engine with eager
// attention reports). Before the first step, the trace's earlier query
// positions serve as a warm-up: their mass, recomputed from q and k, is
// reported but not scored.
func Replay(ctx context.Context, st *tiers.Store, t *Trace, cfg Config) ([]Result, error) {
	cfg.ensureDefaults()
	if err := cfg.validate(t); err != nil {
		return nil, err
	}
	bt := cfg.BlockTokens
	nFull := t.Tokens / bt
	layout := tiers.Layout{DType: codec.FP16, Order: codec.KVSeparate, Layers: 1,
		KVHeads: uint16(t.KVHeads), HeadDim: uint16(t.HeadDim), Tokens: uint32(bt)}
	sums := make([][]byte, t.Layers)
	for l := range t.Layers {
		var err error
		if sums[l], err = summaries(ctx, st, t, l, nFull, layout); err != nil {
			return nil, err
		}
	}
	var out []Result
	for _, name := range cfg.Policies {
		r, err := replayOne(ctx, st, t, cfg, name, sums, layout)
		if err != nil {
			return nil, fmt.Errorf("%s on %s: %w", name, t.Name, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// residency is the fast tier's content for one layer.
type residency struct {
	in     []bool // per block
	needed []bool // per block: among a step's most needed while resident
	slots  []byte // the fast tier's bytes: budget blocks
	where  []int  // per block: its slot, -1 when not resident
	free   []int
}

func replayOne(ctx context.Context, st *tiers.Store, t *Trace, cfg Config, name string, sums [][]byte, layout tiers.Layout) (Result, error) {
	bt := cfg.BlockTokens
	nFull := t.Tokens / bt
	res := Result{Trace: t.Name, Policy: name, Budget: cfg.Budget}
	opts := cfg.Options
	switch name {
	case PolicyScores:
		opts.Kind = pf.Scores
	case PolicyQueries, PolicyQueriesNow:
		opts.Kind = pf.Queries
	case PolicyScoresQueries:
		opts.Kind = pf.ScoresQueries
	default:
		opts.Kind = pf.LRU
	}
	req, err := pf.NewRequest(pf.Shape{Layers: t.Layers, QHeads: t.QHeads, KVHeads: t.KVHeads, HeadDim: t.HeadDim}, opts)
	if err != nil {
		return res, err
	}
	stride := len(sums[0]) / max(nFull, 1)
	for l := range t.Layers {
		if err := req.SetSummaries(l, 0, sums[l][:nFull*stride]); err != nil {
			return res, err
		}
	}
	usesMass := opts.Kind == pf.Scores || opts.Kind == pf.ScoresQueries
	blockBytes := int(layout.Size())
	budget := max(1, int(math.Round(cfg.Budget*float64(nFull))))
	res.Blocks = budget
	rs := make([]residency, t.Layers)
	for l := range rs {
		rs[l] = residency{in: make([]bool, nFull), needed: make([]bool, nFull),
			slots: make([]byte, budget*blockBytes), where: make([]int, nFull)}
		for b := range rs[l].where {
			rs[l].where[b] = -1
		}
		for s := budget - 1; s >= 0; s-- {
			rs[l].free = append(rs[l].free, s)
		}
	}
	var (
		mass        []float64
		q           []float32
		sel, oracle []uint32
		idx         []uint32
		m32         []float32
		ok          bool
	)
	observe := func(l, pos int) error {
		mass = t.blockMass(mass, l, pos, bt)
		idx, m32 = idx[:0], m32[:0]
		for b, m := range mass {
			idx, m32 = append(idx, uint32(b)), append(m32, float32(m))
		}
		return req.ObserveMass(l, uint64(pos), idx, m32)
	}
	// Warm-up: earlier query positions report their mass.
	if usesMass {
		for _, pos := range t.qPos {
			if pos >= t.pPos[0] {
				break
			}
			for l := range t.Layers {
				if err := observe(l, pos); err != nil {
					return res, err
				}
			}
		}
	}
	var recall, hits float64
	for _, pos := range t.pPos {
		nb := min(pos/bt+1, nFull)
		for l := range t.Layers {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			switch name {
			case PolicyQueries, PolicyScoresQueries:
				if q, ok = t.query(q, l, pos-1); ok {
					if err := req.ObserveQuery(l, q); err != nil {
						return res, err
					}
				}
			case PolicyQueriesNow:
				if q, ok = t.query(q, l, pos); ok {
					if err := req.ObserveQuery(l, q); err != nil {
						return res, err
					}
				}
			}
			mass = t.blockMass(mass, l, pos, bt)
			oracle = topMass(oracle[:0], mass[:nb], budget)
			start := time.Now()
			if name == PolicyOracle {
				sel = append(sel[:0], oracle...)
			} else if sel, err = req.Select(sel[:0], l, nb, budget); err != nil {
				return res, err
			}
			if err := rs[l].apply(ctx, st, t, l, sel, start, cfg.LayerTime, blockBytes, &res); err != nil {
				return res, err
			}
			var got float64
			for b := range nb {
				if rs[l].in[b] {
					got += mass[b]
				}
			}
			// Mass on a trailing partial block (never in the store) is
			// not counted for any policy.
			recall += got
			h := 0
			for _, b := range oracle {
				if rs[l].in[b] {
					h++
					rs[l].needed[b] = true
				}
			}
			hits += float64(h) / float64(len(oracle))
			if usesMass {
				if err := observe(l, pos); err != nil {
					return res, err
				}
			}
		}
		res.Steps++
	}
	for l := range rs {
		for b, in := range rs[l].in {
			if in && !rs[l].needed[b] {
				res.Wasted++
			}
		}
	}
	n := float64(res.Steps * t.Layers)
	res.Recall, res.HitRate = recall/n, hits/n
	return res, nil
}

// apply makes sel the resident set: blocks that leave are evicted, blocks
// that enter are read from the store into a free slot, in sel's order,
// until the deadline (start + layerTime) passes; the rest are late.
func (r *residency) apply(ctx context.Context, st *tiers.Store, t *Trace, l int, sel []uint32, start time.Time, layerTime time.Duration, blockBytes int, res *Result) error {
	want := make(map[uint32]bool, len(sel))
	for _, b := range sel {
		want[b] = true
	}
	for b, in := range r.in {
		if in && !want[uint32(b)] {
			if !r.needed[b] {
				res.Wasted++
			}
			r.in[b], r.needed[b] = false, false
			r.free = append(r.free, r.where[b])
			r.where[b] = -1
		}
	}
	for _, b := range sel {
		if r.in[b] {
			continue
		}
		if layerTime > 0 && time.Since(start) > layerTime {
			res.Late++
			continue
		}
		if len(r.free) == 0 {
			return fmt.Errorf("%w: selection larger than the budget", ErrConfig)
		}
		k := blockKey(t, l, int(b))
		blk, err := st.Get(ctx, k, tiers.GetOptions{})
		if err != nil {
			return err
		}
		s := r.free[len(r.free)-1]
		r.free = r.free[:len(r.free)-1]
		n := copy(r.slots[s*blockBytes:(s+1)*blockBytes], blk.Data)
		_ = st.Release(k)
		res.BytesMoved += int64(n)
		r.in[b], r.where[b] = true, s
	}
	return nil
}

// topMass appends the indexes of the k largest masses, largest first.
func topMass(dst []uint32, mass []float64, k int) []uint32 {
	for b := range mass {
		dst = append(dst, uint32(b))
	}
	slices.SortStableFunc(dst, func(a, b uint32) int {
		switch {
		case mass[a] > mass[b]:
			return -1
		case mass[a] < mass[b]:
			return 1
		}
		return 0
	})
	return dst[:min(k, len(dst))]
}
