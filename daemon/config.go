package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// Defaults and limits of Config.
const (
	// MaxChunkBytes is the largest data chunk of a Put or Get message.
	MaxChunkBytes = 1 << 20
	// DefaultMaxMessageBytes bounds one received message: a 1 MiB chunk
	// plus headers, or a Lookup of a long chain.
	DefaultMaxMessageBytes = 4 << 20
	// DefaultMaxConcurrentStreams bounds the calls in flight on one connection.
	DefaultMaxConcurrentStreams = 256
	// DefaultLeaseTTL is how long a shared-memory lease lasts when the
	// client asks for no particular lifetime.
	DefaultLeaseTTL = 30 * time.Second
	// DefaultMaxLeaseTTL is the longest lease a client may ask for.
	DefaultMaxLeaseTTL = 10 * time.Minute
	// DefaultMaxLeases bounds the leases one shared-memory session holds.
	DefaultMaxLeases = 4096
	// DefaultShutdownTimeout bounds how long shutdown waits for calls in flight.
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultStreamIdleTimeout is how long an inline Put or Get stream may
	// make no progress (receive nothing, or send nothing because the client
	// does not read) before it is ended and its reservation or pin dropped.
	DefaultStreamIdleTimeout = 30 * time.Second
	// DefaultMetricsAddr is where Prometheus metrics are served.
	DefaultMetricsAddr = "127.0.0.1:9464"
	// unixPathMax is the longest Unix socket path Linux accepts.
	unixPathMax = 107
)

// Config configures a Server. Zero fields take defaults from EnsureDefaults.
type Config struct {
	// Socket is the Unix socket path to listen on; "" for none. The socket
	// is created with SocketMode and offers the shared-memory plane. New
	// makes a relative path absolute (against the working directory), so
	// the descriptor socket beside it, which Attach hands to clients, can
	// be dialled from anywhere.
	Socket string
	// SocketMode is the Unix socket's permission bits. Default 0600.
	SocketMode os.FileMode
	// Addr is a TCP address to listen on ("host:port"); "" for none. TCP
	// needs TLS (TLSCert and TLSKey) or Insecure.
	Addr string
	// TLSCert and TLSKey are PEM files of the server's certificate and key.
	TLSCert, TLSKey string
	// TLSClientCA is a PEM bundle; when set, TCP clients must present a
	// certificate it signed.
	TLSClientCA string
	// Insecure allows TCP without TLS. A warning is logged.
	Insecure bool
	// TokensFile is a JSON file of bearer tokens and the namespaces each may
	// use (see LoadTokens). "" disables token checks.
	TokensFile string
	// MetricsAddr is the HTTP address serving /metrics; "" disables it.
	// EnsureDefaults does not fill it: the command line does.
	MetricsAddr string

	// MaxMessageBytes bounds one received message. Default DefaultMaxMessageBytes.
	MaxMessageBytes int
	// MaxConcurrentStreams bounds calls in flight per connection. Default
	// DefaultMaxConcurrentStreams.
	MaxConcurrentStreams uint32
	// LeaseTTL is a shared-memory lease's default lifetime. Default DefaultLeaseTTL.
	LeaseTTL time.Duration
	// MaxLeaseTTL is the longest lease a client may ask for. Default DefaultMaxLeaseTTL.
	MaxLeaseTTL time.Duration
	// MaxLeases bounds the leases (pins and reservations) of one
	// shared-memory session. Default DefaultMaxLeases.
	MaxLeases int
	// StreamIdleTimeout ends an inline Put or Get stream that makes no
	// progress for this long: a Put that receives nothing (its DRAM
	// reservation is freed), a Get whose client reads nothing (its pin is
	// dropped). The stream ends with DEADLINE_EXCEEDED. Default
	// DefaultStreamIdleTimeout.
	StreamIdleTimeout time.Duration
	// MaxPutBytesPerConn bounds the DRAM that the inline puts in flight on
	// one connection hold in reservations; MaxPutBytesPerToken the same
	// for all connections of one token (only with TokensFile). A put over
	// the bound fails with RESOURCE_EXHAUSTED, except the first one in
	// flight, so a block larger than the bound can still be put. 0 means
	// a quarter (per connection) or a half (per token) of the DRAM tier;
	// a negative value means no bound.
	MaxPutBytesPerConn, MaxPutBytesPerToken int64
	// ShutdownTimeout bounds the wait for calls in flight at shutdown;
	// calls still running then are cancelled. Default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration

	// Logger receives the daemon's structured logs. Default slog.Default().
	Logger *slog.Logger
}

// EnsureDefaults fills zero fields with their defaults.
func (c *Config) EnsureDefaults() {
	if c.SocketMode == 0 {
		c.SocketMode = 0o600
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.MaxLeaseTTL <= 0 {
		c.MaxLeaseTTL = DefaultMaxLeaseTTL
	}
	if c.MaxLeases <= 0 {
		c.MaxLeases = DefaultMaxLeases
	}
	if c.StreamIdleTimeout <= 0 {
		c.StreamIdleTimeout = DefaultStreamIdleTimeout
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a configuration that cannot work; the error wraps
// ErrConfig and names the setting.
func (c *Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	if c.Socket == "" && c.Addr == "" {
		return bad("socket, addr: at least one listener is needed")
	}
	if c.Socket != "" {
		if len(c.Socket) > unixPathMax {
			return bad("socket: path %q is %d bytes, longer than the %d a Unix socket allows", c.Socket, len(c.Socket), unixPathMax)
		}
		if fd := fdSocketPath(c.Socket); len(fd) > unixPathMax {
			return bad("socket: the descriptor socket %q would be longer than %d bytes; use a shorter path", fd, unixPathMax)
		}
	}
	if c.SocketMode&^0o777 != 0 {
		return bad("socket mode: %o has bits outside 0777", c.SocketMode)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return bad("tls cert, tls key: give both or neither")
	}
	tls := c.TLSCert != ""
	if c.TLSClientCA != "" && !tls {
		return bad("tls client ca: needs tls cert and tls key")
	}
	if c.Addr != "" && !tls && !c.Insecure {
		return bad("addr: TCP needs tls cert and tls key, or insecure")
	}
	if c.Addr == "" && (tls || c.Insecure) {
		return bad("tls, insecure: only apply to addr, which is not set")
	}
	if c.MaxMessageBytes < MaxChunkBytes+4096 {
		return bad("max message bytes: %d is less than a %d-byte chunk plus headers", c.MaxMessageBytes, MaxChunkBytes)
	}
	if c.LeaseTTL > c.MaxLeaseTTL {
		return bad("lease ttl: %v exceeds max lease ttl %v", c.LeaseTTL, c.MaxLeaseTTL)
	}
	if c.MaxLeaseTTL > time.Duration(1<<32-1)*time.Millisecond {
		return bad("max lease ttl: %v is too long", c.MaxLeaseTTL)
	}
	return nil
}

// fdSocketPath is where the arena's descriptor is handed out, beside the
// main socket.
func fdSocketPath(socket string) string {
	return filepath.Join(filepath.Dir(socket), "."+filepath.Base(socket)+".fd")
}
