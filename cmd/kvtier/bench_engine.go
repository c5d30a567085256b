package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/kvtier/kvtier/benchmarks/engine"
)

func init() {
	registerBench("engine", "serve a prefix-sharing workload with the reference engine, with kvtier and recompute", runBenchEngine)
}

func runBenchEngine(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kvtier bench engine", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenario := fs.String("scenario", "single-stream", "single-stream, server or offline (MLPerf inference scenarios)")
	workload := fs.String("workload", "multi-round-chat", "multi-round-chat or long-doc-qa")
	qps := fs.Float64("qps", 0, "server: Poisson arrival rate (0: find the highest rate meeting --sla-ttft)")
	sla := fs.Float64("sla-ttft", 500, "server: p99 TTFT target in ms")
	requests := fs.Int("requests", 24, "requests to serve")
	gen := fs.Int("gen", 16, "tokens generated per request")
	var texts listFlag
	fs.Var(&texts, "text", "text `FILE`s the prompts come from (default: the held-out evaluation files under GOROOT)")
	socket := fs.String("socket", "", "daemon socket (default: start a daemon in this process)")
	inline := fs.Bool("inline", false, "move blocks inline instead of through shared memory")
	seed := fs.Uint64("seed", 1, "seed of the server scenario's arrivals")
	asJSON := fs.Bool("json", false, "print a JSON array of rows")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usage := func(err error) int { fmt.Fprintln(stderr, "kvtier bench engine:", err); return 2 }
	fail := func(err error) int { fmt.Fprintln(stderr, "kvtier bench engine:", err); return 1 }
	if fs.NArg() > 0 {
		return usage(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	switch *scenario {
	case "single-stream", "server", "offline":
	default:
		return usage(fmt.Errorf("scenario %q (single-stream, server, offline)", *scenario))
	}
	files := []string(texts)
	if len(files) == 0 {
		files = engine.EvalFiles(runtime.GOROOT())
	}
	raw, err := engine.Windows(files, 512, 8, 1)
	if err != nil {
		return fail(err)
	}
	reqs, err := engine.Workload(*workload, raw, *requests, *gen)
	if err != nil {
		return usage(err)
	}
	m, err := engine.Tiny()
	if err != nil {
		return fail(err)
	}
	conn, err := dialEngine(ctx, *socket, *inline, "kvtier-bench-engine")
	if err != nil {
		return fail(err)
	}
	defer conn.close()
	c, blocks := conn.c, conn.blocks
	var rows []engine.EngineRow
	for _, cache := range []string{"kvtier", "recompute"} {
		var kc *engine.KVCache
		if cache == "kvtier" {
			kc = engine.NewKVCache(m, c, blocks, fmt.Sprintf("bench-engine-%x", time.Now().UnixNano()), nil)
		}
		fmt.Fprintf(stderr, "serving %d %s requests, cache %s\n", len(reqs), *workload, cache)
		sv, err := m.Serve(ctx, kc, reqs)
		if err != nil {
			return fail(err)
		}
		var row engine.EngineRow
		if *scenario == "server" && *qps == 0 {
			row, err = engine.MaxQPS(sv, time.Duration(*sla*float64(time.Millisecond)), *seed)
		} else {
			row, err = engine.Summarize(*scenario, sv, *qps, *seed)
		}
		if err != nil {
			return fail(err)
		}
		row.Workload, row.Cache = *workload, cache
		rows = append(rows, row)
	}
	if *asJSON {
		if err := writeJSON(stdout, rows); err != nil {
			return fail(err)
		}
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tworkload\tcache\tqps\tTTFT p50 ms\tp90\tp99\tTPOT p50 ms\tp99\ttokens/s\tprefix hit\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\t%.1f\t%.3f\t\n", r.Scenario, r.Workload, r.Cache, r.QPS,
			r.TTFTp50, r.TTFTp90, r.TTFTp99, r.TPOTp50, r.TPOTp99, r.TokensPerS, r.HitRate)
	}
	if err := tw.Flush(); err != nil {
		return fail(err)
	}
	fmt.Fprintln(stdout, "service times measured on this machine (one engine, one request at a time); server and offline queueing replayed FIFO from them")
	return 0
}
