package tierbench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/kvtier/kvtier/benchmarks/host"
)

// WriteTable writes rows as the tier table of the benchmarking literature
// (tier, capacity, bandwidth, latency, reference, ratio), under a line
// describing the host.
func WriteTable(w io.Writer, rows []Row, h *host.Info) error {
	if h != nil {
		if _, err := fmt.Fprintf(w, "host: %s\n", h); err != nil {
			return err
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tier\top\torder\tpar\tblock\tcapacity\tGB/s\tp50 µs\tp99 µs\treference\tref GB/s\tref p50 µs\tratio\tp50 ratio\tdirect I/O\t")
	for _, r := range rows {
		ref, refGB, refP50, ratio, ratio50 := "-", "-", "-", "-", "-"
		if r.Ref != "" {
			ref, refGB, ratio = r.Ref, fmt.Sprintf("%.2f", r.RefGBps), fmt.Sprintf("%.2fx", r.Ratio)
			if r.RefP50US > 0 {
				refP50, ratio50 = fmt.Sprintf("%.1f", r.RefP50US), fmt.Sprintf("%.2fx", r.RatioP50)
			}
		}
		direct := "-"
		if strings.HasPrefix(r.Ref, "raw-odirect") {
			direct = map[bool]string{true: "yes", false: "no (synced)"}[r.DirectIO]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%.2f\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			r.Tier, r.Op, r.Order, r.Parallel, sizeName(r.BlockBytes), capName(r.Capacity),
			r.GBps, r.P50US, r.P99US, ref, refGB, refP50, ratio, ratio50, direct)
	}
	return tw.Flush()
}

func capName(n int64) string {
	switch {
	case n <= 0:
		return "?"
	case n >= 1<<30:
		return fmt.Sprintf("%.0fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.0fMiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%.0fKiB", float64(n)/(1<<10))
	}
}
