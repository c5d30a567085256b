package load

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvtier/kvtier/benchmarks/host"
	"github.com/kvtier/kvtier/benchmarks/latency"
)

// Scenarios (MLPerf inference's, plus a closed-loop sweep).
const (
	SingleStream = "single-stream" // one request at a time; p90 is the figure
	Server       = "server"        // Poisson arrivals at a rate (open loop)
	ServerMax    = "server-find-max"
	Offline      = "offline" // everything at once: throughput
	Sweep        = "sweep"   // closed loop at each concurrency level
)

// DefaultLevels are the sweep's concurrency levels.
var DefaultLevels = []int{1, 4, 8, 16, 32, 64}

// Config is a run of one scenario.
type Config struct {
	Scenario string
	// QPS is the server scenario's arrival rate; FindMax instead searches
	// the highest rate whose p99 stays within SLAP99.
	QPS     float64
	FindMax bool
	SLAP99  time.Duration
	// Concurrency is the connections serving the server and offline
	// scenarios (default 32); Levels are the sweep's (default DefaultLevels).
	Concurrency int
	Levels      []int
	// Duration is each level's (or search probe's) wall time (default 2s);
	// Iterations, when positive, is each level's operations instead.
	Duration   time.Duration
	Iterations int
	Host       *host.Info
}

// EnsureDefaults fills the zero fields.
func (c *Config) EnsureDefaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = 32
	}
	if len(c.Levels) == 0 {
		c.Levels = DefaultLevels
	}
	if c.Duration <= 0 && c.Iterations <= 0 {
		c.Duration = 2 * time.Second
	}
	if c.FindMax && c.SLAP99 <= 0 {
		c.SLAP99 = 2 * time.Millisecond
	}
}

// Validate reports a configuration that cannot run.
func (c *Config) Validate() error {
	switch c.Scenario {
	case SingleStream, Offline, Sweep:
	case Server:
		if !c.FindMax && c.QPS <= 0 {
			return fmt.Errorf("%w: the server scenario needs --qps or --find-max", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: unknown scenario %q (want single-stream, server, offline, sweep)", ErrInvalid, c.Scenario)
	}
	for _, l := range append([]int{c.Concurrency}, c.Levels...) {
		if l < 1 || l > 1024 {
			return fmt.Errorf("%w: concurrency %d not in 1..1024", ErrInvalid, l)
		}
	}
	return nil
}

// Row is one measured level of one target; the JSON names are the
// command's contract.
type Row struct {
	Target      string  `json:"target"`
	Scenario    string  `json:"scenario"`
	Concurrency int     `json:"concurrency"`
	QPS         float64 `json:"qps"` // offered rate; 0 for closed loops
	BlockBytes  int     `json:"block_bytes"`
	OpsPerS     float64 `json:"ops_per_s"`
	GBps        float64 `json:"gbps"`
	P50US       float64 `json:"p50_us"`
	P90US       float64 `json:"p90_us"`
	P99US       float64 `json:"p99_us"`
	P999US      float64 `json:"p999_us"`
	Errors      int64   `json:"errors"`
	Misses      int64   `json:"misses"`
	Ops         int64   `json:"ops"`
	Mix         string  `json:"mix"`
	// FromSchedule is true when latencies count from each request's
	// scheduled time (open loop: coordinated omission corrected).
	FromSchedule bool       `json:"from_schedule"`
	Host         *host.Info `json:"host,omitempty"`
}

// Target is a named system under test.
type Target struct {
	Name string
	Dial Dialer
}

// Run measures cfg's scenario on every target, level by level (the targets
// in turn at each level, so they see nearly the same moment). progress
// (may be nil) gets the fraction done and a label; log gets the search's
// probes. When ctx ends it returns the rows finished so far and ctx's
// error.
func Run(ctx context.Context, cfg Config, w *Workload, targets []Target, progress func(float64, string), log io.Writer) ([]Row, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(float64, string) {}
	}
	if log == nil {
		log = io.Discard
	}
	var rows []Row
	type level struct {
		conc int
		qps  float64
	}
	var levels []level
	switch cfg.Scenario {
	case SingleStream:
		levels = []level{{1, 0}}
	case Offline:
		levels = []level{{cfg.Concurrency, 0}}
	case Sweep:
		for _, c := range cfg.Levels {
			levels = append(levels, level{c, 0})
		}
	case Server:
		levels = []level{{cfg.Concurrency, cfg.QPS}}
	}
	steps := float64(len(levels) * len(targets))
	if cfg.FindMax {
		steps = float64(len(targets) * (1 + maxProbes))
	}
	done := 0.0
	for _, lv := range levels {
		for _, t := range targets {
			label := fmt.Sprintf("%s %s c=%d", t.Name, cfg.Scenario, lv.conc)
			var row Row
			var err error
			if cfg.FindMax {
				row, err = findMax(ctx, cfg, w, t, func(f float64, l string) { progress((done+f*(1+maxProbes))/steps, l) }, log)
				done += 1 + maxProbes
			} else {
				row, err = measure(ctx, cfg, w, t, lv.conc, lv.qps, func(f float64) { progress((done+f)/steps, label) })
				done++
			}
			if err != nil {
				return rows, err
			}
			row.Host = cfg.Host
			rows = append(rows, row)
			progress(done/steps, label)
		}
	}
	return rows, nil
}

// maxProbes bounds the bisection of findMax.
const maxProbes = 8

// findMax finds the highest Poisson arrival rate whose p99 latency (from
// the scheduled time) stays within cfg.SLAP99 with no errors and the rate
// achieved: an offline run at cfg.Concurrency gives the ceiling, then a
// bisection between 0 and it, stopping at maxProbes probes or 3% apart.
// When no probe meets the SLA the row has no rate and no operations (the
// log has every probe).
func findMax(ctx context.Context, cfg Config, w *Workload, t Target, progress func(float64, string), log io.Writer) (Row, error) {
	top, err := measure(ctx, cfg, w, t, cfg.Concurrency, 0, func(f float64) { progress(f/(1+maxProbes), t.Name+" ceiling") })
	if err != nil {
		return top, err
	}
	fmt.Fprintf(log, "load: %s: closed-loop ceiling %.0f ops/s at concurrency %d (p99 %.0f µs)\n", t.Name, top.OpsPerS, cfg.Concurrency, top.P99US)
	lo, hi := 0.0, top.OpsPerS*1.05
	best := Row{Target: t.Name, Scenario: ServerMax, Concurrency: cfg.Concurrency, BlockBytes: w.BlockBytes, Mix: w.Mix.String(), FromSchedule: true}
	for probe := range maxProbes {
		if hi-lo < 0.03*hi {
			break
		}
		qps := (lo + hi) / 2
		if probe == 0 {
			qps = hi * 0.7 // the knee is usually past the middle
		}
		r, err := measure(ctx, cfg, w, t, cfg.Concurrency, qps, func(f float64) {
			progress((1+float64(probe)+f)/(1+maxProbes), fmt.Sprintf("%s %.0f/s", t.Name, qps))
		})
		if err != nil {
			return best, err
		}
		ok := r.Errors == 0 && r.P99US <= float64(cfg.SLAP99.Microseconds()) && r.OpsPerS >= 0.95*qps
		fmt.Fprintf(log, "load: %s: %.0f/s offered: %.0f/s done, p99 %.0f µs, %d errors: %s\n", t.Name, qps, r.OpsPerS, r.P99US, r.Errors,
			map[bool]string{true: "within the SLA", false: "over"}[ok])
		if ok {
			lo, best = qps, r
			best.Scenario = ServerMax
		} else {
			hi = qps
		}
	}
	return best, nil
}

// measure runs one level: conc connections, closed loop (qps 0: each
// sends its next request when the last returns; latency from sending) or
// open loop (Poisson arrivals at qps; latency from each arrival's
// scheduled time, so a backlog counts: coordinated omission corrected).
func measure(ctx context.Context, cfg Config, w *Workload, t Target, conc int, qps float64, progress func(float64)) (Row, error) {
	scenario := cfg.Scenario
	row := Row{Target: t.Name, Scenario: scenario, Concurrency: conc, QPS: qps, BlockBytes: w.BlockBytes, Mix: w.Mix.String(), FromSchedule: qps > 0}
	if qps > 0 {
		row.Scenario = Server
	}
	conns := make([]Conn, conc)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range conns {
		c, err := t.Dial(ctx)
		if err != nil {
			return row, fmt.Errorf("load: %s: %w", t.Name, err)
		}
		conns[i] = c
	}
	type result struct {
		hist          *latency.Histogram
		ops, errs, ms int64
		firstErr      error
	}
	res := make([]result, conc)
	var (
		issued  atomic.Int64 // operations started (iterations bound)
		mu      sync.Mutex   // protects arrival and rng below
		arrival time.Duration
		arr     = rand.New(rand.NewPCG(w.Seed, 0xa11))
	)
	limit := int64(cfg.Iterations)
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	if limit > 0 {
		deadline = start.Add(24 * time.Hour)
	}
	nextDue := func() time.Time {
		mu.Lock()
		arrival += time.Duration(arr.ExpFloat64() / qps * float64(time.Second))
		a := arrival
		mu.Unlock()
		return start.Add(a)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i := range conns {
		res[i].hist = latency.New()
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &res[i]
			g := w.gen(i + 1000*conc)
			dst := make([]byte, w.BlockBytes)
			tm := time.NewTimer(time.Hour) // reused for every wait: no timer per request
			tm.Stop()
			for {
				if limit > 0 && issued.Add(1) > limit {
					return
				}
				var t0 time.Time
				if qps > 0 {
					t0 = nextDue()
					if t0.After(deadline) {
						return
					}
					if d := time.Until(t0); d > 0 {
						tm.Reset(d)
						select {
						case <-tm.C:
						case <-runCtx.Done():
							return
						}
					}
				} else {
					t0 = time.Now()
					if t0.After(deadline) {
						return
					}
				}
				kind, key := g.next()
				var err error
				switch kind {
				case OpGet:
					var got []byte
					if got, err = conns[i].Get(runCtx, key, dst); err == nil && len(got) != w.BlockBytes {
						err = fmt.Errorf("load: get returned %d bytes, want %d", len(got), w.BlockBytes)
					}
				case OpPut:
					err = conns[i].Put(runCtx, key, w.value)
				case OpLookup:
					err = conns[i].Lookup(runCtx, key)
				}
				if runCtx.Err() != nil {
					return // interrupted: the operation's outcome does not count
				}
				r.hist.Record(time.Since(t0))
				r.ops++
				switch {
				case err == nil:
				case benign(err):
					r.ms++
				default:
					r.errs++
					if r.firstErr == nil {
						r.firstErr = err
					}
				}
			}
		}()
	}
	// Progress while the workers run.
	tick := time.NewTicker(200 * time.Millisecond)
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
loop:
	for {
		select {
		case <-finished:
			break loop
		case <-tick.C:
			if limit > 0 {
				progress(min(1, float64(issued.Load())/float64(limit)))
			} else {
				progress(min(1, float64(time.Since(start))/float64(cfg.Duration)))
			}
		}
	}
	tick.Stop()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return row, err
	}
	h := latency.New()
	var firstErr error
	for i := range res {
		h.Merge(res[i].hist)
		row.Ops += res[i].ops
		row.Errors += res[i].errs
		row.Misses += res[i].ms
		if firstErr == nil {
			firstErr = res[i].firstErr
		}
	}
	if row.Ops > 0 && row.Errors == row.Ops {
		return row, fmt.Errorf("load: %s: every operation failed: %w", t.Name, firstErr)
	}
	row.OpsPerS = float64(row.Ops) / elapsed.Seconds()
	row.GBps = row.OpsPerS * float64(w.BlockBytes) * (w.Mix.Get + w.Mix.Put) / 1e9
	row.P50US, row.P90US, row.P99US, row.P999US = h.QuantileUS(0.5), h.QuantileUS(0.9), h.QuantileUS(0.99), h.QuantileUS(0.999)
	return row, nil
}
