package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kvtier/kvtier/benchmarks/engine"
)

func init() {
	registerBench("decode", "decode a real model through kvtier: offload overhead and quality", runBenchDecode)
}

func runBenchDecode(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kvtier bench decode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	model := fs.String("model", "tiny", "model: tiny (decoded here) or a preset modelled on --gpu: "+strings.Join(engine.PresetNames(), ", "))
	gpu := fs.String("gpu", "h100", "GPU profile for presets: h100, h200, a100, mi300x")
	hbmGBps := fs.Float64("hbm-gbps", 0, "presets: HBM bandwidth in GB/s (default: the profile's)")
	tflops := fs.Float64("tflops", 0, "presets: peak TFLOP/s (default: the profile's)")
	linkGBps := fs.Float64("link-gbps", 0, "presets: host link GB/s (default: the profile's)")
	mode := fs.String("mode", "sparse", "decode mode: full (every block read, non-resident ones fetched) or sparse (resident set only)")
	policy := fs.String("policy", "scores", "sparse mode's block policy: lru, scores, queries, scores+queries (the prefetcher's) or oracle")
	budget := fs.Float64("budget", 0.2, "fraction of a request's blocks resident in the engine, (0, 1]")
	codecSpec := fs.String("codec", "none", "codec applied to blocks stored in kvtier: none, lossless, int8, int4, int3, int2 (with +ec, +clip, ...)")
	ctxLen := fs.Int("context", 256, "tokens per window (the first half prefilled, the rest decoded); quality is meaningful up to 256")
	nWin := fs.Int("windows", 16, "number of windows (each from a different file, starting at a line \"func \")")
	var texts listFlag
	var sweeps rawListFlag
	fs.Var(&texts, "text", "text `FILE`s to decode (default: the held-out evaluation files under GOROOT)")
	fs.Var(&sweeps, "sweep", "sweep `AXIS=V1,V2` over budget, policy, codec or mode (repeatable; repeatable)")
	socket := fs.String("socket", "", "daemon socket (default: start a daemon in this process)")
	inline := fs.Bool("inline", false, "move blocks inline in gRPC messages instead of shared memory")
	asJSON := fs.Bool("json", false, "print a JSON array of rows")
	plotFile := fs.String("plot", "", "write an SVG `FILE`: overhead and cross-entropy increase against budget per policy")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usage := func(err error) int { fmt.Fprintln(stderr, "kvtier bench decode:", err); return 2 }
	fail := func(err error) int { fmt.Fprintln(stderr, "kvtier bench decode:", err); return 1 }
	if fs.NArg() > 0 {
		return usage(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if *model != "tiny" {
		shape, ok := engine.Presets[*model]
		g, gok := engine.GPUs[*gpu]
		if !ok || !gok {
			return usage(fmt.Errorf("model %q / gpu %q: unknown (models: %s)", *model, *gpu, strings.Join(engine.PresetNames(), ", ")))
		}
		if *hbmGBps > 0 {
			g.HBMBps = *hbmGBps * 1e9
		}
		if *tflops > 0 {
			g.FLOPS = *tflops * 1e12
		}
		if *linkGBps > 0 {
			g.LinkBps = *linkGBps * 1e9
		}
		return runModelledDecode(ctx, shape, g, *ctxLen, *budget, sweeps, *socket, *inline, *asJSON, stdout, stderr)
	}
	if *ctxLen < 2*engine.BlockTokens || *ctxLen > 512 || *ctxLen%(2*engine.BlockTokens) != 0 {
		return usage(fmt.Errorf("context %d: want a multiple of %d in [32, 512]", *ctxLen, 2*engine.BlockTokens))
	}
	// The grid: every combination of the swept values.
	grid := []map[string]string{{"budget": strconv.FormatFloat(*budget, 'g', -1, 64), "policy": *policy, "codec": *codecSpec, "mode": *mode}}
	for _, sw := range sweeps {
		axis, vals, ok := strings.Cut(sw, "=")
		if !ok || (axis != "budget" && axis != "policy" && axis != "codec" && axis != "mode") {
			return usage(fmt.Errorf("sweep %q: want budget=, policy=, codec= or mode=", sw))
		}
		var next []map[string]string
		for _, g := range grid {
			for _, v := range strings.FieldsFunc(vals, func(r rune) bool { return r == ':' || r == ',' }) {
				n := map[string]string{}
				for k, x := range g {
					n[k] = x
				}
				n[axis] = v
				next = append(next, n)
			}
		}
		grid = next
	}
	m, err := engine.Tiny()
	if err != nil {
		return fail(err)
	}
	files := []string(texts)
	if len(files) == 0 {
		files = engine.EvalFiles(runtime.GOROOT())
	}
	raw, err := engine.Windows(files, *ctxLen, *nWin, 1)
	if err != nil {
		return fail(err)
	}
	var windows [][]int
	for _, w := range raw {
		windows = append(windows, engine.Tokens(w))
	}
	if len(windows) < *nWin {
		fmt.Fprintf(stderr, "kvtier bench decode: only %d windows found\n", len(windows))
	}
	conn, err := dialEngine(ctx, *socket, *inline, "kvtier-bench-decode")
	if err != nil {
		return fail(err)
	}
	defer conn.close()
	c, blocks, plane := conn.c, conn.blocks, conn.plane
	run := fmt.Sprintf("%x", time.Now().UnixNano())
	var rows []engine.DecodeRow
	for i, g := range grid {
		b, err := strconv.ParseFloat(g["budget"], 64)
		if err != nil {
			return usage(fmt.Errorf("budget %q: %w", g["budget"], err))
		}
		cd, err := engine.ParseCodec(g["codec"])
		if err != nil {
			return usage(err)
		}
		var pol engine.Policy
		if g["mode"] == "sparse" {
			if pol, err = engine.NewPolicy(g["policy"], m); err != nil {
				return usage(err)
			}
		}
		// A namespace per configuration: blocks of one codec never answer another's lookups.
		kc := engine.NewKVCache(m, c, blocks, fmt.Sprintf("bench-decode-%s-%d", run, i), cd)
		fmt.Fprintf(stderr, "[%d/%d] mode=%s policy=%s budget=%g codec=%s, %d windows of %d tokens\n",
			i+1, len(grid), g["mode"], g["policy"], b, cd.Name, len(windows), *ctxLen)
		row, err := kc.RunDecode(ctx, windows, engine.DecodeOptions{Mode: g["mode"], Policy: pol, Budget: b, Prefill: *ctxLen / 2,
			Progress: func(done, total int) { fmt.Fprintf(stderr, "\r  window %d/%d", done, total) }})
		fmt.Fprintln(stderr)
		if err != nil {
			if errors.Is(err, engine.ErrInput) {
				return usage(err)
			}
			return fail(err)
		}
		row.Plane = plane
		rows = append(rows, row)
	}
	if *plotFile != "" {
		if err := plotDecode(*plotFile, rows); err != nil {
			return fail(err)
		}
	}
	if *asJSON {
		if err := writeJSON(stdout, rows); err != nil {
			return fail(err)
		}
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tpolicy\tbudget\tcodec\tratio\tTPOT res ms\tTPOT ms\toverhead %\tp50 ovh %\tstall ms\tB/token\thit\tnll res\tnll\tΔnll %\tagree\tfetch GB/s\tcopy GB/s\tfetch/copy\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%g\t%s\t%.2f\t%.3f\t%.3f\t%.1f\t%.1f\t%.3f\t%.0f\t%.3f\t%.4f\t%.4f\t%+.2f\t%.4f\t%.3f\t%.2f\t%.1f\t\n",
			r.Mode, r.Policy, r.Budget, r.Codec, r.CodecRatio, r.TPOTMsResident, r.TPOTMs, r.OverheadPct, r.OverheadPctP50, r.StallMs,
			r.BytesPerToken, r.HitRate, r.NLLResident, r.NLL, r.NLLIncreasePct, r.Agreement, r.FetchGBps, r.CopyGBps, r.FetchVsCopy)
	}
	if err := tw.Flush(); err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "model %s, %d windows of %d tokens (%d prefilled, %d decoded teacher-forced), %s plane; all figures measured;\n",
		*model, len(windows), *ctxLen, *ctxLen/2, *ctxLen/2, plane)
	fmt.Fprintln(stdout, "nll: cross-entropy in nats/byte over the decoded positions (perplexity = e^nll); TPOT res: the all-resident engine in lockstep")
	return 0
}

// rawListFlag collects repeated values without splitting them.
type rawListFlag []string

func (l *rawListFlag) String() string     { return strings.Join(*l, " ") }
func (l *rawListFlag) Set(s string) error { *l = append(*l, s); return nil }

// runModelledDecode prints full-mode estimates for a preset: the roofline
// for the GPU, the host read measured through kvtier with the preset's
// block size, the PCIe copy at the profile's link speed.
func runModelledDecode(ctx context.Context, shape engine.Shape, g engine.GPU, ctxLen int, budget float64, sweeps []string,
	socket string, inline, asJSON bool, stdout, stderr io.Writer) int {
	budgets := []float64{budget}
	for _, sw := range sweeps {
		axis, vals, _ := strings.Cut(sw, "=")
		if axis != "budget" {
			fmt.Fprintf(stderr, "kvtier bench decode: presets sweep budget only, not %q\n", axis)
			return 2
		}
		budgets = budgets[:0]
		for _, v := range strings.Split(vals, ",") {
			b, err := strconv.ParseFloat(v, 64)
			if err != nil {
				fmt.Fprintf(stderr, "kvtier bench decode: budget %q: %v\n", v, err)
				return 2
			}
			budgets = append(budgets, b)
		}
	}
	conn, err := dialEngine(ctx, socket, inline, "kvtier-bench-decode-modelled")
	if err != nil {
		fmt.Fprintln(stderr, "kvtier bench decode:", err)
		return 1
	}
	defer conn.close()
	host, size, err := engine.MeasureHost(ctx, conn.blocks, fmt.Sprintf("bench-host-%x", time.Now().UnixNano()), shape, 64, 50)
	if err != nil {
		fmt.Fprintln(stderr, "kvtier bench decode:", err)
		return 1
	}
	var rows []engine.ModelledRow
	for _, b := range budgets {
		r, err := engine.ModelDecode(shape, g, ctxLen, b, host, size)
		if err != nil {
			fmt.Fprintln(stderr, "kvtier bench decode:", err)
			return 2
		}
		rows = append(rows, r)
	}
	if asJSON {
		if err := writeJSON(stdout, rows); err != nil {
			return 1
		}
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "model\tgpu\tmode\tbudget\tcontext\tTPOT res ms\tTPOT ms\toverhead %\tstall ms\tMB/token\thost GB/s\tlink GB/s\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%g\t%d\t%.2f\t%.2f\t%.0f\t%.2f\t%.1f\t%.2f\t%.1f\t\n", r.Model, r.GPU, r.Mode, r.Budget, r.Context,
			r.TPOTMsResident, r.TPOTMs, r.OverheadPct, r.StallMs, r.BytesPerToken/1e6, r.HostGBps, r.LinkGBps)
	}
	if err := tw.Flush(); err != nil {
		return 1
	}
	fmt.Fprintf(stdout, "modelled: TPOT (roofline: weights + KV over HBM bandwidth vs 2 FLOPs/parameter), the PCIe copy at the link speed;\n"+
		"measured: host GB/s, batched gets of %d-byte blocks (%s plane) from kvtier's DRAM tier on this machine\n", size, conn.plane)
	return 0
}
