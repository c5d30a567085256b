package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/kvtier/kvtier/benchmarks/gpulink"
	"github.com/kvtier/kvtier/benchmarks/host"
	"github.com/kvtier/kvtier/benchmarks/load"
	"github.com/kvtier/kvtier/benchmarks/progress"
	"github.com/kvtier/kvtier/benchmarks/report"
	"github.com/kvtier/kvtier/client"
)

func init() {
	registerBench("load", "load a daemon with an MLPerf-style scenario, optionally against Redis", runBenchLoad)
}

// optionalAddr is --vs-redis: alone it means "start redis-server",
// --vs-redis=ADDR uses a running Redis.
type optionalAddr struct {
	set  bool
	addr string
}

func (o *optionalAddr) String() string   { return o.addr }
func (o *optionalAddr) IsBoolFlag() bool { return true }
func (o *optionalAddr) Set(s string) error {
	switch s {
	case "true":
		o.set, o.addr = true, ""
	case "false":
		o.set, o.addr = false, ""
	default:
		o.set, o.addr = true, s
	}
	return nil
}

func runBenchLoad(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kvtier bench load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "`PATH` of a running daemon's Unix socket (default: start `kvtier serve` with its defaults in a temporary directory)")
	addr := fs.String("addr", "", "`HOST:PORT` of a running daemon (inline plane only)")
	insecure := fs.Bool("insecure", false, "with --addr: no TLS")
	token := fs.String("token", "", "bearer `TOKEN` for the daemon")
	plane := fs.String("plane", "both", "data `PLANE`: shm, inline or both")
	mixS := fs.String("mix", "get=1", "operation `MIX`, e.g. get=0.8,put=0.1,lookup=0.1")
	blockS := fs.String("block-bytes", "64KiB", "block `SIZE` (a multiple of 512)")
	nkeys := fs.Int("keys", 1024, "key `COUNT` stored before the run")
	hit := fs.Float64("hit-ratio", 1, "share of gets that ask for a stored key")
	seed := fs.Uint64("seed", 1, "workload `SEED` (same seed, same operations)")
	scenario := fs.String("scenario", load.Sweep, "`SCENARIO`: single-stream, server, offline or sweep")
	qps := fs.Float64("qps", 0, "server scenario: Poisson arrival `RATE` per second")
	findMax := fs.Bool("find-max", false, "server scenario: search the highest rate whose p99 stays within --sla-p99")
	sla := fs.Float64("sla-p99", 2, "p99 latency bound of --find-max in `MS`")
	conc := fs.Int("concurrency", 32, "connections serving the server and offline scenarios")
	var levelsL listFlag
	fs.Var(&levelsL, "levels", "sweep concurrency `LEVELS` (default 1,4,8,16,32,64)")
	dur := fs.Duration("duration", 2*time.Second, "wall `TIME` of each level or search probe")
	iters := fs.Int("iterations", 0, "operations per level instead of --duration")
	var vsRedis optionalAddr
	fs.Var(&vsRedis, "vs-redis", "also run the workload against Redis: alone, a redis-server started here; --vs-redis=`ADDR` (socket path or host:port) a running one")
	asJSON := fs.Bool("json", false, "print one JSON array on stdout instead of the table")
	plotFile := fs.String("plot", "", "also draw the throughput-latency curve into `FILE` (.png or .svg)")
	note := fs.String("note", "", "a `NOTE` on the host to keep with every row (e.g. \"shared machine\")")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: kvtier bench load [--socket PATH | --addr HOST:PORT] [--scenario sweep|single-stream|server|offline] [--vs-redis[=ADDR]] [--json] [--plot FILE.png]")
		fs.PrintDefaults()
	}
	if code, ok := parseBenchFlags(fs, args, stderr); !ok {
		return code
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "kvtier bench load: "+format+"\n", a...)
		return code
	}
	mix, err := load.ParseMix(*mixS)
	if err != nil {
		return fail(2, "--mix: %v", err)
	}
	block, err := gpulink.ParseSize(*blockS)
	if err != nil || block > 1<<30 {
		return fail(2, "--block-bytes %q: want a size up to 1GiB", *blockS)
	}
	w, err := load.NewWorkload(mix, int(block), *nkeys, *hit, *seed)
	if err != nil {
		return fail(2, "%v", err)
	}
	cfg := load.Config{Scenario: *scenario, QPS: *qps, FindMax: *findMax, SLAP99: time.Duration(*sla * float64(time.Millisecond)),
		Concurrency: *conc, Duration: *dur, Iterations: *iters}
	for _, l := range levelsL {
		n, err := strconv.Atoi(l)
		if err != nil {
			return fail(2, "--levels: %q is not a number", l)
		}
		cfg.Levels = append(cfg.Levels, n)
	}
	if *findMax && *scenario != load.Server {
		return fail(2, "--find-max needs --scenario server")
	}
	if *dur <= 0 || *iters < 0 || *sla <= 0 {
		return fail(2, "--duration and --sla-p99 must be positive, --iterations not negative")
	}
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return fail(2, "%v", err)
	}
	if *socket != "" && *addr != "" {
		return fail(2, "give --socket or --addr, not both")
	}
	planes := map[string][]string{"shm": {load.KvtierShm}, "inline": {load.KvtierInline}, "both": {load.KvtierShm, load.KvtierInline}}[*plane]
	if planes == nil {
		return fail(2, "--plane %q: want shm, inline or both", *plane)
	}
	if *addr != "" && *plane != "inline" {
		return fail(2, "--addr reaches the inline plane only: add --plane inline (shared memory needs the Unix socket)")
	}

	target := ""
	switch {
	case *addr != "":
		target = *addr
	case *socket != "":
		target = client.UnixTarget(*socket)
	default:
		self, err := os.Executable()
		if err != nil {
			return fail(1, "finding the kvtier binary to start: %v", err)
		}
		d, err := load.StartDaemon(ctx, self)
		if err != nil {
			return fail(1, "%v", err)
		}
		defer d.Close()
		fmt.Fprintf(stderr, "kvtier bench load: started kvtier serve (pid %d) on %s\n", d.Pid(), d.Socket)
		target = client.UnixTarget(d.Socket)
	}
	var opts []client.Option
	if *insecure {
		opts = append(opts, client.WithInsecure())
	}
	if *token != "" {
		opts = append(opts, client.WithToken(*token))
	}
	var targets []load.Target
	for _, p := range planes {
		targets = append(targets, load.Target{Name: p, Dial: load.KvtierDialer(target, p == load.KvtierShm, w, opts...)})
	}
	if vsRedis.set {
		raddr := vsRedis.addr
		if raddr == "" {
			r, err := load.StartRedis(ctx)
			switch {
			case errors.Is(err, load.ErrNoRedis):
				fmt.Fprintf(stderr, "kvtier bench load: skipping Redis: %v\n", err)
			case err != nil:
				return fail(1, "%v", err)
			default:
				defer r.Close()
				fmt.Fprintf(stderr, "kvtier bench load: started redis-server (pid %d) on %s\n", r.Pid(), r.Socket)
				raddr = r.Socket
			}
		}
		if raddr != "" {
			targets = append(targets, load.Target{Name: load.Redis, Dial: load.RedisDialer(raddr, w)})
		}
	}
	for _, t := range targets {
		if err := w.Load(ctx, t.Dial); err != nil {
			return fail(1, "storing the workload's blocks in %s: %v", t.Name, err)
		}
	}
	h := host.Describe("")
	h.Note = *note
	cfg.Host = &h
	bar := progress.New(stderr, "bench load")
	rows, err := load.Run(ctx, cfg, w, targets, bar.Set, stderr)
	code := report.Outcome(ctx, bar, stderr, "kvtier bench load", len(rows), err)
	if *asJSON {
		err = report.JSON(stdout, rows)
	} else {
		err = load.WriteTable(stdout, rows, &h)
	}
	if err != nil {
		return fail(1, "%v", err)
	}
	if *plotFile != "" && len(rows) > 0 {
		title := fmt.Sprintf("kvtier bench load: %s, %s blocks, %s", cfg.Scenario, gpulink.FormatSize(block), mix)
		if err := load.Plot(*plotFile, rows, title); err != nil {
			return fail(1, "--plot: %v", err)
		}
	}
	return code
}
