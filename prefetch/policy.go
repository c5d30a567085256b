package prefetch

import (
	"fmt"
	"math"
)

// Kind names a ranking policy.
type Kind uint8

const (
	// LRU keeps the sink blocks and the most recent blocks: what a
	// recency-only cache does, the baseline.
	LRU Kind = iota
	// Scores ranks by the decayed attention mass engines report
	// (LayerAttention hints).
	Scores
	// Queries ranks by the Quest bound of the layer's latest query against
	// the blocks' key summaries (LayerQuery hints).
	Queries
	// ScoresQueries averages the two normalized estimates; either alone
	// when only one is known.
	ScoresQueries
)

// Kinds lists every policy, in the order the benchmark reports them.
var Kinds = []Kind{LRU, Scores, Queries, ScoresQueries}

func (k Kind) String() string {
	switch k {
	case LRU:
		return "lru"
	case Scores:
		return "scores"
	case Queries:
		return "queries"
	case ScoresQueries:
		return "scores+queries"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ParseKind parses the names String prints.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if k.String() == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown policy %q (want lru, scores, queries or scores+queries)", ErrInvalid, s)
}

// Options tune a Request's ranking. Zero fields take defaults from EnsureDefaults.
type Options struct {
	Kind Kind
	// Decay is the weight the importance keeps per decode step: after an
	// observation at step t, a block's importance is
	// Σ_s Decay^(t-s)·(1-Decay)·mass_s. Default 0.3 (on the fixture
	// traces 0.15-0.5 give the same recall within 0.002; 0.85 loses 0.02).
	Decay float64
	// Sink is how many leading blocks always stay resident (attention
	// sinks). Default 1; negative: none.
	Sink int
	// Recent is how many trailing blocks (the recent window) always stay
	// resident. Default 1; negative: none.
	Recent int
	// Mix is the weight of the reported mass in ScoresQueries; the query
	// estimate gets 1-Mix. Default 0.5.
	Mix float64
	// Combine says how Queries folds the query heads of a group.
	Combine Combine
}

// EnsureDefaults fills zero fields with their defaults.
func (o *Options) EnsureDefaults() {
	if o.Decay == 0 {
		o.Decay = 0.3
	}
	if o.Sink == 0 {
		o.Sink = 1
	}
	if o.Recent == 0 {
		o.Recent = 1
	}
	if o.Mix == 0 {
		o.Mix = 0.5
	}
}

// Validate reports options that cannot work.
func (o *Options) Validate() error {
	switch {
	case o.Kind > ScoresQueries:
		return fmt.Errorf("%w: options: unknown %v", ErrInvalid, o.Kind)
	case !(o.Decay > 0 && o.Decay < 1):
		return fmt.Errorf("%w: options: decay %v not in (0, 1)", ErrInvalid, o.Decay)
	case o.Sink > 1<<24 || o.Recent > 1<<24:
		return fmt.Errorf("%w: options: sink %d, recent %d", ErrInvalid, o.Sink, o.Recent)
	case !(o.Mix >= 0 && o.Mix <= 1):
		return fmt.Errorf("%w: options: mix %v not in [0, 1]", ErrInvalid, o.Mix)
	}
	return nil
}

// Policy is what an engine (in process) or the Hint stream (through
// Prefetcher) drives for one request: it observes attention mass and
// queries per layer, and selects the blocks of a layer to keep resident
// within a budget. Request implements it.
type Policy interface {
	// ObserveMass records that at decode step step, layer layer paid
	// attention mass[i] to block idx[i]. Blocks left out received none at
	// that step (several calls for one step add up).
	ObserveMass(layer int, step uint64, idx []uint32, mass []float32) error
	// ObserveQuery records the layer's query ([QHeads][HeadDim], post-RoPE),
	// the one Select ranks by until the next call.
	ObserveQuery(layer int, q []float32) error
	// Select appends to dst, most important first, at most budget of the
	// layer's nBlocks blocks to keep resident, and returns it.
	Select(dst []uint32, layer, nBlocks, budget int) ([]uint32, error)
}

var _ Policy = (*Request)(nil)

// layerState is one layer's importance and query.
type layerState struct {
	imp      []float32 // decayed reported mass per block
	seen     []bool    // per block: ObserveRead has reported it
	step     uint64    // the step imp was last decayed to
	observed bool      // some mass was reported
	q        []float32 // latest query, nil before the first
	sums     []byte    // key summaries, Scorer.SummaryStride() bytes per block
	have     []bool    // per block in sums: its summary is set
	nSums    int       // blocks in sums
}

// Request is the ranking state of one request: per layer, the decayed
// attention mass, the latest query and the blocks' key summaries. It is
// not safe for concurrent use.
type Request struct {
	opts   Options
	layers []layerState
	scorer *Scorer // nil without a model shape
	stride int     // bytes of one block's summary for one layer, 0 before the first

	score  []float32 // scratch: per block; the last Select's ranking when ranked
	ranked bool      // the last Select ranked by information
	qscore []float32 // scratch: Quest estimate per block
	heap   []uint32  // scratch: top-k
	taken  []bool    // scratch: per block
}

// Shape is the attention shape of a model, which query scoring needs.
type Shape struct {
	Layers, QHeads, KVHeads, HeadDim int
}

// NewRequest returns the state of a request of a model with the given
// shape. Shape.QHeads may be 0 when no queries will be observed.
func NewRequest(shape Shape, opts Options) (*Request, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if shape.Layers <= 0 || shape.Layers > 1<<12 {
		return nil, fmt.Errorf("%w: request: %d layers", ErrInvalid, shape.Layers)
	}
	r := &Request{opts: opts, layers: make([]layerState, shape.Layers)}
	if shape.QHeads > 0 {
		sc, err := NewScorer(shape.QHeads, shape.KVHeads, shape.HeadDim, opts.Combine)
		if err != nil {
			return nil, err
		}
		r.scorer = sc
	}
	return r, nil
}

func (r *Request) layer(l int) (*layerState, error) {
	if l < 0 || l >= len(r.layers) {
		return nil, fmt.Errorf("%w: layer %d of %d", ErrInvalid, l, len(r.layers))
	}
	return &r.layers[l], nil
}

// ObserveMass implements Policy.
func (r *Request) ObserveMass(layer int, step uint64, idx []uint32, mass []float32) error {
	ls, err := r.layer(layer)
	if err != nil {
		return err
	}
	if len(idx) != len(mass) {
		return fmt.Errorf("%w: %d masses for %d blocks", ErrInvalid, len(mass), len(idx))
	}
	var top uint32
	for i, b := range idx {
		if b >= 1<<24 {
			return fmt.Errorf("%w: block index %d", ErrInvalid, b)
		}
		if m := mass[i]; !(m >= 0) || math.IsInf(float64(m), 0) {
			return fmt.Errorf("%w: mass %v for block %d", ErrInvalid, m, b)
		}
		top = max(top, b+1)
	}
	if int(top) > len(ls.imp) {
		ls.imp = append(ls.imp, make([]float32, int(top)-len(ls.imp))...)
	}
	if !ls.observed || step > ls.step {
		if ls.observed {
			f := float32(math.Pow(r.opts.Decay, float64(step-ls.step)))
			for i := range ls.imp {
				ls.imp[i] *= f
			}
		}
		ls.step, ls.observed = step, true
	}
	w := float32(1 - r.opts.Decay)
	if step < ls.step { // a late report: weigh it as old
		w *= float32(math.Pow(r.opts.Decay, float64(ls.step-step)))
	}
	for i, b := range idx {
		ls.imp[b] += w * mass[i]
	}
	return nil
}

// ObserveRead records the mass of the blocks a sparse attention step read
// (partial observations: an engine that reads only its resident blocks
// sees nothing of the others). A block read moves its importance toward
// the new mass, imp = Decay·imp + (1-Decay)·mass (its first report sets
// it); a block not read keeps its last importance, since not reading it
// says nothing about it. Unlike ObserveMass, nothing decays by steps.
func (r *Request) ObserveRead(layer int, idx []uint32, mass []float32) error {
	ls, err := r.layer(layer)
	if err != nil {
		return err
	}
	if len(idx) != len(mass) {
		return fmt.Errorf("%w: %d masses for %d blocks", ErrInvalid, len(mass), len(idx))
	}
	for i, b := range idx {
		if b >= 1<<24 {
			return fmt.Errorf("%w: block index %d", ErrInvalid, b)
		}
		if m := mass[i]; !(m >= 0) || math.IsInf(float64(m), 0) {
			return fmt.Errorf("%w: mass %v for block %d", ErrInvalid, m, b)
		}
		if int(b) >= len(ls.imp) {
			ls.imp = append(ls.imp, make([]float32, int(b)+1-len(ls.imp))...)
		}
		if int(b) >= len(ls.seen) {
			ls.seen = append(ls.seen, make([]bool, int(b)+1-len(ls.seen))...)
		}
	}
	d := float32(r.opts.Decay)
	for i, b := range idx {
		if ls.seen[b] {
			ls.imp[b] = d*ls.imp[b] + (1-d)*mass[i]
		} else {
			ls.imp[b], ls.seen[b] = mass[i], true
		}
	}
	ls.observed = ls.observed || len(idx) > 0
	return nil
}

// ObserveQuery implements Policy.
func (r *Request) ObserveQuery(layer int, q []float32) error {
	ls, err := r.layer(layer)
	if err != nil {
		return err
	}
	if r.scorer == nil {
		return fmt.Errorf("%w: query for a request without a model shape", ErrInvalid)
	}
	if want := r.scorer.QHeads * r.scorer.HeadDim; len(q) != want {
		return fmt.Errorf("%w: query of %d values, want %d", ErrInvalid, len(q), want)
	}
	ls.q = append(ls.q[:0], q...)
	return nil
}

// SetSummaries appends the key summaries of blocks from..from+n-1 of layer
// (Scorer.SummaryStride bytes each, see tiers.SummarizeKeys); from must be
// the number of blocks summarized so far.
func (r *Request) SetSummaries(layer, from int, sums []byte) error {
	ls, err := r.layer(layer)
	if err != nil {
		return err
	}
	if r.scorer == nil {
		return fmt.Errorf("%w: key summaries for a request without a model shape", ErrInvalid)
	}
	st := r.scorer.SummaryStride()
	switch {
	case from != ls.nSums:
		return fmt.Errorf("%w: summaries from block %d, have %d", ErrInvalid, from, ls.nSums)
	case len(sums)%st != 0:
		return fmt.Errorf("%w: %d summary bytes, not a multiple of %d", ErrInvalid, len(sums), st)
	}
	ls.sums = append(ls.sums, sums...)
	n := len(sums) / st
	for range n {
		ls.have = append(ls.have, true)
	}
	ls.nSums += n
	return nil
}

// SetSummary sets the key summary of one block of layer, in any order (as
// blocks are staged). Every summary of a request must have the same size;
// blocks left without one score nothing from queries.
func (r *Request) SetSummary(layer, block int, sum []byte) error {
	ls, err := r.layer(layer)
	if err != nil {
		return err
	}
	switch {
	case block < 0 || block >= 1<<24:
		return fmt.Errorf("%w: summary of block %d", ErrInvalid, block)
	case len(sum) == 0 || (r.stride != 0 && len(sum) != r.stride):
		return fmt.Errorf("%w: a %d-byte summary, want %d", ErrInvalid, len(sum), r.stride)
	case r.scorer != nil && len(sum) != r.scorer.SummaryStride():
		return fmt.Errorf("%w: a %d-byte summary for the model shape's %d", ErrInvalid, len(sum), r.scorer.SummaryStride())
	}
	r.stride = len(sum)
	if block >= ls.nSums {
		ls.sums = append(ls.sums, make([]byte, (block+1-ls.nSums)*r.stride)...)
		ls.have = append(ls.have, make([]bool, block+1-ls.nSums)...)
		ls.nSums = block + 1
	}
	copy(ls.sums[block*r.stride:], sum)
	ls.have[block] = true
	return nil
}

// SetShape gives a request made without one its attention shape (from its
// first query); a different shape later is ErrInvalid.
func (r *Request) SetShape(qHeads, kvHeads, headDim int) error {
	if r.scorer != nil {
		if r.scorer.QHeads != qHeads || r.scorer.KVHeads != kvHeads || r.scorer.HeadDim != headDim {
			return fmt.Errorf("%w: shape %d/%d heads × %d, the request has %d/%d × %d", ErrInvalid,
				qHeads, kvHeads, headDim, r.scorer.QHeads, r.scorer.KVHeads, r.scorer.HeadDim)
		}
		return nil
	}
	sc, err := NewScorer(qHeads, kvHeads, headDim, r.opts.Combine)
	if err != nil {
		return err
	}
	if r.stride != 0 && r.stride != sc.SummaryStride() {
		return fmt.Errorf("%w: shape %d KV heads × %d does not match the blocks' %d-byte summaries", ErrInvalid, kvHeads, headDim, r.stride)
	}
	r.scorer = sc
	return nil
}

// Select implements Policy: the sink and recent blocks first, then the
// policy's ranking of the blocks it has information on, then the rest by
// recency (newest first).
func (r *Request) Select(dst []uint32, layer, nBlocks, budget int) ([]uint32, error) {
	ls, err := r.layer(layer)
	if err != nil {
		return dst, err
	}
	if nBlocks < 0 || nBlocks > 1<<24 || budget < 0 {
		return dst, fmt.Errorf("%w: select %d of %d blocks", ErrInvalid, budget, nBlocks)
	}
	budget = min(budget, nBlocks)
	r.taken = growBool(r.taken, nBlocks)
	clear(r.taken)
	n0 := len(dst)
	take := func(b int) {
		if len(dst)-n0 < budget && !r.taken[b] {
			r.taken[b] = true
			dst = append(dst, uint32(b))
		}
	}
	for b := range min(r.opts.Sink, nBlocks) {
		take(b)
	}
	for b := nBlocks - 1; b >= max(0, nBlocks-r.opts.Recent); b-- {
		take(b)
	}
	score, ok, err := r.rank(ls, nBlocks)
	r.ranked = ok && err == nil
	if err != nil {
		return dst[:n0], err
	} else if ok {
		for _, b := range r.topK(score, r.taken, budget-(len(dst)-n0)) {
			take(int(b))
		}
	}
	for b := nBlocks - 1; b >= 0 && len(dst)-n0 < budget; b-- {
		take(b)
	}
	return dst, nil
}

// Coldest appends to dst up to n of the blocks the last Select left out,
// least important first: eviction candidates. It appends nothing when that
// Select had no information to rank by.
func (r *Request) Coldest(dst []uint32, n int) []uint32 {
	if !r.ranked || n <= 0 {
		return dst
	}
	n0 := len(dst)
	for b, s := range r.score {
		if r.taken[b] {
			continue
		}
		// Insertion into the short sorted tail dst[n0:].
		if len(dst)-n0 == n {
			if s >= r.score[dst[len(dst)-1]] {
				continue
			}
			dst = dst[:len(dst)-1]
		}
		j := len(dst)
		dst = append(dst, uint32(b))
		for j > n0 && r.score[dst[j-1]] > s {
			dst[j] = dst[j-1]
			j--
		}
		dst[j] = uint32(b)
	}
	return dst
}

// rank fills r.score for the policy; false when it has no information.
func (r *Request) rank(ls *layerState, nBlocks int) ([]float32, bool, error) {
	useMass := r.opts.Kind == Scores || r.opts.Kind == ScoresQueries
	useQuery := r.opts.Kind == Queries || r.opts.Kind == ScoresQueries
	haveMass := useMass && ls.observed
	haveQuery := useQuery && ls.q != nil && r.scorer != nil && ls.nSums > 0
	if !haveMass && !haveQuery {
		return nil, false, nil
	}
	r.score = grow(r.score, nBlocks)
	clear(r.score)
	if haveMass {
		w := float32(1)
		if haveQuery {
			w = float32(r.opts.Mix)
		}
		addNormalized(r.score, ls.imp, w)
	}
	if haveQuery {
		n := min(nBlocks, ls.nSums)
		q, err := r.scorer.Score(r.qscore, ls.q, ls.sums[:n*r.scorer.SummaryStride()], n)
		if err != nil {
			return nil, false, err
		}
		r.qscore = q
		if r.scorer.Combine == CombineSum {
			normalizeSum(q)
		}
		for b := range q {
			if !ls.have[b] {
				q[b] = 0
			}
		}
		w := float32(1)
		if haveMass {
			w = float32(1 - r.opts.Mix)
		}
		for b, v := range q {
			r.score[b] += w * v
		}
	}
	return r.score, true, nil
}

// addNormalized adds w·imp/Σimp to dst (over the blocks both cover).
func addNormalized(dst, imp []float32, w float32) {
	n := min(len(dst), len(imp))
	var sum float32
	for _, v := range imp[:n] {
		sum += v
	}
	if sum <= 0 {
		return
	}
	w /= sum
	for b, v := range imp[:n] {
		dst[b] += v * w
	}
}

// normalizeSum maps summed bounds to a softmax-like share (so they mix
// with masses) without changing their order.
func normalizeSum(x []float32) {
	if len(x) == 0 {
		return
	}
	mx := x[0]
	for _, v := range x {
		mx = max(mx, v)
	}
	var sum float32
	for i, v := range x {
		x[i] = exp32((v - mx) / 8)
		sum += x[i]
	}
	for i := range x {
		x[i] /= sum
	}
}

// topK returns the indexes of the k largest positive scores not yet
// taken, largest first (a min-heap of k, O(n log k)).
func (r *Request) topK(score []float32, taken []bool, k int) []uint32 {
	h := r.heap[:0]
	if k <= 0 {
		return h
	}
	less := func(a, b uint32) bool { // a ranks below b
		if score[a] != score[b] {
			return score[a] < score[b]
		}
		return a < b // ties: newer blocks rank higher
	}
	down := func(i int) {
		for {
			c := 2*i + 1
			if c >= len(h) {
				return
			}
			if c+1 < len(h) && less(h[c+1], h[c]) {
				c++
			}
			if !less(h[c], h[i]) {
				return
			}
			h[i], h[c] = h[c], h[i]
			i = c
		}
	}
	for b, s := range score {
		if taken[b] || !(s > 0) {
			continue
		}
		if len(h) < k {
			h = append(h, uint32(b))
			for i := len(h) - 1; i > 0; {
				p := (i - 1) / 2
				if !less(h[i], h[p]) {
					break
				}
				h[i], h[p] = h[p], h[i]
				i = p
			}
			continue
		}
		if less(h[0], uint32(b)) {
			h[0] = uint32(b)
			down(0)
		}
	}
	// Heap-sort in place: largest first.
	for end := len(h) - 1; end > 0; end-- {
		h[0], h[end] = h[end], h[0]
		full := h
		h = h[:end]
		down(0)
		h = full
	}
	r.heap = h
	return h
}

func growBool(b []bool, n int) []bool {
	if cap(b) < n {
		return make([]bool, n)
	}
	return b[:n]
}
