package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/kvtier/kvtier/benchmarks/gpulink"
	"github.com/kvtier/kvtier/benchmarks/host"
	"github.com/kvtier/kvtier/benchmarks/progress"
	"github.com/kvtier/kvtier/benchmarks/report"
	"github.com/kvtier/kvtier/benchmarks/tierbench"
)

func init() {
	registerBench("tiers", "bandwidth and latency of every tier next to memcpy, raw disk and the link maximum", runBenchTiers)
}

// parseBenchFlags parses a benchmark's flags, which take no positional
// arguments. When it returns ok false, the command exits with code (0 for
// -h, else 2).
func parseBenchFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2, false
	}
	return 0, true
}

// parseSizes parses --sizes 64KiB,1MiB.
func parseSizes(list listFlag) ([]int, error) {
	var out []int
	for _, s := range list {
		n, err := gpulink.ParseSize(s)
		if err != nil {
			return nil, err
		}
		out = append(out, int(n))
	}
	return out, nil
}

func runBenchTiers(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kvtier bench tiers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var tiersL, sizesL, opsL, ordersL listFlag
	fs.Var(&tiersL, "tiers", "`TIERS` to measure: dram, nvme, promote (NVMe→DRAM through the codec), gpu (default all; gpu is skipped without one)")
	var codecsL listFlag
	fs.Var(&codecsL, "codec", "NVMe frame `MODES` of the promote rows: raw, lossless, int8, int4, int3, int2 (default lossless)")
	fs.Var(&sizesL, "sizes", "block `SIZES` (default 64KiB,256KiB,1MiB,4MiB)")
	fs.Var(&opsL, "ops", "`OPS`: write, read (default both)")
	fs.Var(&ordersL, "orders", "read `ORDERS`: seq, random (default both; writes run in one order)")
	par := fs.Int("parallel", 4, "the parallel `LEVEL` measured besides queue depth 1 (1: only 1)")
	dur := fs.Duration("duration", time.Second, "wall `TIME` of each cell, tier and reference together")
	iters := fs.Int("iterations", 0, "operations per side and cell instead of --duration (0: use --duration)")
	dir := fs.String("dir", os.TempDir(), "`DIR` for the NVMe tier and its raw O_DIRECT reference (on the disk to measure; not tmpfs)")
	dramBytes := fs.String("dram-bytes", "256MiB", "DRAM arena `SIZE` (and its reference's)")
	setBytes := fs.String("nvme-set-bytes", "1GiB", "data `SIZE` the NVMe reads cycle through")
	asJSON := fs.Bool("json", false, "print one JSON array on stdout instead of the table")
	plotFile := fs.String("plot", "", "also draw a bar chart into `FILE` (.png or .svg)")
	note := fs.String("note", "", "a `NOTE` on the host to keep with every row (e.g. \"shared machine\")")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: kvtier bench tiers [--tiers dram,nvme,gpu] [--sizes 64KiB,...] [--json] [--plot FILE.png]")
		fs.PrintDefaults()
	}
	if code, ok := parseBenchFlags(fs, args, stderr); !ok {
		return code
	}
	cfg := tierbench.Config{Tiers: tiersL, Codecs: codecsL, Ops: opsL, Orders: ordersL, Parallel: *par,
		Duration: *dur, Iterations: *iters, Dir: *dir}
	var err error
	if cfg.Sizes, err = parseSizes(sizesL); err != nil {
		fmt.Fprintf(stderr, "kvtier bench tiers: --sizes: %v\n", err)
		return 2
	}
	if cfg.DRAMBytes, err = gpulink.ParseSize(*dramBytes); err != nil {
		fmt.Fprintf(stderr, "kvtier bench tiers: --dram-bytes: %v\n", err)
		return 2
	}
	if cfg.NVMeSetBytes, err = gpulink.ParseSize(*setBytes); err != nil {
		fmt.Fprintf(stderr, "kvtier bench tiers: --nvme-set-bytes: %v\n", err)
		return 2
	}
	if *dur <= 0 || *iters < 0 {
		fmt.Fprintln(stderr, "kvtier bench tiers: --duration must be positive and --iterations not negative")
		return 2
	}
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "kvtier bench tiers: %v\n", err)
		return 2
	}
	h := host.Describe(*dir)
	h.Note = *note
	cfg.Host = &h
	bar := progress.New(stderr, "bench tiers")
	rows, err := tierbench.Run(ctx, cfg, bar.Set, stderr)
	code := report.Outcome(ctx, bar, stderr, "kvtier bench tiers", len(rows), err)
	if *asJSON {
		err = report.JSON(stdout, rows)
	} else {
		err = tierbench.WriteTable(stdout, rows, &h)
	}
	if err != nil {
		fmt.Fprintf(stderr, "kvtier bench tiers: %v\n", err)
		return 1
	}
	if *plotFile != "" && len(rows) > 0 {
		if err := tierbench.Plot(*plotFile, rows, "kvtier bench tiers: tier vs reference, queue depth 1"); err != nil {
			fmt.Fprintf(stderr, "kvtier bench tiers: --plot: %v\n", err)
			return 1
		}
	}
	return code
}
