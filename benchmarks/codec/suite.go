package codecbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"

	"github.com/kvtier/kvtier/codec"
)

// DefaultSpecs are the modes measured when none are named.
var DefaultSpecs = []string{"lossless", "int8", "int4", "int3", "int2", "int3+out", "int2+out", "int4+ec", "int3+ec", "int2+ec"}

// Disk is the raw O_DIRECT disk measurement of a run.
type Disk struct {
	Dir       string
	Bytes     int64
	ReadGBps  float64
	WriteGBps float64
	Err       error
}

// Report is the outcome of a suite.
type Report struct {
	Results []Result
	Disk    Disk
	// MemcpyGBps is the reference for the per-core throughputs: copying the
	// largest input, measured the same way (GB/s per core).
	MemcpyGBps float64
}

// SuiteConfig is a whole `bench codec` run.
type SuiteConfig struct {
	Config
	Specs    []string
	DiskDir  string // "" skips the disk measurement
	DiskSize int64
}

// Suite measures every spec on every input, then the disk. Progress lines go
// to progress (may be nil).
func Suite(ctx context.Context, inputs []Input, cfg SuiteConfig, progress io.Writer) (Report, error) {
	var rep Report
	if progress == nil {
		progress = io.Discard
	}
	specs := cfg.Specs
	if len(specs) == 0 {
		specs = DefaultSpecs
	}
	opts := make([]codec.Options, len(specs))
	for i, s := range specs {
		o, err := codec.ParseSpec(s)
		if err != nil {
			return rep, err
		}
		o.Parallelism = cfg.Parallelism
		opts[i] = o
	}
	var largest []byte
	for _, in := range inputs {
		if len(in.Raw) > len(largest) {
			largest = in.Raw
		}
	}
	if len(largest) > 0 {
		var err error
		rep.MemcpyGBps, err = throughput(ctx, cfg.MinTime, len(largest), func(buf []byte) ([]byte, error) {
			return append(buf[:0], largest...), nil
		}, len(largest))
		if err != nil {
			return rep, err
		}
	}
	for _, in := range inputs {
		for _, o := range opts {
			fmt.Fprintf(progress, "bench codec: %s %s\n", in.Name, o.Spec())
			r, err := Run(ctx, in, o, cfg.Config)
			if err != nil {
				return rep, err
			}
			rep.Results = append(rep.Results, r)
		}
	}
	if cfg.DiskDir != "" {
		size := cfg.DiskSize
		if size <= 0 {
			size = 256 << 20
		}
		fmt.Fprintf(progress, "bench codec: O_DIRECT read of %d MiB in %s\n", size>>20, abs(cfg.DiskDir))
		rep.Disk, rep.Disk.Err = DiskRead(ctx, cfg.DiskDir, size)
		rep.Disk.Dir = abs(cfg.DiskDir)
		if rep.Disk.Err != nil && ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
	return rep, nil
}

// jsonResult adds the run's references to each result.
type jsonResult struct {
	Result
	DiskReadGBps *float64 `json:"disk_read_gbps,omitempty"`
	MemcpyGBps   *float64 `json:"memcpy_gbps,omitempty"`
}

// WriteJSON writes the results as a JSON array, one object per mode and input.
func WriteJSON(w io.Writer, rep Report) error {
	out := make([]jsonResult, len(rep.Results))
	for i, r := range rep.Results {
		out[i] = jsonResult{Result: r}
		if rep.Disk.Err == nil && rep.Disk.ReadGBps > 0 {
			d := rep.Disk.ReadGBps
			out[i].DiskReadGBps = &d
		}
		if rep.MemcpyGBps > 0 {
			m := rep.MemcpyGBps
			out[i].MemcpyGBps = &m
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// WriteTable writes an aligned table: one row per result, then the disk
// line, then (last) the summary of the default mode.
func WriteTable(w io.Writer, rep Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "input\tmode\tratio\tk_rel_err\tv_rel_err\tattn_rel_err\tattn_kl\tencode GB/s\tdecode GB/s\t")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%s\t%s\t%.3f\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t\n", r.Input, r.Mode, r.Ratio,
			pct(r.KRelErr), pct(r.VRelErr), pct(r.AttnRelErr), sci(r.AttnKL), r.EncodeGBps, r.DecodeGBps)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	disk := "disk: not measured"
	switch {
	case rep.Disk.Err != nil:
		disk = fmt.Sprintf("disk: O_DIRECT read unavailable in %s: %v", rep.Disk.Dir, rep.Disk.Err)
	case rep.Disk.ReadGBps > 0:
		disk = fmt.Sprintf("disk: O_DIRECT sequential read %.2f GB/s, write %.2f GB/s (%d MiB in %s); decode GB/s is input bytes per core, per second",
			rep.Disk.ReadGBps, rep.Disk.WriteGBps, rep.Disk.Bytes>>20, rep.Disk.Dir)
	}
	fmt.Fprintln(w, disk)
	if rep.MemcpyGBps > 0 {
		fmt.Fprintf(w, "memcpy: %.2f GB/s per core (the largest input, measured as the codec is)\n", rep.MemcpyGBps)
	}
	_, err := fmt.Fprintln(w, Summary(rep, codec.DefaultMode.String()))
	return err
}

// Summary is the one-line summary of mode over all inputs: mean ratio, worst
// errors, slowest per-core throughput, and how decode compares with the disk.
func Summary(rep Report, mode string) string {
	var n int
	var ratio, attn, kl, enc, dec float64
	exact := true
	enc, dec = math.Inf(1), math.Inf(1)
	for _, r := range rep.Results {
		if r.Mode != mode {
			continue
		}
		n++
		ratio += r.Ratio
		attn = math.Max(attn, r.AttnRelErr)
		kl = math.Max(kl, r.AttnKL)
		enc = math.Min(enc, r.EncodeGBps)
		dec = math.Min(dec, r.DecodeGBps)
		exact = exact && r.Exact
	}
	if n == 0 {
		return fmt.Sprintf("summary: default mode %s: not measured", mode)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "summary: default mode %s over %d input(s): ratio %.3f", mode, n, ratio/float64(n))
	if exact {
		b.WriteString(" (bit-exact)")
	} else {
		fmt.Fprintf(&b, ", attn_rel_err ≤ %s, attn_kl ≤ %s", pct(attn), sci(kl))
	}
	fmt.Fprintf(&b, ", encode ≥ %.2f GB/s, decode ≥ %.2f GB/s per core", enc, dec)
	if rep.Disk.Err == nil && rep.Disk.ReadGBps > 0 {
		fmt.Fprintf(&b, "; disk read %.2f GB/s: decode/disk %.2f×", rep.Disk.ReadGBps, dec/rep.Disk.ReadGBps)
	}
	return b.String()
}

func pct(x float64) string { return fmt.Sprintf("%.2f%%", 100*x) }
func sci(x float64) string { return fmt.Sprintf("%.2e", x) }
