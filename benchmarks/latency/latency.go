// Package latency records operation latencies in HDR histograms
// (github.com/HdrHistogram/hdrhistogram-go: fixed memory, three significant
// digits, from 1 ns to 10 minutes) and reports their quantiles in
// microseconds. The tier and load benchmarks record into one Histogram per
// worker, which never allocates per operation, and merge them at the end.
//
// Caveats: a Histogram is not safe for concurrent use; give each goroutine
// its own and Merge them. Values beyond the range are clamped to it.
package latency

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

const (
	lowest  = 1                       // ns
	highest = int64(10 * time.Minute) // ns
	sigfig  = 3
)

// Histogram counts latencies.
type Histogram struct{ h *hdrhistogram.Histogram }

// New returns an empty histogram.
func New() *Histogram { return &Histogram{h: hdrhistogram.New(lowest, highest, sigfig)} }

// Record adds one latency.
func (h *Histogram) Record(d time.Duration) {
	v := min(max(int64(d), lowest), highest)
	_ = h.h.RecordValue(v) // in range by construction
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) { h.h.Merge(o.h) }

// Count is the number of latencies recorded.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Reset empties h.
func (h *Histogram) Reset() { h.h.Reset() }

// QuantileUS returns the q-quantile (0 < q < 1, e.g. 0.99) in microseconds,
// 0 when h is empty.
func (h *Histogram) QuantileUS(q float64) float64 {
	if h.h.TotalCount() == 0 {
		return 0
	}
	return float64(h.h.ValueAtQuantile(q*100)) / 1e3
}
