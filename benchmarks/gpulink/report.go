package gpulink

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// FormatSize prints a byte count in KiB/MiB/GiB when exact.
func FormatSize(n int64) string {
	for _, u := range []struct {
		s string
		v int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.v && n%u.v == 0 {
			return strconv.FormatInt(n/u.v, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// ParseSize parses "4096", "64KiB", "1MiB", "2GiB" (also K, M, G, KB, MB, GB
// as powers of two).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		v      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.v
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("gpulink: bad size %q", s)
	}
	return n * mult, nil
}

func us(d time.Duration) string { return fmt.Sprintf("%.1fµs", float64(d)/1e3) }

// WriteTable prints the report as a table, with the verdicts (if any).
func (r Report) WriteTable(w io.Writer, verdicts []Verdict) error {
	d := r.Device
	fmt.Fprintf(w, "device: %s (%s, ordinal %d, driver %d, bus %s, %s of memory)\n",
		d.Name, d.Vendor, d.Ordinal, d.DriverVersion, orUnknown(d.PCIBusID), FormatSize(d.TotalMem))
	l := r.Link
	if l.MaxBytesPerSec > 0 {
		fmt.Fprintf(w, "link:   PCIe gen%d x%d maximum, %.1f GB/s per direction (now gen%d x%d; source %s)\n",
			l.MaxGen, l.MaxWidth, l.MaxBytesPerSec/1e9, l.Gen, l.Width, l.Source)
	} else {
		fmt.Fprintln(w, "link:   maximum unknown (no NVML or sysfs information)")
	}
	switch {
	case r.HostNUMANode >= 0:
		fmt.Fprintf(w, "host:   buffers on NUMA node %d, the GPU's\n", r.HostNUMANode)
	case r.GPUNUMANode >= 0:
		fmt.Fprintf(w, "host:   GPU on NUMA node %d; buffers could not be placed there\n", r.GPUNUMANode)
	default:
		fmt.Fprintln(w, "host:   GPU's NUMA node unknown; buffers not placed")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "dir\tsize\thost\tGB/s\tp50\tp99\t× link max\tenqueue/copy\tnote\t")
	bound := false
	for _, x := range r.Results {
		ratio := "-"
		if x.LinkRatio > 0 {
			ratio = fmt.Sprintf("%.2f", x.LinkRatio)
		}
		note := ""
		if x.EnqueueBound {
			note, bound = "enqueue-bound*", true
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%s\t%s\t%s\t%s\t%s\t\n", x.Direction, FormatSize(x.Size), x.Host,
			x.BytesPerSec/1e9, us(x.P50), us(x.P99), ratio, us(time.Duration(x.EnqueueNsPerCopy)), note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if bound {
		fmt.Fprintf(w, "* the host queued copies no faster than the device ran them (enqueue >= %.0f%% of device time):\n"+
			"  GB/s there is the host's enqueue rate, a floor for the link's bandwidth\n", enqueueBoundShare*100)
	}
	for _, g := range r.GPUs {
		fmt.Fprintf(w, "gpu %d: %s, %s of %s used, PCIe tx %s rx %s, util %s, %s, %s, link gen%d x%d (max gen%d x%d)\n",
			g.Index, g.Name, FormatSize(g.MemUsed), FormatSize(g.MemTotal), gbps(g.PCIeTxBytesPerSec), gbps(g.PCIeRxBytesPerSec),
			known(g.UtilGPU >= 0, fmt.Sprintf("%d%%", g.UtilGPU)), known(g.TemperatureC >= 0, fmt.Sprintf("%d C", g.TemperatureC)),
			known(g.PowerWatts >= 0, fmt.Sprintf("%.0f W", g.PowerWatts)), g.PCIeGen, g.PCIeWidth, g.PCIeMaxGen, g.PCIeMaxWidth)
	}
	if t := r.Tier; t != nil {
		fmt.Fprintf(w, "hbm tier get %s (%d gets into pinned memory): p50 %s p99 %s, %.2f GB/s; copy alone p50 %s p99 %s\n",
			FormatSize(t.Size), t.Gets, us(t.P50), us(t.P99), t.BytesPerSec/1e9, us(t.CopyP50), us(t.CopyP99))
	}
	for _, v := range verdicts {
		status := "FAIL"
		if v.Pass {
			status = "PASS"
		}
		fmt.Fprintf(w, "%s %s %s: %s\n", status, v.Direction, FormatSize(v.Size), v.Reason)
	}
	return nil
}

func gbps(v float64) string {
	if v < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f GB/s", v/1e9)
}

func known(ok bool, s string) string {
	if !ok {
		return "n/a"
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
