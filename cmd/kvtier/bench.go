package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	codecbench "github.com/kvtier/kvtier/benchmarks/codec"
	"github.com/kvtier/kvtier/codec"
)

func init() { register("bench", "run a built-in benchmark (codec, tiers, load, prefetch)", runBench) }

// benchTargets are the `kvtier bench <name>` benchmarks. Each benchmark
// file adds itself with registerBench from its init.
var benchTargets = commandSet{prog: "kvtier bench", noun: "benchmark"}

// registerBench adds a benchmark; its run gets a context that an interrupt
// cancels, so a long benchmark stops cleanly on Ctrl-C.
func registerBench(name, summary string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) int) {
	benchTargets.add(name, summary, func(args []string, stdout, stderr io.Writer) int {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		return run(ctx, args, stdout, stderr)
	})
}

func init() { registerBench("codec", "codec ratio, error and throughput per mode", runBenchCodec) }

func runBench(args []string, stdout, stderr io.Writer) int {
	return benchTargets.run(args, stdout, stderr)
}

// listFlag collects repeated and comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

func runBenchCodec(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kvtier bench codec", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var inputs, modes listFlag
	fs.Var(&inputs, "input", "KV dump `FILE` (kv-pNN.bin with its .json sidecar); repeat or comma-separate. Default: synthetic KV")
	fs.Var(&modes, "modes", "comma-separated `MODES`, each a mode with optional +ec, +lz4, +clip, +uniform, +out, +out=F (default "+strings.Join(codecbench.DefaultSpecs, ",")+")")
	asJSON := fs.Bool("json", false, "print a JSON array (one object per mode and input) instead of the table")
	minTime := fs.Duration("time", 150*time.Millisecond, "minimum `duration` of each throughput measurement")
	diskDir := fs.String("disk-dir", os.TempDir(), "`DIR` for the O_DIRECT disk read reference (\"\" skips it)")
	diskMiB := fs.Int("disk-mib", 256, "size of the disk reference file in `MiB`")
	par := fs.Int("parallelism", 1, "goroutines per encode (throughput is still measured per core)")
	syn := codecbench.DefaultSynthetic
	shape := fs.String("synthetic", fmt.Sprintf("%dx%dx%dx%d", syn.Layers, syn.KVHeads, syn.Tokens, syn.HeadDim),
		"`LxHxTxD` shape of the synthetic block used without --input (layers, KV heads, tokens, head_dim)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: kvtier bench codec [--input FILE ...] [--modes int4,int8,...] [--json]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kvtier bench codec: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	for _, m := range modes {
		if _, err := codec.ParseSpec(m); err != nil {
			fmt.Fprintf(stderr, "kvtier bench codec: --modes: %v\n", err)
			return 2
		}
	}
	if *minTime <= 0 || *diskMiB <= 0 {
		fmt.Fprintln(stderr, "kvtier bench codec: --time and --disk-mib must be positive")
		return 2
	}
	var ins []codecbench.Input
	for _, p := range inputs {
		in, err := codecbench.LoadFixture(p)
		if err != nil {
			fmt.Fprintf(stderr, "kvtier bench codec: %v\n", err)
			return 1
		}
		ins = append(ins, in)
	}
	if len(ins) == 0 {
		if _, err := fmt.Sscanf(*shape, "%dx%dx%dx%d", &syn.Layers, &syn.KVHeads, &syn.Tokens, &syn.HeadDim); err != nil ||
			syn.Layers < 1 || syn.KVHeads < 1 || syn.Tokens < 1 || syn.HeadDim < 2 || syn.Layers > codec.MaxLayers ||
			syn.KVHeads > codec.MaxKVHeads || syn.Tokens > codec.MaxTokens || syn.HeadDim > codec.MaxHeadDim {
			fmt.Fprintf(stderr, "kvtier bench codec: --synthetic %q: want LxHxTxD within the layout limits\n", *shape)
			return 2
		}
		syn.QueryHeads = 4 * syn.KVHeads
		ins = append(ins, codecbench.Synthetic(syn))
	}
	cfg := codecbench.SuiteConfig{
		Config:   codecbench.Config{MinTime: *minTime, Parallelism: *par},
		Specs:    modes,
		DiskDir:  *diskDir,
		DiskSize: int64(*diskMiB) << 20,
	}
	rep, err := codecbench.Suite(ctx, ins, cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "kvtier bench codec: %v\n", err)
		return 1
	}
	if *asJSON {
		err = codecbench.WriteJSON(stdout, rep)
	} else {
		err = codecbench.WriteTable(stdout, rep)
	}
	if err != nil {
		fmt.Fprintf(stderr, "kvtier bench codec: %v\n", err)
		return 1
	}
	return 0
}
