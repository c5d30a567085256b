package prefetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvtier/kvtier/tiers"
)

// Config configures a Prefetcher. Zero fields take defaults from EnsureDefaults.
type Config struct {
	// Store is the hierarchy blocks are staged and promoted through. Required.
	Store *tiers.Store
	// Layers bounds the layer numbers hints may name. Default 256.
	Layers int
	// Workers is the number of goroutines moving blocks, which bounds the
	// transfers in flight. Default 4.
	Workers int
	// Queue bounds the plans waiting for a worker, per class (urgent layer
	// plans, speculative arrival staging); a plan that finds its queue full
	// is dropped and counted. Default 1024.
	Queue int
	// Budget is the share of a request's blocks a layer plan promotes.
	// Default 0.25.
	Budget float64
	// PlanBytes caps the bytes one plan moves. Default 256 MiB.
	PlanBytes int64
	// LayerTime is the deadline of a layer plan, from the hint that made
	// it: what is not moved by then is dropped and counted late, never
	// left to clog a link. Default 20ms.
	LayerTime time.Duration
	// Options tune the ranking (Options.Kind: ScoresQueries by default,
	// which ranks by whichever of mass and queries a request's engine sends).
	Options Options
	// Logger receives the prefetcher's logs. Default slog.Default().
	Logger *slog.Logger
}

// EnsureDefaults fills zero fields with their defaults.
func (c *Config) EnsureDefaults() {
	if c.Layers <= 0 {
		c.Layers = 256
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.Queue <= 0 {
		c.Queue = 1024
	}
	if c.Budget == 0 {
		c.Budget = 0.25
	}
	if c.PlanBytes <= 0 {
		c.PlanBytes = 256 << 20
	}
	if c.LayerTime <= 0 {
		c.LayerTime = 20 * time.Millisecond
	}
	if c.Options.Kind == LRU {
		c.Options.Kind = ScoresQueries // each request uses what its engine reports
	}
	c.Options.EnsureDefaults()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.Store == nil:
		return fmt.Errorf("%w: config: a store is required", ErrInvalid)
	case !(c.Budget > 0 && c.Budget <= 1):
		return fmt.Errorf("%w: config: budget %v not in (0, 1]", ErrInvalid, c.Budget)
	case c.Layers > math.MaxInt16+1:
		return fmt.Errorf("%w: config: %d layers", ErrInvalid, c.Layers)
	}
	return c.Options.Validate()
}

// Stats are the prefetcher's counters since it started.
type Stats struct {
	Requests   int64 // requests active now
	Staged     int64 // blocks brought into DRAM (or HBM) by request arrivals
	Promoted   int64 // blocks brought up by layer plans
	BytesMoved int64 // bytes of the blocks above
	Hits       int64 // planned blocks that were already in the target tier
	Misses     int64 // planned blocks not cached anywhere
	Late       int64 // planned blocks dropped because their deadline passed
	Dropped    int64 // plans dropped because their queue was full
	Cancelled  int64 // planned blocks left when their request finished
	Plans      int64 // layer plans made
}

// Prefetcher implements Hints over a tiers.Store: a request's arrival
// stages its prefix from NVMe into DRAM (or HBM) while it waits in the
// engine's queue; each LayerAttention hint updates the request's
// importance and promotes the blocks the layer's next step is predicted
// to read, within a budget and a deadline. A fixed pool of workers moves
// blocks, urgent layer plans before speculative staging.
type Prefetcher struct {
	cfg   Config
	store *tiers.Store
	log   *slog.Logger

	mu   sync.Mutex         // protects reqs
	reqs map[string]*active // by namespace + "\x00" + request id

	urgent, staging chan *plan
	done            chan struct{}
	wg              sync.WaitGroup
	closed          atomic.Bool

	staged, promoted, moved, hits, misses, late, dropped, cancelled, plans atomic.Int64
}

var (
	_ Hints      = (*Prefetcher)(nil)
	_ QueryHints = (*Prefetcher)(nil)
)

// active is one request the engine announced.
type active struct {
	ctx    context.Context // cancelled when the request finishes
	cancel context.CancelFunc
	ns     string
	layer  int16 // RequestArrived.Layer: -1 when a block holds all layers
	hashes []tiers.Hash
	target atomic.Uint32 // tiers.Level; falls back to DRAM without an HBM tier

	mu   sync.Mutex // protects req, sel and cold
	req  *Request
	sel  []uint32
	cold map[int16][]uint32 // per key layer: the last plan's eviction candidates, coldest first
}

// plan is a list of blocks of one request to bring up, in priority order.
// Several workers may share a plan; each claims the next block.
type plan struct {
	r        *active
	layer    int16
	blocks   []uint32 // indexes into r.hashes
	next     atomic.Int64
	deadline time.Time // zero: none (arrival staging)
	budget   atomic.Int64
	arrival  bool
}

// New starts a prefetcher's workers; Close stops them.
func New(cfg Config) (*Prefetcher, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Prefetcher{
		cfg: cfg, store: cfg.Store, log: cfg.Logger,
		reqs:    map[string]*active{},
		urgent:  make(chan *plan, cfg.Queue),
		staging: make(chan *plan, cfg.Queue),
		done:    make(chan struct{}),
	}
	for range cfg.Workers {
		p.wg.Add(1)
		go p.work()
	}
	return p, nil
}

func reqKey(ns, id string) string { return ns + "\x00" + id }

// RequestArrived implements Hints: it registers the request (replacing,
// and cancelling, one of the same id and namespace) and schedules its
// prefix for staging.
func (p *Prefetcher) RequestArrived(ctx context.Context, h RequestArrived) (int, error) {
	if p.closed.Load() {
		return 0, fmt.Errorf("%w: prefetcher closed", ErrInvalid)
	}
	if h.Target != tiers.LevelDRAM && h.Target != tiers.LevelHBM {
		return 0, fmt.Errorf("%w: request_arrived: target %v", ErrInvalid, h.Target)
	}
	if len(h.Hashes) > 1<<24 {
		return 0, fmt.Errorf("%w: request_arrived: %d blocks", ErrInvalid, len(h.Hashes))
	}
	req, err := NewRequest(Shape{Layers: p.cfg.Layers}, p.cfg.Options)
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	a := &active{ctx: rctx, cancel: cancel, ns: h.Namespace, layer: h.Layer, hashes: h.Hashes, req: req}
	a.target.Store(uint32(h.Target))
	k := reqKey(h.Namespace, h.RequestID)
	p.mu.Lock()
	old := p.reqs[k]
	p.reqs[k] = a
	p.mu.Unlock()
	if old != nil {
		old.cancel()
	}
	if len(h.Hashes) == 0 {
		return 0, nil
	}
	blocks := make([]uint32, len(h.Hashes))
	for i := range blocks {
		blocks[i] = uint32(i)
	}
	pl := &plan{r: a, layer: h.Layer, blocks: blocks, arrival: true}
	pl.budget.Store(math.MaxInt64)
	if !p.enqueue(p.staging, pl) {
		return 0, nil
	}
	return len(blocks), nil
}

// LayerAttention implements Hints: it records the mass and promotes the
// blocks the layer is predicted to read at its next step.
func (p *Prefetcher) LayerAttention(ctx context.Context, h LayerAttention) (int, error) {
	a, err := p.layerHint("layer_attention", h.Namespace, h.RequestID, h.Layer)
	if err != nil {
		return 0, err
	}
	for _, b := range h.BlockIndexes {
		if int(b) >= len(a.hashes) {
			return 0, fmt.Errorf("%w: layer_attention: block %d of a %d-block request", ErrInvalid, b, len(a.hashes))
		}
	}
	a.mu.Lock()
	err = a.req.ObserveMass(int(h.Layer), h.Step, h.BlockIndexes, h.Scores)
	a.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return p.planLayer(a, h.Layer)
}

// LayerQuery implements QueryHints: it records the query and promotes the
// blocks with the highest Quest bound (from the key summaries taken when
// the request's blocks were staged).
func (p *Prefetcher) LayerQuery(ctx context.Context, h LayerQuery) (int, error) {
	a, err := p.layerHint("layer_query", h.Namespace, h.RequestID, h.Layer)
	if err != nil {
		return 0, err
	}
	a.mu.Lock()
	err = a.req.SetShape(h.QHeads, h.KVHeads, h.HeadDim)
	if err == nil {
		err = a.req.ObserveQuery(int(h.Layer), h.Query)
	}
	a.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return p.planLayer(a, h.Layer)
}

// layerHint returns the request a per-layer hint names.
func (p *Prefetcher) layerHint(kind, ns, id string, layer int16) (*active, error) {
	a, err := p.lookup(ns, id)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", kind, err)
	}
	if layer < 0 {
		return nil, fmt.Errorf("%w: %s: layer %d", ErrInvalid, kind, layer)
	}
	return a, nil
}

// planLayer selects the blocks layer is predicted to read next and queues
// their promotion.
func (p *Prefetcher) planLayer(a *active, layer int16) (int, error) {
	n := len(a.hashes)
	budget := max(1, int(math.Ceil(p.cfg.Budget*float64(n))))
	a.mu.Lock()
	var err error
	a.sel, err = a.req.Select(a.sel[:0], int(layer), n, budget)
	blocks := append([]uint32(nil), a.sel...)
	keyLayer := layer
	if a.layer < 0 {
		keyLayer = a.layer // blocks hold every layer
	}
	if err == nil {
		if a.cold == nil {
			a.cold = map[int16][]uint32{}
		}
		a.cold[keyLayer] = a.req.Coldest(a.cold[keyLayer][:0], coldPerLayer)
	}
	a.mu.Unlock()
	if err != nil {
		return 0, err
	}
	layer = keyLayer
	pl := &plan{r: a, layer: layer, blocks: blocks, deadline: time.Now().Add(p.cfg.LayerTime)}
	pl.budget.Store(p.cfg.PlanBytes)
	p.plans.Add(1)
	if !p.enqueue(p.urgent, pl) {
		return 0, nil
	}
	return len(blocks), nil
}

// RequestFinished implements Hints: the request's plans stop.
func (p *Prefetcher) RequestFinished(ctx context.Context, h RequestFinished) error {
	k := reqKey(h.Namespace, h.RequestID)
	p.mu.Lock()
	a := p.reqs[k]
	delete(p.reqs, k)
	p.mu.Unlock()
	if a == nil {
		return fmt.Errorf("%w: request_finished: unknown request %q", ErrInvalid, h.RequestID)
	}
	a.cancel()
	return nil
}

// Request returns the ranking state of an active request, for engines
// that drive the policy in process. Lock it with the returned unlock
// function; it is shared with the Hint stream.
func (p *Prefetcher) Request(ns, id string) (*Request, func(), error) {
	a, err := p.lookup(ns, id)
	if err != nil {
		return nil, nil, err
	}
	a.mu.Lock()
	return a.req, a.mu.Unlock, nil
}

func (p *Prefetcher) lookup(ns, id string) (*active, error) {
	p.mu.Lock()
	a := p.reqs[reqKey(ns, id)]
	p.mu.Unlock()
	if a == nil {
		return nil, fmt.Errorf("%w: unknown request %q", ErrInvalid, id)
	}
	return a, nil
}

// enqueue hands a plan to up to Workers workers; false when the queue is full.
func (p *Prefetcher) enqueue(q chan *plan, pl *plan) bool {
	n := min(p.cfg.Workers, len(pl.blocks))
	for i := range n {
		select {
		case q <- pl:
		default:
			if i == 0 {
				p.dropped.Add(1)
				if !pl.deadline.IsZero() {
					p.late.Add(int64(len(pl.blocks)))
				}
				return false
			}
			return true // the workers that have it drain it
		}
	}
	return true
}

func (p *Prefetcher) work() {
	defer p.wg.Done()
	var scratch []byte // this worker's key summary buffer
	for {
		var pl *plan
		select {
		case pl = <-p.urgent:
		default:
			select {
			case pl = <-p.urgent:
			case pl = <-p.staging:
			case <-p.done:
				return
			}
		}
		scratch = p.run(pl, scratch)
	}
}

// run moves the plan's blocks until none is left, the deadline passes,
// the budget is spent or the request finishes.
func (p *Prefetcher) run(pl *plan, scratch []byte) []byte {
	a := pl.r
	ctx := a.ctx
	if !pl.deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, pl.deadline)
		defer cancel()
	}
	total := int64(len(pl.blocks))
	for {
		i := pl.next.Add(1) - 1
		if i >= total {
			return scratch
		}
		switch {
		case a.ctx.Err() != nil:
			p.cancelled.Add(1 + pl.takeRest(total))
			return scratch
		case !pl.deadline.IsZero() && time.Now().After(pl.deadline):
			p.late.Add(1 + pl.takeRest(total))
			return scratch
		case pl.budget.Load() <= 0:
			pl.takeRest(total)
			return scratch
		}
		scratch = p.move(ctx, pl, int(pl.blocks[i]), scratch)
		if pl.arrival && len(p.urgent) > 0 && i+1 < total {
			// Urgent plans go first: hand the rest of this one back.
			select {
			case p.staging <- pl:
				return scratch
			default: // the queue is full: keep going
			}
		}
	}
}

// takeRest claims every block of the plan no worker has claimed yet and
// returns how many, so that each block is counted once however many
// workers stop the plan at the same time.
func (pl *plan) takeRest(total int64) int64 {
	for {
		cur := pl.next.Load()
		if cur >= total {
			return 0
		}
		if pl.next.CompareAndSwap(cur, total) {
			return total - cur
		}
	}
}

// move brings block i of the plan's request up to its target tier. On
// arrival it also takes the block's key summary (one pass over its keys,
// off the put path) for query ranking.
func (p *Prefetcher) move(ctx context.Context, pl *plan, i int, scratch []byte) []byte {
	a := pl.r
	k := tiers.Key{Namespace: a.ns, Hash: a.hashes[i], Layer: pl.layer}
	target := tiers.Level(a.target.Load())
	b, err := p.store.Get(ctx, k, tiers.GetOptions{Promote: target})
	if errors.Is(err, tiers.ErrUnavailable) && target == tiers.LevelHBM {
		a.target.Store(uint32(tiers.LevelDRAM)) // no HBM tier: DRAM is the top
		target = tiers.LevelDRAM
		b, err = p.store.Get(ctx, k, tiers.GetOptions{})
	}
	switch {
	case errors.Is(err, tiers.ErrNotFound):
		p.misses.Add(1)
		return scratch
	case ctx.Err() != nil:
		if a.ctx.Err() != nil {
			p.cancelled.Add(1)
		} else {
			p.late.Add(1)
		}
		return scratch
	case err != nil:
		p.log.Debug("prefetch: move failed", "key", k, "err", err)
		return scratch
	}
	n := int64(len(b.Data))
	if pl.arrival {
		scratch = p.summarize(a, i, b, scratch)
	}
	_ = p.store.Release(k)
	if b.From <= target { // the level constants order HBM first
		p.hits.Add(1)
		return scratch
	}
	pl.budget.Add(-n)
	p.moved.Add(n)
	if pl.arrival {
		p.staged.Add(1)
	} else {
		p.promoted.Add(1)
	}
	return scratch
}

// summarize records the key summary of block i, read as b, per layer.
func (p *Prefetcher) summarize(a *active, i int, b tiers.Block, scratch []byte) []byte {
	sum, err := tiers.SummarizeKeys(scratch, b.Layout, b.Data)
	if err != nil {
		return scratch // an fp8 block: queries cannot rank it
	}
	per := len(sum) / b.Layout.NumLayers()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.layer >= 0 {
		_ = a.req.SetSummary(int(a.layer), i, sum[:per])
		return sum
	}
	for l := range min(b.Layout.NumLayers(), p.cfg.Layers) {
		_ = a.req.SetSummary(l, i, sum[l*per:(l+1)*per])
	}
	return sum
}

// coldPerLayer is how many eviction candidates a plan keeps per layer.
const coldPerLayer = 32

var _ tiers.VictimSource = (*Prefetcher)(nil)

// Victims implements tiers.VictimSource (the store's importance eviction
// policy, enabled with Store.SetVictims): the blocks that active requests'
// latest plans predicted least important, coldest first per request and
// layer. It holds the prefetcher's locks across fn, and never calls the
// store while holding them.
func (p *Prefetcher) Victims(_ tiers.Level, fn func(tiers.Key) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range p.reqs {
		a.mu.Lock()
		for layer, blocks := range a.cold {
			for _, b := range blocks {
				if fn(tiers.Key{Namespace: a.ns, Hash: a.hashes[b], Layer: layer}) {
					a.mu.Unlock()
					return
				}
			}
		}
		a.mu.Unlock()
	}
}

// Stats returns the counters.
func (p *Prefetcher) Stats() Stats {
	p.mu.Lock()
	n := int64(len(p.reqs))
	p.mu.Unlock()
	return Stats{
		Requests: n, Staged: p.staged.Load(), Promoted: p.promoted.Load(), BytesMoved: p.moved.Load(),
		Hits: p.hits.Load(), Misses: p.misses.Load(), Late: p.late.Load(), Dropped: p.dropped.Load(),
		Cancelled: p.cancelled.Load(), Plans: p.plans.Load(),
	}
}

// Close cancels every request and stops the workers. It does not close
// the store.
func (p *Prefetcher) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.mu.Lock()
	for k, a := range p.reqs {
		a.cancel()
		delete(p.reqs, k)
	}
	p.mu.Unlock()
	close(p.done)
	p.wg.Wait()
	return nil
}
