package hbm

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// subBuckets per power of two: quantiles are exact to 1/16 (6.25%).
const (
	subBits    = 4
	subBuckets = 1 << subBits
	numBuckets = (64 - subBits + 1) * subBuckets
)

// Histogram counts durations in log-linear buckets without locks, for
// percentiles of copy and operation latency. The zero value is ready.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
}

func bucketOf(ns uint64) int {
	if ns < subBuckets {
		return int(ns)
	}
	e := bits.Len64(ns) - 1
	return (e-subBits+1)*subBuckets + int((ns>>(e-subBits))&(subBuckets-1))
}

// bucketMid returns the middle of bucket i, in nanoseconds.
func bucketMid(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	e := i/subBuckets + subBits - 1
	lo := uint64(subBuckets+i%subBuckets) << (e - subBits)
	return lo + (uint64(1)<<(e-subBits))/2
}

// Record counts one duration (negative durations count as zero).
func (h *Histogram) Record(d time.Duration) {
	ns := uint64(max(d, 0))
	h.counts[bucketOf(ns)].Add(1)
	h.n.Add(1)
}

// Count returns the number of durations recorded.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Quantile returns the q-quantile (0 < q <= 1) of the recorded durations,
// 0 when none was recorded. Concurrent Records may or may not be seen.
func (h *Histogram) Quantile(q float64) time.Duration {
	var total uint64
	var snap [numBuckets]uint64
	for i := range snap {
		snap[i] = h.counts[i].Load()
		total += snap[i]
	}
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total) + 0.5)
	rank = min(max(rank, 1), total)
	var seen uint64
	for i, c := range snap {
		if seen += c; seen >= rank {
			return time.Duration(bucketMid(i))
		}
	}
	return time.Duration(bucketMid(numBuckets - 1))
}

// Percentiles summarizes a Histogram.
type Percentiles struct {
	Count    uint64
	P50, P99 time.Duration
}

// Percentiles returns the count, median and 99th percentile.
func (h *Histogram) Percentiles() Percentiles {
	return Percentiles{Count: h.Count(), P50: h.Quantile(0.5), P99: h.Quantile(0.99)}
}

// Latency is a snapshot of a Tier's latency histograms. Put and Get are
// the wall time of the whole operation (waiting for a stream included);
// PutCopy and GetCopy are the device time of the copy alone, measured with
// events recorded around it.
type Latency struct {
	Put, Get         Percentiles
	PutCopy, GetCopy Percentiles
}
