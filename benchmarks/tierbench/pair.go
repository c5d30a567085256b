package tierbench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kvtier/kvtier/benchmarks/latency"
)

// Side is one side of a paired measurement. Op performs operation i of
// worker w (i counts from 0 per worker and side; both sides see the same
// sequence, so they visit the same blocks). Flush, when set, ends each
// batch of worker w (a write's sync) and is timed with the batch but not
// in the per-operation latencies.
type Side struct {
	Op    func(w, i int) error
	Flush func(w int) error
}

// Pair is a tier and its reference, measured interleaved: in rounds, each
// round one batch of the tier and one of the reference on every worker at
// once (all workers run the same side at the same time), the side that goes
// first alternating from round to round, so both see the same moment of a
// machine whose speed drifts.
type Pair struct {
	Tier, Ref Side
	Bytes     int // per operation
	Parallel  int // workers (default 1)
	// Batch is the operations per worker and batch (default: about 1 MiB).
	Batch int
	// Duration is the wall time the pair runs (both sides together);
	// Iterations, when positive, is instead the operations per side.
	Duration   time.Duration
	Iterations int
}

// Stats is one side's outcome.
type Stats struct {
	Ops   int64
	Bytes int64
	// Busy is the wall time of this side's batches (all workers at once).
	Busy time.Duration
	// Latency holds every operation's latency, all workers merged.
	Latency *latency.Histogram
}

// GBps is the side's bandwidth: bytes over its busy time, in 1e9 bytes/s.
func (s Stats) GBps() float64 {
	if s.Busy <= 0 {
		return 0
	}
	return float64(s.Bytes) / s.Busy.Seconds() / 1e9
}

type worker struct {
	next [2]int                // next operation index per side
	hist [2]*latency.Histogram // per side
	err  error
}

// RunPair measures p. progress (may be nil) gets the fraction done after
// each round. When ctx ends it returns what was measured so far with
// ctx's error.
func RunPair(ctx context.Context, p Pair, progress func(frac float64)) (tier, ref Stats, err error) {
	if p.Bytes <= 0 || (p.Duration <= 0 && p.Iterations <= 0) || p.Tier.Op == nil || p.Ref.Op == nil {
		return tier, ref, fmt.Errorf("%w: pair needs bytes, a duration or iterations, and both sides", ErrInvalid)
	}
	par := max(p.Parallel, 1)
	batch := p.Batch
	if batch <= 0 {
		batch = max(1, (1<<20)/p.Bytes)
	}
	sides := [2]Side{p.Tier, p.Ref}
	ws := make([]worker, par)
	for w := range ws {
		ws[w].hist = [2]*latency.Histogram{latency.New(), latency.New()}
	}
	var st [2]Stats
	// Persistent workers: a round sends the side to run on each worker's
	// channel and waits for all.
	start := make([]chan int, par)
	var wg sync.WaitGroup
	for w := range ws {
		start[w] = make(chan int)
		go func() {
			for side := range start[w] {
				ws[w].err = runBatch(&ws[w], w, side, sides[side], batch)
				wg.Done()
			}
		}()
	}
	defer func() {
		for _, c := range start {
			close(c)
		}
	}()
	begin := time.Now()
	for round := 0; ; round++ {
		if err := ctx.Err(); err != nil {
			return merged(st, ws, 0, p.Bytes), merged(st, ws, 1, p.Bytes), err
		}
		for k := range 2 {
			side := (k + round) % 2
			t0 := time.Now()
			wg.Add(par)
			for _, c := range start {
				c <- side
			}
			wg.Wait()
			st[side].Busy += time.Since(t0)
			st[side].Ops += int64(par * batch)
			for w := range ws {
				if ws[w].err != nil {
					return tier, ref, ws[w].err
				}
			}
		}
		var frac float64
		if p.Iterations > 0 {
			frac = float64(st[0].Ops) / float64(p.Iterations)
		} else {
			frac = float64(time.Since(begin)) / float64(p.Duration)
		}
		if progress != nil {
			progress(min(frac, 1))
		}
		if frac >= 1 {
			break
		}
	}
	return merged(st, ws, 0, p.Bytes), merged(st, ws, 1, p.Bytes), nil
}

func runBatch(wk *worker, w, side int, s Side, batch int) error {
	h := wk.hist[side]
	for range batch {
		t0 := time.Now()
		if err := s.Op(w, wk.next[side]); err != nil {
			return err
		}
		h.Record(time.Since(t0))
		wk.next[side]++
	}
	if s.Flush != nil {
		return s.Flush(w)
	}
	return nil
}

// merged is side's stats with the workers' histograms merged.
func merged(st [2]Stats, ws []worker, side, bytes int) Stats {
	s := st[side]
	s.Bytes = s.Ops * int64(bytes)
	s.Latency = latency.New()
	for w := range ws {
		s.Latency.Merge(ws[w].hist[side])
	}
	return s
}
