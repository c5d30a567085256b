package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvtier/kvtier/prefetch"
)

// prefetchStatser is a Hints that keeps counters (prefetch.Prefetcher).
type prefetchStatser interface{ Stats() prefetch.Stats }

// prefetchCollector reads the prefetcher's Stats at scrape time.
type prefetchCollector struct{ p prefetchStatser }

var (
	descPfBlocks   = prometheus.NewDesc("kvtier_prefetch_blocks_total", "Blocks the prefetcher handled, by outcome: staged (arrival, brought up), promoted (layer plan, brought up), hit (already there), miss (not cached), late (dropped at the deadline), cancelled (request finished).", []string{"outcome"}, nil)
	descPfBytes    = prometheus.NewDesc("kvtier_prefetch_bytes_moved_total", "Bytes the prefetcher brought up a tier.", nil, nil)
	descPfPlans    = prometheus.NewDesc("kvtier_prefetch_plans_total", "Layer plans made.", nil, nil)
	descPfDropped  = prometheus.NewDesc("kvtier_prefetch_dropped_plans_total", "Plans dropped because their queue was full.", nil, nil)
	descPfRequests = prometheus.NewDesc("kvtier_prefetch_requests", "Requests the prefetcher tracks.", nil, nil)
)

func (prefetchCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPfBlocks, descPfBytes, descPfPlans, descPfDropped, descPfRequests} {
		ch <- d
	}
}

func (c prefetchCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.p.Stats()
	for _, o := range []struct {
		name string
		v    int64
	}{{"staged", s.Staged}, {"promoted", s.Promoted}, {"hit", s.Hits}, {"miss", s.Misses}, {"late", s.Late}, {"cancelled", s.Cancelled}} {
		ch <- prometheus.MustNewConstMetric(descPfBlocks, prometheus.CounterValue, float64(o.v), o.name)
	}
	ch <- prometheus.MustNewConstMetric(descPfBytes, prometheus.CounterValue, float64(s.BytesMoved))
	ch <- prometheus.MustNewConstMetric(descPfPlans, prometheus.CounterValue, float64(s.Plans))
	ch <- prometheus.MustNewConstMetric(descPfDropped, prometheus.CounterValue, float64(s.Dropped))
	ch <- prometheus.MustNewConstMetric(descPfRequests, prometheus.GaugeValue, float64(s.Requests))
}
