package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/kvtier/kvtier/tiers"
)

// What keeps one client from holding the DRAM tier: inline streams that
// make no progress are ended after Config.StreamIdleTimeout (see
// watchIdle), and the reservations of inline puts in flight are bounded
// per connection and per token (see putBudget).

// epoch is the origin of progress times: time.Since(epoch) is monotonic.
var epoch = time.Now()

// progress is when a watched stream last moved. The stream's worker
// updates it; watchIdle reads it.
type progress struct {
	last atomic.Int64 // time.Since(epoch) in ns at the last step
	busy atomic.Int32 // > 0 while the daemon itself works (not the client's wait)
}

func (p *progress) step() { p.last.Store(int64(time.Since(epoch))) }

// idleFor is how long the stream has made no progress.
func (p *progress) idleFor() time.Duration {
	if p.busy.Load() > 0 {
		return 0
	}
	return time.Since(epoch) - time.Duration(p.last.Load())
}

// watchIdle runs work on a pooled goroutine and waits for it, or until it
// has made no progress for idle. work calls p.step at each message it
// receives or sends. On timeout watchIdle returns an error wrapping
// ErrStreamIdle at once: the handler then returns, gRPC ends the stream,
// and work's blocked Recv or Send fails. work still owns what it holds
// (a reservation, a pin) and must free it when it ends: it is told it was
// abandoned by onAbandon, called on its goroutine with its result. Run
// waits for every such work before it closes the store.
//
// The stream's handler goroutine cannot be unblocked from outside its
// Recv or Send (grpc-go gives a server no way to cancel one stream), hence
// the second goroutine.
func (s *Server) watchIdle(what string, work func(p *progress) error, onAbandon func(error)) error {
	p := new(progress)
	p.step()
	result := make(chan error)
	abandoned := make(chan struct{})
	s.watched.Add(1)
	s.workers.run(func() {
		defer s.watched.Done()
		err := work(p)
		select {
		case result <- err:
		case <-abandoned:
			onAbandon(err)
		}
	})
	idle := s.cfg.StreamIdleTimeout
	t := time.NewTimer(idle)
	defer t.Stop()
	for {
		select {
		case err := <-result:
			return err
		case <-t.C:
			if d := p.idleFor(); d < idle {
				t.Reset(idle - d)
				continue
			}
			close(abandoned)
			s.idleStreams.WithLabelValues(what).Inc()
			return fmt.Errorf("%w: %s made no progress for %v (stream idle timeout); ended", ErrStreamIdle, what, idle)
		}
	}
}

// workerPool runs functions on goroutines that are kept for reuse, so an
// inline stream does not start a goroutine per call in steady state. A
// worker idle for workerIdle exits.
type workerPool struct {
	work chan func()
}

const workerIdle = 30 * time.Second

func newWorkerPool() *workerPool { return &workerPool{work: make(chan func())} }

func (w *workerPool) run(f func()) {
	select {
	case w.work <- f:
	default:
		go w.loop(f)
	}
}

func (w *workerPool) loop(f func()) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		f()
		t.Reset(workerIdle)
		select {
		case f = <-w.work:
		case <-t.C:
			return
		}
	}
}

// putBudget accounts the DRAM held by the reservations of inline puts in
// flight: in all, per connection and per token.
type putBudget struct {
	perConn, perToken int64 // ≤ 0: no bound

	mu      sync.Mutex // protects the fields below
	bytes   int64
	puts    int
	byToken map[string]int64
}

func newPutBudget(perConn, perToken, dramCap int64) *putBudget {
	if perConn == 0 {
		perConn = dramCap / 4
	}
	if perToken == 0 {
		perToken = dramCap / 2
	}
	return &putBudget{perConn: perConn, perToken: perToken, byToken: map[string]int64{}}
}

// connBudget is one connection's share. The connection's AuthInfo carries
// it (unixAuthInfo, or budgetAuthInfo around TCP's), so finding it costs a
// call no allocation.
type connBudget struct {
	mu    sync.Mutex // protects bytes
	bytes int64
}

// connBudgetOf returns the budget of the call's connection, nil if unknown.
func connBudgetOf(ctx context.Context) *connBudget {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	switch ai := p.AuthInfo.(type) {
	case unixAuthInfo:
		return ai.budget
	case budgetAuthInfo:
		return ai.budget
	}
	return nil
}

// budgetCreds wraps the TCP listener's credentials so that every
// connection's AuthInfo carries a connBudget.
type budgetCreds struct {
	credentials.TransportCredentials
}

// budgetAuthInfo is a TCP connection's AuthInfo with its budget.
type budgetAuthInfo struct {
	credentials.AuthInfo
	budget *connBudget
}

func (c budgetCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, ai, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		return conn, ai, err
	}
	return conn, budgetAuthInfo{AuthInfo: ai, budget: new(connBudget)}, nil
}

func (c budgetCreds) Clone() credentials.TransportCredentials {
	return budgetCreds{c.TransportCredentials.Clone()}
}

// acquire accounts n bytes for a put of the caller's connection and token
// (token "" when tokens are off), or fails wrapping tiers.ErrExhausted with
// the bound that was hit. A holder with nothing in flight may always take
// one put, however large. The returned release undoes it once.
func (b *putBudget) acquire(ctx context.Context, token string, n int64) (release func(), err error) {
	cb := connBudgetOf(ctx)
	if cb != nil {
		cb.mu.Lock()
		defer cb.mu.Unlock()
		if b.perConn > 0 && cb.bytes > 0 && cb.bytes+n > b.perConn {
			return nil, fmt.Errorf("%w: inline puts in flight on this connection hold %d bytes of DRAM; %d more would pass the bound of %d bytes per connection",
				tiers.ErrExhausted, cb.bytes, n, b.perConn)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if token != "" {
		held := b.byToken[token]
		if b.perToken > 0 && held > 0 && held+n > b.perToken {
			return nil, fmt.Errorf("%w: inline puts in flight with token %q hold %d bytes of DRAM; %d more would pass the bound of %d bytes per token",
				tiers.ErrExhausted, token, held, n, b.perToken)
		}
		b.byToken[token] = held + n
	}
	if cb != nil {
		cb.bytes += n
	}
	b.bytes += n
	b.puts++
	var once sync.Once
	return func() { once.Do(func() { b.release(cb, token, n) }) }, nil
}

func (b *putBudget) release(cb *connBudget, token string, n int64) {
	if cb != nil {
		cb.mu.Lock()
		cb.bytes -= n
		cb.mu.Unlock()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bytes -= n
	b.puts--
	if token != "" {
		if b.byToken[token] -= n; b.byToken[token] <= 0 {
			delete(b.byToken, token)
		}
	}
}

// inFlight returns the bytes and count of inline puts holding reservations.
func (b *putBudget) inFlight() (bytes int64, puts int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bytes, b.puts
}

// explainExhausted adds to a DRAM reservation's ErrExhausted what holds
// the tier: reservations of puts in flight (inline and shared-memory) and
// pinned blocks. own is the caller's inline put (its budget is already
// counted, its reservation failed), or 0.
func (s *Server) explainExhausted(err error, own int64) error {
	if !errors.Is(err, tiers.ErrExhausted) {
		return err
	}
	inBytes, inPuts := s.puts.inFlight()
	if own > 0 {
		inBytes, inPuts = inBytes-own, inPuts-1
	}
	shmRes, shmBytes := s.shm.reservations()
	st := s.store.Stats()
	var used, capacity int64
	for _, l := range st.Levels {
		if l.Level == tiers.LevelDRAM {
			used, capacity = l.ReservedBytes, l.CapacityBytes
		}
	}
	return fmt.Errorf("%w (DRAM tier: %d of %d bytes taken; held by %d inline puts in flight with %d bytes, %d shared-memory reservations with %d bytes, and %d pinned blocks)",
		err, used, capacity, inPuts, inBytes, shmRes, shmBytes, st.PinnedBlocks)
}

// reservations counts the shared-memory reservations (slots being
// written) over all sessions and their bytes. It walks every lease, so it
// is for error messages, not hot paths.
func (p *shmPlane) reservations() (n int, bytes int64) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, sess := range p.sessions {
		sess.mu.Lock()
		for _, l := range sess.leases {
			if l.kind == leaseSlot {
				n++
				bytes += l.size
			}
		}
		sess.mu.Unlock()
	}
	return n, bytes
}

// registerGuardMetrics adds the guards' series to the daemon's registry.
func (s *Server) registerGuardMetrics() {
	s.idleStreams = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvtier_idle_streams_total",
		Help: "Inline streams ended after the stream idle timeout, by call (put, get).",
	}, []string{"call"})
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kvtier_inline_put_reserved_bytes",
		Help: "DRAM held by the reservations of inline puts in flight.",
	}, func() float64 { b, _ := s.puts.inFlight(); return float64(b) })
	s.metrics.reg.MustRegister(s.idleStreams, inFlight)
}
