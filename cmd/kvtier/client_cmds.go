package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	"github.com/kvtier/kvtier/client"
	"github.com/kvtier/kvtier/codec"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers"
)

// Client commands: put, get, lookup and stats against a running daemon.
// Exit codes: 0 ok, 1 the daemon (or the connection) failed the call, 2 usage.

func init() {
	register("put", "store a file's bytes as a block in a running daemon", runPut)
	register("get", "write a cached block's bytes to a file or stdout", runGet)
	register("lookup", "print how many leading blocks of a chain are cached, and where", runLookup)
	register("stats", "print a running daemon's tier statistics", runStats)
}

// connFlags are the flags every client command takes.
type connFlags struct {
	socket   string
	addr     string
	token    string
	tlsCA    string
	tlsCert  string
	tlsKey   string
	insecure bool
	shm      bool
	timeout  time.Duration
}

func (c *connFlags) register(fs *flag.FlagSet, withShm bool) {
	fs.StringVar(&c.socket, "socket", defaultSocket(), "daemon's Unix socket")
	fs.StringVar(&c.addr, "addr", "", "daemon's TCP address host:port (instead of --socket)")
	fs.StringVar(&c.token, "token", "", "bearer token")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM CA bundle that signed the daemon's certificate (TCP; default: system roots)")
	fs.StringVar(&c.tlsCert, "tls-client-cert", "", "PEM client certificate (TCP, when the daemon asks for one)")
	fs.StringVar(&c.tlsKey, "tls-client-key", "", "PEM client key")
	fs.BoolVar(&c.insecure, "insecure", false, "TCP without TLS (a daemon started with --insecure)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "deadline of the call")
	if withShm {
		fs.BoolVar(&c.shm, "shm", false, "move the bytes through shared memory (Unix socket only)")
	}
}

// usageError is a problem with the command line: exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func (c *connFlags) dial() (*client.Client, error) {
	var opts []client.Option
	if c.token != "" {
		opts = append(opts, client.WithToken(c.token))
	}
	if c.addr == "" {
		if c.socket == "" {
			return nil, usagef("--socket or --addr is required")
		}
		if c.tlsCA != "" || c.tlsCert != "" || c.insecure {
			return nil, usagef("--tls-*, --insecure apply to --addr only")
		}
		return client.Dial(client.UnixTarget(c.socket), opts...)
	}
	if c.shm {
		return nil, usagef("--shm needs the Unix socket (--socket), not --addr")
	}
	switch {
	case c.insecure && (c.tlsCA != "" || c.tlsCert != ""):
		return nil, usagef("--insecure and --tls-* exclude each other")
	case c.insecure:
		opts = append(opts, client.WithInsecure())
	default:
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.tlsCA != "" {
			pem, err := os.ReadFile(c.tlsCA)
			if err != nil {
				return nil, usagef("--tls-ca: %v", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, usagef("--tls-ca: no certificate in %s", c.tlsCA)
			}
			tc.RootCAs = pool
		}
		if (c.tlsCert == "") != (c.tlsKey == "") {
			return nil, usagef("--tls-client-cert and --tls-client-key go together")
		}
		if c.tlsCert != "" {
			cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
			if err != nil {
				return nil, usagef("--tls-client-cert, --tls-client-key: %v", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, client.WithTLS(tc))
	}
	return client.Dial(c.addr, opts...)
}

// parseClientFlags parses args, applies KVTIER_* variables and checks that
// exactly nargs positional arguments remain (-1: any number).
func parseClientFlags(fs *flag.FlagSet, args []string, stdout io.Writer, nargs int) (int, bool) {
	if code, ok := parseArgs(fs, args, stdout); !ok {
		return code, false
	}
	if err := applyEnv(fs); err != nil {
		fmt.Fprintf(fs.Output(), "kvtier %s: %v\n", fs.Name(), err)
		return 2, false
	}
	if nargs >= 0 && fs.NArg() != nargs {
		if fs.NArg() > nargs {
			fmt.Fprintf(fs.Output(), "kvtier %s: unexpected argument %q\n", fs.Name(), fs.Arg(nargs))
		} else {
			fmt.Fprintf(fs.Output(), "kvtier %s: missing argument\n", fs.Name())
		}
		fs.Usage()
		return 2, false
	}
	return 0, true
}

// fail reports an error and returns the exit code: 2 for usage errors,
// 1 for everything else, with the gRPC code when there is one.
func fail(stderr io.Writer, cmd string, err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "kvtier %s: %s\n", cmd, ue.msg)
		return 2
	}
	if st, ok := status.FromError(err); ok {
		fmt.Fprintf(stderr, "kvtier %s: %s: %s\n", cmd, codeName(st.Code().String()), st.Message())
		return 1
	}
	fmt.Fprintf(stderr, "kvtier %s: %v\n", cmd, err)
	return 1
}

// codeName turns a Go code name (NotFound) into the canonical one (NOT_FOUND).
func codeName(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' && s[i-1] >= 'a' && s[i-1] <= 'z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// keyFlags name a block.
type keyFlags struct {
	ns    string
	hash  string
	layer int
}

func (k *keyFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.ns, "ns", "", "namespace (required)")
	fs.StringVar(&k.hash, "hash", "", "block hash, 32 or 64 hex characters (required)")
	fs.IntVar(&k.layer, "layer", 0, "layer, or -1 for a block holding every layer (required)")
}

func (k *keyFlags) key(fs *flag.FlagSet) (*pb.Key, error) {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if k.ns == "" {
		return nil, usagef("--ns is required")
	}
	if k.hash == "" {
		return nil, usagef("--hash is required")
	}
	if !given["layer"] && os.Getenv(envName("layer")) == "" {
		return nil, usagef("--layer is required")
	}
	h, err := parseHexHash("--hash", k.hash)
	if err != nil {
		return nil, err
	}
	if err := tiers.ValidateLayer(k.layer); err != nil {
		return nil, usagef("--layer: %v", err)
	}
	return &pb.Key{Namespace: k.ns, Hash: h, Layer: int32(k.layer)}, nil
}

func parseHexHash(flagName, s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(s), "0x"))
	if err != nil {
		return nil, usagef("%s: %q is not hex", flagName, s)
	}
	if len(b) != 16 && len(b) != 32 {
		return nil, usagef("%s: %d bytes, want 16 or 32 (32 or 64 hex characters)", flagName, len(b))
	}
	return b, nil
}

// parseDtype returns the element type named s, as the wire and the codec
// spell it.
func parseDtype(s string) (pb.Dtype, codec.DType, error) {
	switch strings.ToLower(s) {
	case "fp16", "float16", "half":
		return pb.Dtype_DTYPE_FP16, codec.FP16, nil
	case "bf16", "bfloat16":
		return pb.Dtype_DTYPE_BF16, codec.BF16, nil
	case "fp32", "float32":
		return pb.Dtype_DTYPE_FP32, codec.FP32, nil
	case "fp8", "float8":
		return pb.Dtype_DTYPE_FP8, codec.FP8, nil
	}
	return 0, 0, usagef("--dtype: unknown %q (want fp16, bf16, fp32 or fp8)", s)
}

// sat16 narrows v to 16 bits, saturating.
func sat16(v uint) uint16 { return uint16(min(v, math.MaxUint16)) }

func tierName(t pb.Tier) string {
	switch t {
	case pb.Tier_TIER_HBM:
		return "hbm"
	case pb.Tier_TIER_DRAM:
		return "dram"
	case pb.Tier_TIER_NVME:
		return "nvme"
	}
	return "none"
}

func cmdUsage(fs *flag.FlagSet, synopsis string) func() {
	return func() { flagUsage(fs, fs.Output(), "usage: kvtier "+synopsis+"\n\nflags:") }
}

func runPut(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("put", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var conn connFlags
	var kf keyFlags
	conn.register(fs, true)
	kf.register(fs)
	dtype := fs.String("dtype", "", "element type: fp16, bf16, fp32 or fp8 (required)")
	tokens := fs.Uint("tokens", 0, "tokens in the block (required)")
	kvHeads := fs.Uint("kv-heads", 0, "KV heads (required)")
	headDim := fs.Uint("head-dim", 0, "head dimension (required)")
	layers := fs.Uint("layers", 1, "layers in the block (more than 1 with --layer -1)")
	order := fs.String("order", "separate", "K/V order: separate or interleaved")
	parent := fs.String("parent", "", "hash of the chain's previous block (hex)")
	durable := fs.Bool("durable", false, "return only once the block is on NVMe")
	fs.Usage = cmdUsage(fs, "put --ns NS --hash HEX --layer L --dtype fp16|bf16|fp32|fp8 --tokens N --kv-heads H --head-dim D [--durable] FILE\n\nStores FILE's bytes (\"-\" for stdin) as the block; their count must match the layout.")
	if code, ok := parseClientFlags(fs, args, stdout, 1); !ok {
		return code
	}
	key, err := kf.key(fs)
	if err != nil {
		return fail(stderr, "put", err)
	}
	dt, cdt, err := parseDtype(*dtype)
	if *dtype == "" {
		err = usagef("--dtype is required")
	}
	if err != nil {
		return fail(stderr, "put", err)
	}
	for _, f := range []struct {
		name string
		v    uint
	}{{"tokens", *tokens}, {"kv-heads", *kvHeads}, {"head-dim", *headDim}} {
		if f.v == 0 {
			return fail(stderr, "put", usagef("--%s is required (a positive integer)", f.name))
		}
	}
	// The codec's Layout.Validate holds the limits; values too large for its
	// fields saturate, which it then rejects.
	cl := codec.Layout{DType: cdt, Layers: sat16(*layers), KVHeads: sat16(*kvHeads), HeadDim: sat16(*headDim), Tokens: uint32(min(*tokens, math.MaxUint32))}
	l := &pb.Layout{Dtype: dt}
	switch *order {
	case "separate":
		cl.Order, l.Order = codec.KVSeparate, pb.KVOrder_KV_ORDER_SEPARATE
	case "interleaved":
		cl.Order, l.Order = codec.KVInterleaved, pb.KVOrder_KV_ORDER_INTERLEAVED
	default:
		return fail(stderr, "put", usagef("--order: want separate or interleaved, got %q", *order))
	}
	if err := cl.Validate(); err != nil {
		return fail(stderr, "put", usagef("layout: %v", err))
	}
	l.Tokens, l.KvHeads, l.HeadDim, l.Layers = cl.Tokens, uint32(cl.KVHeads), uint32(cl.HeadDim), uint32(cl.Layers)
	var opts client.PutOptions
	opts.Durable = *durable
	if *parent != "" {
		if opts.Parent, err = parseHexHash("--parent", *parent); err != nil {
			return fail(stderr, "put", err)
		}
	}
	var data []byte
	if name := fs.Arg(0); name == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return fail(stderr, "put", err)
	}
	c, err := conn.dial()
	if err != nil {
		return fail(stderr, "put", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), conn.timeout)
	defer cancel()
	if conn.shm {
		s, aerr := c.Attach(ctx, "kvtier put")
		if aerr != nil {
			return fail(stderr, "put", aerr)
		}
		defer s.Close()
		err = s.Put(ctx, key, l, data, opts)
	} else {
		err = c.Put(ctx, key, l, data, opts)
	}
	if err != nil {
		return fail(stderr, "put", err)
	}
	return 0
}

func runGet(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var conn connFlags
	var kf keyFlags
	conn.register(fs, true)
	kf.register(fs)
	out := fs.String("out", "", "write the block to this `FILE` instead of stdout")
	fs.StringVar(out, flagAliases["out"], "", "shorthand for --out")
	fs.Usage = cmdUsage(fs, "get --ns NS --hash HEX --layer L [-o FILE]\n\nWrites the block's bytes to FILE or stdout; exits 1 when it is not cached.")
	if code, ok := parseClientFlags(fs, args, stdout, 0); !ok {
		return code
	}
	key, err := kf.key(fs)
	if err != nil {
		return fail(stderr, "get", err)
	}
	c, err := conn.dial()
	if err != nil {
		return fail(stderr, "get", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), conn.timeout)
	defer cancel()
	var b client.Block
	if conn.shm {
		s, err := c.Attach(ctx, "kvtier get")
		if err != nil {
			return fail(stderr, "get", err)
		}
		b, err = s.Get(ctx, key, nil, client.GetOptions{})
		if cerr := s.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			return fail(stderr, "get", err)
		}
	} else if b, err = c.Get(ctx, key, nil, client.GetOptions{}); err != nil {
		return fail(stderr, "get", err)
	}
	if *out == "" {
		if _, err := stdout.Write(b.Data); err != nil {
			return fail(stderr, "get", err)
		}
		return 0
	}
	if err := os.WriteFile(*out, b.Data, 0o644); err != nil {
		return fail(stderr, "get", err)
	}
	return 0
}

func runLookup(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lookup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var conn connFlags
	conn.register(fs, false)
	ns := fs.String("ns", "", "namespace (required)")
	hashes := fs.String("hashes", "", "the chain's block hashes in order, hex, comma-separated (required)")
	layer := fs.Int("layer", -1, "layer, or -1 for blocks holding every layer")
	fs.Usage = cmdUsage(fs, "lookup --ns NS --hashes HEX,HEX,... [--layer L]\n\nPrints the number of leading blocks cached, then one line per cached block: HASH TIER.")
	if code, ok := parseClientFlags(fs, args, stdout, 0); !ok {
		return code
	}
	if *ns == "" {
		return fail(stderr, "lookup", usagef("--ns is required"))
	}
	if *hashes == "" {
		return fail(stderr, "lookup", usagef("--hashes is required"))
	}
	if err := tiers.ValidateLayer(*layer); err != nil {
		return fail(stderr, "lookup", usagef("--layer: %v", err))
	}
	var hs [][]byte
	var hexes []string
	for i, s := range strings.Split(*hashes, ",") {
		h, err := parseHexHash(fmt.Sprintf("--hashes[%d]", i), s)
		if err != nil {
			return fail(stderr, "lookup", err)
		}
		hs = append(hs, h)
		hexes = append(hexes, hex.EncodeToString(h))
	}
	c, err := conn.dial()
	if err != nil {
		return fail(stderr, "lookup", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), conn.timeout)
	defer cancel()
	resp, err := c.LookupHashes(ctx, *ns, int32(*layer), hs)
	if err != nil {
		return fail(stderr, "lookup", err)
	}
	fmt.Fprintln(stdout, resp.GetCachedBlocks())
	for i, t := range resp.GetTiers() {
		if i < len(hexes) {
			fmt.Fprintf(stdout, "%s %s\n", hexes[i], tierName(t))
		}
	}
	return 0
}

// statsJSON is the shape of `kvtier stats --json`: scripts depend on it.
type statsJSON struct {
	Tiers            []tierJSON `json:"tiers"`
	IndexedBlocks    uint64     `json:"indexed_blocks"`
	PinnedBlocks     uint64     `json:"pinned_blocks"`
	Misses           uint64     `json:"misses"`
	Corrupt          uint64     `json:"corrupt"`
	Demotions        uint64     `json:"demotions"`
	WriteBehindQueue uint64     `json:"write_behind_queue"`
	Sessions         uint32     `json:"shm_sessions"`
	Leases           uint32     `json:"shm_leases"`
	GPUs             []gpuJSON  `json:"gpus"`
	GPUTelemetryErr  string     `json:"gpu_telemetry_error,omitempty"`
}

type tierJSON struct {
	Tier          string `json:"tier"`
	Name          string `json:"name"`
	CapacityBytes uint64 `json:"capacity_bytes"`
	UsedBytes     uint64 `json:"used_bytes"`
	LogicalBytes  uint64 `json:"logical_bytes"` // decoded; more than used_bytes where frames are stored
	ReservedBytes uint64 `json:"reserved_bytes"`
	Blocks        uint64 `json:"blocks"`
	Hits          uint64 `json:"hits"`
	Evictions     uint64 `json:"evictions"`
	Promotions    uint64 `json:"promotions"`
	Corrupt       uint64 `json:"corrupt"`
	WritesStopped bool   `json:"writes_stopped"` // out of disk space: puts to this tier refused until space returns
	FreeBytes     uint64 `json:"free_bytes"`     // free space of the tier's file system (0: not measured)
	Quarantined   uint64 `json:"quarantined"`    // damaged stores set aside at start
}

func runStats(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var conn connFlags
	conn.register(fs, false)
	asJSON := fs.Bool("json", false, "print one JSON object")
	fs.Usage = cmdUsage(fs, "stats [--json]")
	if code, ok := parseClientFlags(fs, args, stdout, 0); !ok {
		return code
	}
	c, err := conn.dial()
	if err != nil {
		return fail(stderr, "stats", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), conn.timeout)
	defer cancel()
	st, err := c.Stats(ctx)
	if err != nil {
		return fail(stderr, "stats", err)
	}
	out := statsJSON{
		Tiers:         []tierJSON{},
		IndexedBlocks: st.GetIndexedBlocks(), PinnedBlocks: st.GetPinnedBlocks(), Misses: st.GetMisses(),
		Corrupt: st.GetCorrupt(), Demotions: st.GetDemotions(), WriteBehindQueue: st.GetWriteBehindQueue(),
		Sessions: st.GetSessions(), Leases: st.GetLeases(),
		GPUs: gpusFromProto(st.GetGpus()), GPUTelemetryErr: st.GetGpuTelemetryError(),
	}
	for _, t := range st.GetTiers() {
		out.Tiers = append(out.Tiers, tierJSON{
			Tier: tierName(t.GetTier()), Name: t.GetName(), CapacityBytes: t.GetCapacityBytes(),
			UsedBytes: t.GetUsedBytes(), LogicalBytes: t.GetLogicalBytes(), ReservedBytes: t.GetReservedBytes(), Blocks: t.GetBlocks(),
			Hits: t.GetHits(), Evictions: t.GetEvictions(), Promotions: t.GetPromotions(), Corrupt: t.GetCorrupt(),
			WritesStopped: t.GetWritesStopped(), FreeBytes: t.GetFreeBytes(), Quarantined: t.GetQuarantined(),
		})
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(out); err != nil {
			return fail(stderr, "stats", err)
		}
		return 0
	}
	fmt.Fprintf(stdout, "%-6s %-10s %14s %14s %14s %10s %10s %10s %10s\n", "TIER", "NAME", "CAPACITY", "USED", "DECODED", "BLOCKS", "HITS", "EVICTIONS", "PROMOTIONS")
	for _, t := range out.Tiers {
		fmt.Fprintf(stdout, "%-6s %-10s %14d %14d %14d %10d %10d %10d %10d\n", t.Tier, t.Name, t.CapacityBytes, t.UsedBytes, t.LogicalBytes, t.Blocks, t.Hits, t.Evictions, t.Promotions)
	}
	printTierHealth(stdout, out.Tiers)
	fmt.Fprintf(stdout, "indexed blocks %d, pinned %d, misses %d, corrupt %d, demotions %d, write-behind queue %d, shm sessions %d, leases %d\n",
		out.IndexedBlocks, out.PinnedBlocks, out.Misses, out.Corrupt, out.Demotions, out.WriteBehindQueue, out.Sessions, out.Leases)
	writeGPUs(stdout, out.GPUs, out.GPUTelemetryErr)
	return 0
}
