package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kvtier/kvtier/cgo/gpu"
	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/daemon"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/dram"
	"github.com/kvtier/kvtier/tiers/hbm"
	"github.com/kvtier/kvtier/tiers/nvme"
)

func init() { register("serve", "run the kvtier daemon", runServe) }

// Embedded defaults of `kvtier serve`.
const (
	defaultDRAMCap  = 4 << 30 // DRAM tier: min(25% of RAM, this)
	defaultNVMeDir  = "./kvtier-data"
	defaultNVMeCap  = 10 << 30 // NVMe tier cap
	envPrefix       = "KVTIER_"
	socketFileName  = "kvtier.sock"
	defaultLogLevel = "info"
)

// defaultSocket is $XDG_RUNTIME_DIR/kvtier.sock, or else
// kvtier.sock in a private directory of the user's (kvtier-<uid> in the
// temporary directory): an absolute path either way, so that a client in
// any directory finds the daemon and its shared-memory socket.
func defaultSocket() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, socketFileName)
	}
	return filepath.Join(privateSocketDir(), socketFileName)
}

// privateSocketDir is the default socket's directory without XDG_RUNTIME_DIR.
func privateSocketDir() string {
	return filepath.Join(os.TempDir(), "kvtier-"+strconv.Itoa(os.Getuid()))
}

// defaultDRAMBytes is min(25% of RAM, 4 GiB).
func defaultDRAMBytes() int64 {
	ram := totalRAM()
	if ram <= 0 {
		return defaultDRAMCap
	}
	return min(ram/4, defaultDRAMCap)
}

// byteSize is a flag value of bytes, accepting 4GiB, 512MiB, 10G, 1.5GB, 4096.
type byteSize int64

func (b *byteSize) String() string { return formatBytes(int64(*b)) }

func (b *byteSize) Set(s string) error {
	n, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

// parseByteSize parses a size with an optional binary (KiB, MiB, GiB, TiB,
// or K, M, G, T) or decimal (KB, MB, GB, TB) suffix.
func parseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1},
	}
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || v*mult > 1<<62 {
		return 0, fmt.Errorf("bad size %q (want e.g. 4096, 512MiB, 4GiB)", s)
	}
	return int64(v * mult), nil
}

func formatBytes(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

// fileMode is a flag value of octal permission bits.
type fileMode os.FileMode

func (m *fileMode) String() string { return fmt.Sprintf("%04o", os.FileMode(*m)) }
func (m *fileMode) Set(s string) error {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v&^0o777 != 0 {
		return fmt.Errorf("bad mode %q (want octal such as 0600)", s)
	}
	*m = fileMode(v)
	return nil
}

// envName derives a flag's environment variable: --dram-bytes → KVTIER_DRAM_BYTES.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// applyEnv sets every flag not given on the command line from its
// KVTIER_* variable, if set. Command line > environment > default.
func applyEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil || isShorthand(f.Name) {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s=%q: %v", envName(f.Name), v, serr)
			}
		}
	})
	return err
}

// flagUsage prints a flag set's flags with their environment variables.
func flagUsage(fs *flag.FlagSet, w io.Writer, head string) {
	fmt.Fprintln(w, head)
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if !isShorthand(f.Name) {
			names = append(names, f.Name)
		}
	})
	sort.Strings(names)
	for _, n := range names {
		f := fs.Lookup(n)
		typ, usage := flag.UnquoteUsage(f)
		if short, ok := flagAliases[n]; ok && fs.Lookup(short) != nil {
			fmt.Fprintf(w, "  -%s, --%s %s\n", short, n, typ)
		} else {
			fmt.Fprintf(w, "  --%s %s\n", n, typ)
		}
		fmt.Fprintf(w, "      %s", strings.ReplaceAll(usage, "\n", "\n      "))
		// A usage that states its own default (a computed one) keeps it.
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" && !strings.Contains(usage, "(default ") {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, " [$%s]\n", envName(n))
	}
}

type serveFlags struct {
	cfg        daemon.Config
	socketMode fileMode
	dramBytes  byteSize
	nvmeDir    string
	nvmeBytes  byteSize
	nvmeCodec  codecModes
	nvmeRecov  nvme.RecoverMode
	dramCodec  codecModes
	hbm        string
	hbmBytes   byteSize
	hbmFrac    float64
	logLevel   string
	logFormat  string
	maxStreams uint
	leaseTTL   time.Duration
	maxTTL     time.Duration
	shutdown   time.Duration
	maxMsg     byteSize
	prefault   bool
	prefetch   prefetchFlags
	// putPerConn, putPerToken bound inline puts' reservations (0: default).
	putPerConn, putPerToken byteSize
	explicit                map[string]bool // flags set on the command line or by the environment
}

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f serveFlags
	f.socketMode = 0o600
	f.dramBytes = byteSize(defaultDRAMBytes())
	f.nvmeBytes = defaultNVMeCap
	f.maxMsg = daemon.DefaultMaxMessageBytes
	f.nvmeCodec.fallback = tiers.DefaultCodecs.NVMe
	f.dramCodec.fallback = tiers.DefaultCodecs.DRAM
	fs.StringVar(&f.cfg.Socket, "socket", defaultSocket(), "Unix socket to listen on (\"\" for none); offers the shared-memory data plane")
	fs.Var(&f.socketMode, "socket-mode", "permission bits of the Unix socket (octal)")
	fs.StringVar(&f.cfg.Addr, "addr", "", "TCP address to listen on, host:port (\"\" for none); needs --tls-cert/--tls-key or --insecure")
	fs.StringVar(&f.cfg.TLSCert, "tls-cert", "", "PEM certificate of the TCP listener")
	fs.StringVar(&f.cfg.TLSKey, "tls-key", "", "PEM private key of the TCP listener")
	fs.StringVar(&f.cfg.TLSClientCA, "tls-client-ca", "", "PEM CA bundle: TCP clients must present a certificate it signed")
	fs.BoolVar(&f.cfg.Insecure, "insecure", false, "allow TCP without TLS (logs a warning)")
	fs.StringVar(&f.cfg.TokensFile, "tokens", "", "JSON file of bearer tokens and their namespaces (\"\" disables token checks)")
	fs.StringVar(&f.cfg.MetricsAddr, "metrics-addr", daemon.DefaultMetricsAddr, "HTTP address of the Prometheus /metrics endpoint (\"\" disables it)")
	fs.Var(&f.dramBytes, "dram-bytes", "DRAM tier capacity (default min(25% of RAM, 4GiB))")
	fs.BoolVar(&f.prefault, "dram-prefault", false, "allocate every DRAM page at start")
	f.prefetch.register(fs)
	fs.Var(&f.dramCodec, "dram-codec", "keep DRAM blocks compressed: a mode (raw, lossless, int8, int4, int3, int2) for every namespace, then optional ns=mode overrides, comma-separated; each Get decodes (default raw: uncompressed)")
	fs.StringVar(&f.nvmeDir, "nvme-dir", defaultNVMeDir, "NVMe tier directory (\"\" for no NVMe tier)")
	fs.Var(&f.nvmeBytes, "nvme-bytes", "NVMe tier capacity")
	fs.Var(&f.nvmeCodec, "nvme-codec", "codec of NVMe copies: a mode (raw, lossless, int8, int4, int3, int2) for every namespace, then optional ns=mode overrides, comma-separated (default lossless)")
	fs.Var(&f.nvmeRecov, "nvme-recover", "what to do with an NVMe store that cannot open: quarantine (move it aside, start empty) or fail")
	fs.StringVar(&f.hbm, "hbm", "auto", "GPU tier: auto (when a GPU is found), off")
	fs.Var(&f.hbmBytes, "hbm-bytes", "HBM tier capacity (0: --hbm-fraction of the GPU's free memory)")
	fs.Float64Var(&f.hbmFrac, "hbm-fraction", 0.25, "share of the GPU's free memory the HBM tier takes when --hbm-bytes is 0")
	fs.Var(&f.maxMsg, "max-message-bytes", "largest message a client may send")
	fs.UintVar(&f.maxStreams, "max-streams", daemon.DefaultMaxConcurrentStreams, "calls in flight per connection (each inline Get holds one pin)")
	fs.IntVar(&f.cfg.MaxLeases, "max-leases", daemon.DefaultMaxLeases, "pins and reservations one shared-memory session may hold")
	fs.DurationVar(&f.leaseTTL, "lease-ttl", daemon.DefaultLeaseTTL, "default lifetime of a shared-memory lease")
	fs.DurationVar(&f.maxTTL, "max-lease-ttl", daemon.DefaultMaxLeaseTTL, "longest lease a client may ask for")
	fs.DurationVar(&f.cfg.StreamIdleTimeout, "stream-idle-timeout", daemon.DefaultStreamIdleTimeout, "end an inline put or get stream that moves nothing for this long, freeing its DRAM reservation or pin")
	fs.Var(&f.putPerConn, "max-put-bytes-per-conn", "DRAM the reservations of one connection's inline puts in flight may hold (default a quarter of --dram-bytes)")
	fs.Var(&f.putPerToken, "max-put-bytes-per-token", "the same for all connections of one token, with --tokens (default half of --dram-bytes)")
	fs.DurationVar(&f.shutdown, "shutdown-timeout", daemon.DefaultShutdownTimeout, "how long shutdown waits for calls in flight")
	fs.StringVar(&f.logLevel, "log-level", defaultLogLevel, "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.Usage = func() {
		flagUsage(fs, fs.Output(), "usage: kvtier serve [flags]\n\n"+
			"Runs the daemon until SIGTERM or SIGINT. Every flag can also be set by the\n"+
			"environment variable shown in brackets; a flag on the command line wins.\n\nflags:")
	}
	if code, ok := parseArgs(fs, args, stdout); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kvtier serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := applyEnv(fs); err != nil {
		fmt.Fprintf(stderr, "kvtier serve: %v\n", err)
		return 2
	}
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "kvtier serve: %v\n", err)
		return 2
	}
	if f.hbm != "auto" && f.hbm != "off" {
		fmt.Fprintf(stderr, "kvtier serve: --hbm: want auto or off, got %q\n", f.hbm)
		return 2
	}
	f.cfg.SocketMode = os.FileMode(f.socketMode)
	f.cfg.MaxConcurrentStreams = uint32(min(f.maxStreams, 1<<31))
	f.cfg.LeaseTTL, f.cfg.MaxLeaseTTL, f.cfg.ShutdownTimeout = f.leaseTTL, f.maxTTL, f.shutdown
	f.cfg.MaxMessageBytes = int(min(int64(f.maxMsg), 1<<30))
	f.cfg.Logger = log
	f.cfg.MaxPutBytesPerConn, f.cfg.MaxPutBytesPerToken = int64(f.putPerConn), int64(f.putPerToken)
	f.cfg.EnsureDefaults()
	if err := f.cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "kvtier serve: %v\n", err)
		return 2
	}
	if f.cfg.Socket != "" && filepath.Dir(f.cfg.Socket) == privateSocketDir() {
		if err := ensurePrivateDir(privateSocketDir()); err != nil {
			fmt.Fprintf(stderr, "kvtier serve: --socket: %v\n", err)
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	f.explicit = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.explicit[fl.Name] = true }) // command line and environment
	if err := serve(ctx, &f, log); err != nil {
		log.Error("kvtier serve: failed", "err", err)
		if isConfigError(err) {
			return 2
		}
		return 1
	}
	return 0
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: want text or json, got %q", format)
}

// serve opens the tiers, the store and the daemon, and runs until ctx ends.
func serve(ctx context.Context, f *serveFlags, log *slog.Logger) error {
	arena, err := dram.New(int64(f.dramBytes), dram.WithPrefault(f.prefault))
	if err != nil {
		return fmt.Errorf("DRAM tier: %w", err)
	}
	cfg := tiers.Config{DRAM: arena, Logger: log, Codecs: func(ns string) tiers.Codecs {
		return tiers.Codecs{DRAM: f.dramCodec.modeOf(ns), NVMe: f.nvmeCodec.modeOf(ns)}
	}}
	closeAll := func() { _ = arena.Close() }
	if f.nvmeDir != "" {
		nv, err := nvme.Open(f.nvmeDir, int64(f.nvmeBytes), nvme.WithLogger(log, slog.LevelWarn), nvme.WithRecover(f.nvmeRecov))
		if err != nil {
			closeAll()
			return fmt.Errorf("NVMe tier: %w", err)
		}
		cfg.NVMe = nv
		prev := closeAll
		closeAll = func() { _ = nv.Close(); prev() }
	}
	// HBM: when --hbm=auto and a GPU is found, the HBM tier joins the
	// store; the DRAM arena is page-locked for fast copies, and unlocked
	// before the store unmaps it.
	var opts []daemon.Option
	if f.hbm == "auto" {
		h, err := openHBM(arena, int64(f.hbmBytes), f.hbmFrac, log)
		switch {
		case err != nil:
			closeAll()
			return fmt.Errorf("HBM tier: %w", err)
		case h == nil && f.explicit["hbm-bytes"]:
			closeAll()
			return fmt.Errorf("%w: --hbm-bytes %s asks for an HBM tier, and this host has no usable GPU (use --hbm off, or leave --hbm-bytes unset)",
				errHostConfig, formatBytes(int64(f.hbmBytes)))
		case h != nil:
			cfg.HBM = h.tier
			prev := closeAll
			closeAll = func() { _ = h.tier.Close(); h.release(); prev() }
			defer h.closeDevice()
			opts = append(opts, daemon.WithBeforeStoreClose(h.release), daemon.WithHBMArena(hbmArena{h.tier}))
		}
	}
	attrs := []any{"dram_bytes", arena.Size(), "nvme", cfg.NVMe != nil}
	if cfg.NVMe != nil {
		attrs = append(attrs, "nvme_dir", f.nvmeDir, "nvme_bytes", int64(f.nvmeBytes))
	}
	log.Info("kvtier serve: opening the store", append(attrs, "hbm", cfg.HBM != nil)...)
	store, err := tiers.Open(ctx, cfg)
	if err != nil {
		closeAll()
		return fmt.Errorf("store: %w", err)
	}
	if arena.File() != nil {
		opts = append(opts, daemon.WithArena(arena))
	}
	if o, closeGPUs := openGPUTelemetry(log); o != nil {
		opts = append(opts, o)
		defer closeGPUs()
	}
	popts, err := f.prefetch.options(store, log)
	if err != nil {
		_ = store.Close()
		return err
	}
	opts = append(opts, popts...)
	srv, err := daemon.New(f.cfg, store, opts...)
	if err != nil {
		_ = store.Close()
		return err
	}
	return srv.Run(ctx)
}

// hbmTier is an open HBM tier and what must be undone around it.
type hbmTier struct {
	tier        *hbm.Tier
	release     func() // unregisters the DRAM arena from the GPU (idempotent)
	closeDevice func() // after the store (and so the tier) is closed
}

// hostPinChunk is the unit in which the DRAM arena is page-locked for the
// GPU as copies first touch it (a multiple of the arena's 2 MiB chunks).
const hostPinChunk = 64 << 20

// openHBM opens the first GPU and an HBM tier on it. No GPU is not an
// error: it returns nil, nil and logs it. The DRAM arena is page-locked
// lazily, hostPinChunk at a time as the tier's copies touch it, never
// whole at start (that would commit and pin every page at once). gpuOpts
// go to gpu.Open (a library path, in tests).
func openHBM(arena *dram.Arena, capacity int64, fraction float64, log *slog.Logger, gpuOpts ...gpu.Option) (*hbmTier, error) {
	dev, err := gpu.Open(gpuOpts...)
	if err != nil {
		if errors.Is(err, gpu.ErrUnavailable) {
			log.Info("kvtier serve: no GPU found; running without the HBM tier", "reason", err)
			return nil, nil
		}
		return nil, err
	}
	if capacity == 0 {
		if capacity, err = hbm.CapacityFromDevice(dev, fraction); err != nil {
			_ = dev.Close()
			return nil, err
		}
	}
	chunk := max(hostPinChunk/arena.ChunkSize(), 1) * arena.ChunkSize()
	t, err := hbm.New(dev, capacity, hbm.WithHostRegion(arena.Base(), chunk))
	if err != nil {
		_ = dev.Close()
		return nil, err
	}
	var once sync.Once
	h := &hbmTier{tier: t, closeDevice: func() { _ = dev.Close() }}
	h.release = func() {
		once.Do(func() {
			pinned, perr := t.HostPinned()
			if perr != nil {
				log.Warn("kvtier serve: part of the DRAM arena could not be page-locked; its GPU copies were staged", "err", perr)
			}
			log.Info("kvtier serve: unregistering the DRAM arena from the GPU", "pinned_bytes", pinned)
			if err := t.ReleaseHost(); err != nil {
				log.Warn("kvtier serve: unregistering the DRAM arena from the GPU", "err", err)
			}
		})
	}
	info := dev.Info()
	log.Info("kvtier serve: HBM tier", "device", info.Name, "library", info.Library, "bytes", capacity,
		"dram_pinning", "lazy", "pin_chunk_bytes", chunk)
	return h, nil
}

// codecModes is a --nvme-codec or --dram-codec setting: a default mode and
// per-namespace overrides, e.g. "lossless,llama-70b=int4".
type codecModes struct {
	fallback codec.Mode // every namespace's mode until Set
	def      codec.Mode
	set      bool
	perNS    map[string]codec.Mode
}

func (c *codecModes) String() string {
	if c == nil || !c.set {
		if c == nil {
			return codec.Raw.String()
		}
		return c.fallback.String()
	}
	parts := []string{c.def.String()}
	for ns, m := range c.perNS {
		parts = append(parts, ns+"="+m.String())
	}
	sort.Strings(parts[1:])
	return strings.Join(parts, ",")
}

func (c *codecModes) Set(v string) error {
	c.def, c.set, c.perNS = c.fallback, true, nil
	for i, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		ns, name, override := strings.Cut(part, "=")
		if !override {
			name = ns
		}
		m, err := codec.ParseMode(name)
		if err != nil {
			return err
		}
		switch {
		case !override && i == 0:
			c.def = m
		case !override:
			return fmt.Errorf("%q: only the first item may be a bare mode; write ns=mode", part)
		default:
			if err := tiers.ValidateNamespace(ns); err != nil {
				return err
			}
			if c.perNS == nil {
				c.perNS = map[string]codec.Mode{}
			}
			c.perNS[ns] = m
		}
	}
	return nil
}

// modeOf is the per-namespace codec choice.
func (c *codecModes) modeOf(ns string) codec.Mode {
	if m, ok := c.perNS[ns]; ok {
		return m
	}
	if !c.set {
		return c.fallback
	}
	return c.def
}
