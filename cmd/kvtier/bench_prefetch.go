package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	pfbench "github.com/kvtier/kvtier/benchmarks/prefetch"
	"github.com/kvtier/kvtier/benchmarks/report"
	"github.com/kvtier/kvtier/prefetch"
)

func init() {
	registerBench("prefetch", "attention-mass recall, hit rate and bytes moved per prefetch policy", runBenchPrefetch)
}

func runBenchPrefetch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kvtier bench prefetch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var traces, policies listFlag
	fs.Var(&traces, "trace", "attention trace `FILE` (a KV dump kv-pNN.bin with its .json sidecar); repeat or comma-separate. Required")
	fs.Var(&policies, "policies", "comma-separated `POLICIES` (default "+strings.Join(pfbench.AllPolicies, ",")+")")
	budget := fs.Float64("budget", 0.2, "fast-tier room per layer as a `FRACTION` of the request's blocks")
	sweep := fs.String("sweep", "", "`budget=B1,B2,...` replays at each budget instead of --budget")
	blockTokens := fs.Int("block-tokens", 16, "`TOKENS` per block")
	asJSON := fs.Bool("json", false, "print one JSON array (an object per trace, policy and budget)")
	plotPath := fs.String("plot", "", "draw recall against budget per policy to `FILE` (.png, .svg, .pdf)")
	decay := fs.Float64("decay", 0.3, "importance kept per decode step by the reported-mass policies")
	sink := fs.Int("sink", 1, "leading `BLOCKS` always resident (0: none)")
	recent := fs.Int("recent", 1, "trailing `BLOCKS` always resident (0: none)")
	combine := fs.String("combine", "mass", "how query heads of a group combine: mass or sum")
	layerTime := fs.Duration("layer-time", 0, "deadline for a layer's moves (0: none); later moves are dropped and counted late")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: kvtier bench prefetch --trace FILE... [--budget 0.2] [--block-tokens 16] [--json] [--plot FILE.png] [--sweep budget=0.1,...]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "kvtier bench prefetch: "+format+"\n", a...)
		return code
	}
	if fs.NArg() > 0 {
		return fail(2, "unexpected argument %q", fs.Arg(0))
	}
	if len(traces) == 0 {
		return fail(2, "--trace is required")
	}
	budgets := []float64{*budget}
	if *sweep != "" {
		var err error
		if budgets, err = parseSweep(*sweep); err != nil {
			return fail(2, "--sweep: %v", err)
		}
	}
	opts := prefetch.Options{Decay: *decay, Sink: noneIfZero(*sink), Recent: noneIfZero(*recent)}
	switch *combine {
	case "mass":
		opts.Combine = prefetch.CombineMass
	case "sum":
		opts.Combine = prefetch.CombineSum
	default:
		return fail(2, "--combine %q: want mass or sum", *combine)
	}
	cfg := pfbench.Config{BlockTokens: *blockTokens, Policies: policies, LayerTime: *layerTime, Options: opts}
	rs, err := pfbench.Run(ctx, traces, budgets, cfg)
	if err != nil {
		code := 1
		if errors.Is(err, pfbench.ErrConfig) || errors.Is(err, prefetch.ErrInvalid) {
			code = 2
		}
		return fail(code, "%v", err)
	}
	if *asJSON {
		err = report.JSON(stdout, rs)
	} else {
		err = pfbench.WriteTable(stdout, rs)
		if err == nil && len(budgets) > 1 {
			for _, e := range pfbench.CompareAtEqualRecall(rs, pfbench.PolicyScores, pfbench.PolicyLRU) {
				fmt.Fprintf(stdout, "equal recall: scores at %.2f (recall %.3f) moves %d bytes; lru needs budget %.2f (recall %.3f) and moves %d bytes (%.2fx)\n",
					e.Budget, e.Recall, e.BytesMoved, e.BaseBudget, e.BaseRecall, e.BaseBytesMoved, float64(e.BytesMoved)/float64(max(e.BaseBytesMoved, 1)))
			}
		}
	}
	if err != nil {
		return fail(1, "%v", err)
	}
	if *plotPath != "" {
		if err := pfbench.Plot(*plotPath, rs); err != nil {
			return fail(1, "%v", err)
		}
	}
	return 0
}

// noneIfZero maps the command line's 0 (none) to the options' negative.
func noneIfZero(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// parseSweep parses "budget=0.1,0.2,...".
func parseSweep(s string) ([]float64, error) {
	name, list, ok := strings.Cut(s, "=")
	if !ok || name != "budget" {
		return nil, fmt.Errorf("%q: want budget=B1,B2,...", s)
	}
	var out []float64
	for _, v := range strings.Split(list, ",") {
		b, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(b > 0 && b <= 1) {
			return nil, fmt.Errorf("budget %q: want a fraction in (0, 1]", v)
		}
		out = append(out, b)
	}
	return out, nil
}
