package daemon

import (
	"context"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvtier/kvtier/tiers"
)

// metrics are the daemon's Prometheus metrics, in a registry of its own
// (never the global default). Store figures are read at scrape time.
type metrics struct {
	reg   *prometheus.Registry
	rpc   *prometheus.HistogramVec // kvtier_rpc_duration_seconds{method,code}
	hints *prometheus.CounterVec   // kvtier_hints_total{kind,result}
	// The children of kvtier_data_plane_bytes_total{plane,direction},
	// resolved once: in is client to daemon (puts), out daemon to client (gets).
	inlineIn, inlineOut, shmIn, shmOut prometheus.Counter
}

func newMetrics(store *tiers.Store) *metrics {
	dataBytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvtier_data_plane_bytes_total",
		Help: "Block bytes moved, by data plane (inline, shm) and direction (in = put, out = get).",
	}, []string{"plane", "direction"})
	m := &metrics{
		reg: prometheus.NewRegistry(),
		rpc: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kvtier_rpc_duration_seconds",
			Help:    "Duration of gRPC calls (whole streams for streaming calls), by method and status code.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 2, 21), // 10µs .. ~10s
		}, []string{"method", "code"}),
		hints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvtier_hints_total",
			Help: "Hints received, by kind and result (ok, unimplemented, error).",
		}, []string{"kind", "result"}),
		inlineIn:  dataBytes.WithLabelValues("inline", "in"),
		inlineOut: dataBytes.WithLabelValues("inline", "out"),
		shmIn:     dataBytes.WithLabelValues("shm", "in"),
		shmOut:    dataBytes.WithLabelValues("shm", "out"),
	}
	m.reg.MustRegister(m.rpc, dataBytes, m.hints,
		storeCollector{store},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// storeCollector reads store.Stats() at scrape time.
type storeCollector struct{ store *tiers.Store }

var (
	tierLabels      = []string{"tier", "name"}
	descTierCap     = prometheus.NewDesc("kvtier_tier_capacity_bytes", "Hard capacity of the tier.", tierLabels, nil)
	descTierUsed    = prometheus.NewDesc("kvtier_tier_used_bytes", "Bytes of blocks held by the tier.", tierLabels, nil)
	descTierLogical = prometheus.NewDesc("kvtier_tier_logical_bytes", "Bytes the tier's blocks take decoded; used_bytes is what they take as stored.", tierLabels, nil)
	descTierRes     = prometheus.NewDesc("kvtier_tier_reserved_bytes", "Bytes the tier consumes for its blocks (slots, value log).", tierLabels, nil)
	descTierBlocks  = prometheus.NewDesc("kvtier_tier_blocks", "Blocks held by the tier.", tierLabels, nil)
	descTierHits    = prometheus.NewDesc("kvtier_tier_hits_total", "Gets served with this tier as the fastest holding the block.", tierLabels, nil)
	descTierEvict   = prometheus.NewDesc("kvtier_tier_evictions_total", "Copies evicted from the tier.", tierLabels, nil)
	descTierPromote = prometheus.NewDesc("kvtier_tier_promotions_total", "Copies brought into the tier from below.", tierLabels, nil)
	descTierCorrupt = prometheus.NewDesc("kvtier_tier_corrupt_total", "Copies found damaged and removed.", tierLabels, nil)
	descTierStopped = prometheus.NewDesc("kvtier_tier_writes_stopped", "1 while the tier takes no writes because its device is out of space or failing; reads go on.", tierLabels, nil)
	descTierFree    = prometheus.NewDesc("kvtier_tier_free_bytes", "Free space of the tier's file system at the last check (tiers on a file system only).", tierLabels, nil)
	descTierQuar    = prometheus.NewDesc("kvtier_tier_quarantined_total", "Damaged stores the tier set aside when it opened.", tierLabels, nil)
	descMisses      = prometheus.NewDesc("kvtier_misses_total", "Gets of blocks not cached.", nil, nil)
	descDemotions   = prometheus.NewDesc("kvtier_demotions_total", "DRAM blocks copied to NVMe.", nil, nil)
	descIndexed     = prometheus.NewDesc("kvtier_indexed_blocks", "Blocks with at least one copy.", nil, nil)
	descPinned      = prometheus.NewDesc("kvtier_pinned_blocks", "Blocks some reader holds.", nil, nil)
	descWBQueue     = prometheus.NewDesc("kvtier_write_behind_queue", "Blocks waiting to be copied to NVMe.", nil, nil)
)

func (storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTierCap, descTierUsed, descTierLogical, descTierRes, descTierBlocks, descTierHits,
		descTierEvict, descTierPromote, descTierCorrupt, descTierStopped, descTierFree, descTierQuar, descMisses, descDemotions, descIndexed, descPinned, descWBQueue} {
		ch <- d
	}
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.store.Stats()
	for _, l := range st.Levels {
		lv := []string{l.Level.String(), l.Name}
		g := func(d *prometheus.Desc, v int64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), lv...)
		}
		ctr := func(d *prometheus.Desc, v int64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
		}
		g(descTierCap, l.CapacityBytes)
		g(descTierUsed, l.UsedBytes)
		g(descTierLogical, l.LogicalBytes)
		g(descTierRes, l.ReservedBytes)
		g(descTierBlocks, l.Blocks)
		ctr(descTierHits, l.Hits)
		ctr(descTierEvict, l.Evictions)
		ctr(descTierPromote, l.Promotions)
		ctr(descTierCorrupt, l.Corrupt)
		g(descTierStopped, boolGauge(l.WritesStopped))
		if l.FreeBytes > 0 {
			g(descTierFree, l.FreeBytes)
		}
		ctr(descTierQuar, l.Quarantined)
	}
	ch <- prometheus.MustNewConstMetric(descMisses, prometheus.CounterValue, float64(st.Misses))
	ch <- prometheus.MustNewConstMetric(descDemotions, prometheus.CounterValue, float64(st.Demotions))
	ch <- prometheus.MustNewConstMetric(descIndexed, prometheus.GaugeValue, float64(st.IndexedBlocks))
	ch <- prometheus.MustNewConstMetric(descPinned, prometheus.GaugeValue, float64(st.PinnedBlocks))
	ch <- prometheus.MustNewConstMetric(descWBQueue, prometheus.GaugeValue, float64(st.WriteBehindWait))
}

func boolGauge(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// Interceptors: every call goes through one of these two, which
// authenticate it, turn the handler's error into a gRPC status (Status, the
// one mapping), recover panics, log internal errors and time the call.

// unauthenticated lists the services any peer may call without a token.
func needsAuth(fullMethod string) bool {
	return !strings.HasPrefix(fullMethod, "/grpc.health.v1.") &&
		!strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

func methodName(fullMethod string) string {
	if i := strings.LastIndexByte(fullMethod, '/'); i >= 0 {
		return fullMethod[i+1:]
	}
	return fullMethod
}

func (s *Server) finish(fullMethod string, start time.Time, err error, recovered any) error {
	if recovered != nil {
		s.log.Error("daemon: panic in handler", "method", fullMethod, "panic", recovered, "stack", string(debug.Stack()))
		err = status.Errorf(codes.Internal, "internal error in %s", methodName(fullMethod))
	}
	err = Status(err)
	code := status.Code(err)
	if code == codes.Internal || code == codes.DataLoss || code == codes.Unknown {
		s.log.Error("daemon: call failed", "method", fullMethod, "code", code.String(), "err", err)
	}
	s.metrics.observe(methodName(fullMethod), code, time.Since(start))
	return err
}

// observe records one call (or one request on a stream, such as a pin on
// PinStream) in the latency histogram.
func (m *metrics) observe(method string, code codes.Code, d time.Duration) {
	m.rpc.WithLabelValues(method, code.String()).Observe(d.Seconds())
}

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	defer func() { err = s.finish(info.FullMethod, start, err, recover()) }()
	if needsAuth(info.FullMethod) {
		p, aerr := s.auth.authenticate(ctx)
		if aerr != nil {
			return nil, aerr
		}
		ctx = withPrincipal(ctx, p)
	}
	return h(ctx, req)
}

// authedStream carries the principal in its context.
type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a *authedStream) Context() context.Context { return a.ctx }

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	start := time.Now()
	defer func() { err = s.finish(info.FullMethod, start, err, recover()) }()
	if needsAuth(info.FullMethod) {
		p, aerr := s.auth.authenticate(ss.Context())
		if aerr != nil {
			return aerr
		}
		ss = &authedStream{ServerStream: ss, ctx: withPrincipal(ss.Context(), p)}
	}
	return h(srv, ss)
}
