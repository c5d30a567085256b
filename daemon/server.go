package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers"
)

// Arena is the shared DRAM arena that the shared-memory data plane hands to
// local clients: tiers/dram's Arena implements it.
type Arena interface {
	// File returns the memfd backing the arena mapping. The daemon only
	// sends it to clients; it never closes it.
	File() *os.File
	// Size returns the length of the mapping in bytes.
	Size() int64
}

// Option adds an optional part to a Server.
type Option func(*Server)

// WithArena enables the shared-memory data plane over a: the store's DRAM
// tier must be the same arena, so that slot offsets from the store address
// a's mapping.
func WithArena(a Arena) Option { return func(s *Server) { s.arena = a } }

// WithHints routes Hint streams to h (the prefetcher). Without it every
// hint is answered UNIMPLEMENTED.
func WithHints(h Hints) Option { return func(s *Server) { s.hints = h } }

// WithBeforeStoreClose runs fn at shutdown after every call has finished
// and before the store closes (for example to unregister the DRAM arena
// from a GPU before it is unmapped).
func WithBeforeStoreClose(fn func()) Option {
	return func(s *Server) { s.beforeClose = append(s.beforeClose, fn) }
}

// Server is the kvtier daemon: the gRPC services over the store, on a Unix
// socket and/or TCP, plus the shared-memory plane and the metrics endpoint.
type Server struct {
	pb.UnimplementedKVTierServiceServer

	cfg   Config
	store *tiers.Store
	arena Arena // nil: no shared-memory plane
	hints Hints
	log   *slog.Logger
	auth  *authenticator // nil: no token checks
	// tcpCreds are the TCP listener's credentials (TLS or insecure).
	tcpCreds credentials.TransportCredentials
	metrics  *metrics
	health   *health.Server
	shm      *shmPlane
	puts     *putBudget  // DRAM held by inline puts in flight
	workers  *workerPool // runs watched inline streams (see watchIdle)
	// watched counts watched streams' work still running, abandoned or not.
	watched sync.WaitGroup

	idleStreams *prometheus.CounterVec // kvtier_idle_streams_total{call}
	gpus        *gpuCache              // nil: no GPU telemetry (WithGPUs)
	hbmArena    HBMArena               // nil: no HBM arena to lease (WithHBMArena)

	lookupPool  sync.Pool // *lookupBufs
	beforeClose []func()

	ready       chan struct{} // closed once every listener is up
	stopping    chan struct{} // closed when shutdown begins
	mu          sync.Mutex    // protects the addresses below
	tcpAddr     string
	metricsAddr string
}

// New builds a server over store. It takes ownership of the store: Run
// closes it before returning.
func New(cfg Config, store *tiers.Store, opts ...Option) (*Server, error) {
	cfg.EnsureDefaults()
	if cfg.Socket != "" {
		// Absolute, so that the descriptor socket Attach hands out can be
		// dialled from any directory, and cleanup finds the socket.
		abs, err := filepath.Abs(cfg.Socket)
		if err != nil {
			return nil, fmt.Errorf("%w: socket: %v", ErrConfig, err)
		}
		cfg.Socket = abs
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, fmt.Errorf("%w: store is required", ErrConfig)
	}
	s := &Server{
		cfg:      cfg,
		store:    store,
		log:      cfg.Logger,
		health:   health.NewServer(),
		ready:    make(chan struct{}),
		stopping: make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	if s.hints == nil {
		s.hints = noHints{}
	}
	if cfg.Addr != "" {
		// Read the certificates now: a bad path is a configuration error
		// before anything listens.
		creds, err := s.tlsCreds()
		if err != nil {
			return nil, err
		}
		s.tcpCreds = budgetCreds{creds}
	}
	if cfg.TokensFile != "" {
		a, err := LoadTokens(cfg.TokensFile)
		if err != nil {
			return nil, err
		}
		s.auth = a
	}
	var dramCap int64
	for _, l := range store.Stats().Levels {
		if l.Level == tiers.LevelDRAM {
			dramCap = l.CapacityBytes
		}
	}
	s.puts = newPutBudget(cfg.MaxPutBytesPerConn, cfg.MaxPutBytesPerToken, dramCap)
	s.workers = newWorkerPool()
	s.metrics = newMetrics(store)
	s.shm = newShmPlane(s)
	s.registerGuardMetrics()
	s.metrics.reg.MustRegister(s.shm.collector())
	if s.gpus != nil {
		s.metrics.reg.MustRegister(gpuCollector{s.gpus})
	}
	if ps, ok := s.hints.(prefetchStatser); ok {
		s.metrics.reg.MustRegister(prefetchCollector{ps})
	}
	return s, nil
}

// Store returns the store the daemon serves.
func (s *Server) Store() *tiers.Store { return s.store }

// Registry returns the Prometheus registry the daemon's metrics live in.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

// Ready is closed once Run has every listener up.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// TCPAddr returns the TCP listener's address once Ready ("" without one).
func (s *Server) TCPAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tcpAddr
}

// MetricsAddr returns the metrics listener's address once Ready ("" without one).
func (s *Server) MetricsAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.metricsAddr
}

func (s *Server) grpcOptions(creds credentials.TransportCredentials) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(creds),
		grpc.ForceServerCodecV2(newServerWire()),
		grpc.MaxRecvMsgSize(s.cfg.MaxMessageBytes),
		grpc.MaxSendMsgSize(s.cfg.MaxMessageBytes),
		grpc.MaxConcurrentStreams(s.cfg.MaxConcurrentStreams),
		// Large blocks: windows big enough for several 1 MiB chunks in
		// flight, and socket buffers that take a chunk in few writes.
		grpc.InitialWindowSize(8 << 20),
		grpc.InitialConnWindowSize(32 << 20),
		grpc.WriteBufferSize(256 << 10),
		grpc.ReadBufferSize(256 << 10),
		// Dead TCP peers are found, so their streams end and their pins go.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(s.unaryInterceptor, recycleLookupRequest),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
		grpc.WaitForHandlers(true),
		// Reuse handler goroutines (and their grown stacks) across calls.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	}
}

func (s *Server) newGRPC(creds credentials.TransportCredentials) *grpc.Server {
	gs := grpc.NewServer(s.grpcOptions(creds)...)
	pb.RegisterKVTierServiceServer(gs, s)
	healthpb.RegisterHealthServer(gs, s.health)
	reflection.Register(gs)
	return gs
}

func (s *Server) tlsCreds() (credentials.TransportCredentials, error) {
	if s.cfg.TLSCert == "" {
		return insecure.NewCredentials(), nil
	}
	cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("%w: tls cert, tls key: %v", ErrConfig, err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if s.cfg.TLSClientCA != "" {
		pem, err := os.ReadFile(s.cfg.TLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("%w: tls client ca: %v", ErrConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: tls client ca: no certificate in %s", ErrConfig, s.cfg.TLSClientCA)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(tc), nil
}

// listenUnix creates a Unix socket at path with the given mode, without a
// moment where it exists with looser permissions: it is bound in a private
// directory beside path, chmod-ed, then renamed into place. A stale socket
// left by a crashed daemon is replaced; a live one is an error.
func listenUnix(path string, mode os.FileMode) (*net.UnixListener, error) {
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("daemon: %s: another daemon is listening there", path)
		}
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".kvt")
	if err != nil {
		return nil, fmt.Errorf("daemon: socket %s: %w", path, err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("daemon: socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("daemon: socket %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("daemon: socket %s: %w", path, err)
	}
	return ln, nil
}

// Run listens, serves until ctx is done, then shuts down gracefully: it
// stops accepting calls, lets calls in flight finish (up to
// ShutdownTimeout, then cancels them), ends shared-memory sessions
// (releasing their leases), and closes the store, which flushes the
// write-behind queue to NVMe. It closes the store whatever happens.
func (s *Server) Run(ctx context.Context) (err error) {
	var (
		servers  []*grpc.Server
		cleanup  []func()
		wg       sync.WaitGroup
		serveMu  sync.Mutex
		serveErr error
	)
	defer func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
		// Streams given up as idle may still be ending (their reservation
		// or pin in hand): the servers are stopped, so they end now.
		s.watched.Wait()
		for _, fn := range s.beforeClose {
			fn()
		}
		if cerr := s.store.Close(); cerr != nil && !errors.Is(cerr, tiers.ErrClosed) {
			s.log.Error("daemon: closing the store", "err", cerr)
			err = errors.Join(err, cerr)
		}
		s.log.Info("daemon: stopped")
	}()
	serve := func(gs *grpc.Server, ln net.Listener) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := gs.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				serveMu.Lock()
				serveErr = errors.Join(serveErr, err)
				serveMu.Unlock()
			}
		}()
	}
	// abort stops the servers already started, for a listener that failed.
	abort := func(err error) error {
		s.stopAll(servers, 0)
		wg.Wait()
		return err
	}

	if s.cfg.Socket != "" {
		ln, err := listenUnix(s.cfg.Socket, s.cfg.SocketMode)
		if err != nil {
			return err
		}
		path := s.cfg.Socket
		cleanup = append(cleanup, func() { os.Remove(path) })
		gs := s.newGRPC(unixCreds{})
		servers = append(servers, gs)
		serve(gs, ln)
		s.log.Info("daemon: listening", "socket", path, "mode", fmt.Sprintf("%04o", s.cfg.SocketMode))
		if s.arena != nil {
			if err := s.shm.listen(fdSocketPath(path)); err != nil {
				return abort(err)
			}
			cleanup = append(cleanup, s.shm.closeListener)
		}
	}
	if s.cfg.Addr != "" {
		creds := s.tcpCreds
		ln, err := net.Listen("tcp", s.cfg.Addr)
		if err != nil {
			return abort(fmt.Errorf("daemon: listen %s: %w", s.cfg.Addr, err))
		}
		s.mu.Lock()
		s.tcpAddr = ln.Addr().String()
		s.mu.Unlock()
		gs := s.newGRPC(creds)
		servers = append(servers, gs)
		serve(gs, ln)
		if s.cfg.TLSCert == "" {
			s.log.Warn("daemon: serving TCP WITHOUT TLS (--insecure): anyone who can reach the address can read and write the cache",
				"addr", ln.Addr().String())
		} else {
			s.log.Info("daemon: listening", "addr", ln.Addr().String(), "tls", true, "client_certs", s.cfg.TLSClientCA != "")
		}
	}
	if s.cfg.MetricsAddr != "" {
		ln, err := net.Listen("tcp", s.cfg.MetricsAddr)
		if err != nil {
			return abort(fmt.Errorf("daemon: metrics listen %s: %w", s.cfg.MetricsAddr, err))
		}
		s.mu.Lock()
		s.metricsAddr = ln.Addr().String()
		s.mu.Unlock()
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{Registry: s.metrics.reg}))
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("daemon: metrics server", "err", err)
			}
		}()
		cleanup = append(cleanup, func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = hs.Shutdown(sctx)
		})
		s.log.Info("daemon: metrics", "addr", "http://"+ln.Addr().String()+"/metrics")
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(pb.KVTierService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	close(s.ready)

	<-ctx.Done()
	s.log.Info("daemon: shutting down", "timeout", s.cfg.ShutdownTimeout.String())
	s.health.Shutdown()
	close(s.stopping)
	s.stopAll(servers, s.cfg.ShutdownTimeout)
	wg.Wait()
	s.shm.closeAll()
	return serveErr
}

// stopAll stops the gRPC servers: gracefully (new calls refused, calls in
// flight finish) for up to timeout, then by cancelling what is left.
// Shared-memory sessions are ended first, since their Attach streams last
// as long as the client wants.
func (s *Server) stopAll(servers []*grpc.Server, timeout time.Duration) {
	s.shm.closeAll()
	done := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for _, gs := range servers {
			wg.Add(1)
			go func() { defer wg.Done(); gs.GracefulStop() }()
		}
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		if timeout > 0 { // 0: a start that failed, where nothing was running
			s.log.Warn("daemon: calls still running after the shutdown timeout; cancelling them")
		}
		for _, gs := range servers {
			gs.Stop()
		}
		<-done
	}
}
