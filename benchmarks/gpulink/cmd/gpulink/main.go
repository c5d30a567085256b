// Command gpulink measures a GPU's copy links and the HBM tier's Get
// latency, prints a table (or JSON) and checks the link target: pinned H2D
// and D2H at 1 MiB and 4 MiB blocks reach -min-ratio of the link maximum.
// `make gpu-check` runs it. Exit status: 0 measured (and, with -check, all
// targets met), 1 no GPU, a failure or a missed target, 2 usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/kvtier/kvtier/benchmarks/gpulink"
	"github.com/kvtier/kvtier/cgo/gpu"
	"github.com/kvtier/kvtier/cgo/nvmlinfo"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gpulink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		lib      = fs.String("lib", "", "GPU driver library to load (default: libcuda.so.1, then libamdhip64.so)")
		nvmlLib  = fs.String("nvml", "", "NVML library (default libnvidia-ml.so.1)")
		ordinal  = fs.Int("device", 0, "device ordinal")
		sizes    = fs.String("sizes", "64KiB,256KiB,1MiB,4MiB", "block sizes, comma separated")
		dirs     = fs.String("dirs", "h2d,d2h,d2d", "directions, comma separated")
		host     = fs.String("host", "pinned", "host memory: pinned, registered or pageable")
		iters    = fs.Int("iters", 200, "single copies timed per cell (latency)")
		bwBytes  = fs.String("bw-bytes", "1GiB", "bytes streamed per cell (bandwidth)")
		tierSize = fs.String("tier-size", "1MiB", "HBM tier block size for the Get latency")
		tierGets = fs.Int("tier-gets", 500, "HBM tier Gets timed (0: skip)")
		minRatio = fs.Float64("min-ratio", 0.8, "target: H2D and D2H bandwidth at 1 MiB and 4 MiB over the link maximum")
		check    = fs.Bool("check", false, "exit 1 when a target is missed")
		asJSON   = fs.Bool("json", false, "print JSON instead of a table")
		timeout  = fs.Duration("timeout", 5*time.Minute, "give up after this long")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gpulink: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg := gpulink.Config{Host: gpulink.HostMode(*host), LatencyIters: *iters}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := gpulink.ParseSize(s)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		cfg.Sizes = append(cfg.Sizes, n)
	}
	for _, d := range strings.Split(*dirs, ",") {
		cfg.Directions = append(cfg.Directions, gpulink.Direction(strings.TrimSpace(d)))
	}
	var err error
	if cfg.BandwidthBytes, err = gpulink.ParseSize(*bwBytes); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	tsize, err := gpulink.ParseSize(*tierSize)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	opts := []gpu.Option{gpu.WithOrdinal(*ordinal)}
	if *lib != "" {
		opts = append(opts, gpu.WithLibraryPath(*lib))
	}
	dev, err := gpu.Open(opts...)
	if err != nil {
		if errors.Is(err, gpu.ErrUnavailable) {
			fmt.Fprintf(stderr, "gpulink: no GPU: %v\n", err)
		} else {
			fmt.Fprintf(stderr, "gpulink: %v\n", err)
		}
		return 1
	}
	defer dev.Close()
	var nvmlOpts []nvmlinfo.Option
	if *nvmlLib != "" {
		nvmlOpts = append(nvmlOpts, nvmlinfo.WithLibraryPath(*nvmlLib))
	}
	link := gpulink.LinkFor(dev, nvmlOpts...)
	rep, err := gpulink.Measure(ctx, dev, link, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "gpulink: %v\n", err)
		return 1
	}
	if *tierGets > 0 {
		tr, err := gpulink.MeasureTierGet(ctx, dev, tsize, *tierGets)
		if err != nil {
			fmt.Fprintf(stderr, "gpulink: hbm tier: %v\n", err)
			return 1
		}
		rep.Tier = &tr
	}
	// The host description: every GPU's telemetry as the run ends (a busy
	// or hot GPU explains a slow row). No NVML leaves it empty.
	rep.GPUs, _ = nvmlinfo.ReadAll(nvmlOpts...)
	verdicts := rep.Check(*minRatio)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			gpulink.Report
			Verdicts []gpulink.Verdict `json:"verdicts"`
		}{rep, verdicts}); err != nil {
			fmt.Fprintf(stderr, "gpulink: %v\n", err)
			return 1
		}
	} else if err := rep.WriteTable(stdout, verdicts); err != nil {
		fmt.Fprintf(stderr, "gpulink: %v\n", err)
		return 1
	}
	if *check {
		for _, v := range verdicts {
			if !v.Pass {
				return 1
			}
		}
	}
	return 0
}
