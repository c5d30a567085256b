package load

import (
	"fmt"
	"image/color"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/kvtier/kvtier/benchmarks/host"
)

// WriteTable writes rows, then, when Redis was measured, kvtier/Redis
// throughput per level.
func WriteTable(w io.Writer, rows []Row, h *host.Info) error {
	if h != nil {
		fmt.Fprintf(w, "host: %s\n", h)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tscenario\tconc\toffered/s\tblock\tops/s\tGB/s\tp50 µs\tp90 µs\tp99 µs\tp99.9 µs\terrors\tmisses\t")
	for _, r := range rows {
		offered := "-"
		switch {
		case r.QPS > 0:
			offered = fmt.Sprintf("%.0f", r.QPS)
		case r.Scenario == ServerMax:
			offered = "none met the SLA"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%.0f\t%.3f\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%d\t\n", r.Target, r.Scenario, r.Concurrency,
			offered, r.BlockBytes, r.OpsPerS, r.GBps, r.P50US, r.P90US, r.P99US, r.P999US, r.Errors, r.Misses)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	ratios := Ratios(rows)
	if len(ratios) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nkvtier / redis, ops/s at the same level:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tconc\ttarget\tratio\t")
	for _, r := range ratios {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.2fx\t\n", r.Scenario, r.Concurrency, r.Target, r.Ratio)
	}
	return tw.Flush()
}

// Ratio is a kvtier target's throughput over Redis's at one level.
type Ratio struct {
	Scenario    string  `json:"scenario"`
	Concurrency int     `json:"concurrency"`
	Target      string  `json:"target"`
	Ratio       float64 `json:"ratio"`
}

// Ratios pairs each kvtier row with the Redis row of the same scenario,
// concurrency and offered rate (any rate for the find-max search).
func Ratios(rows []Row) []Ratio {
	var out []Ratio
	for _, r := range rows {
		if r.Target == Redis || r.OpsPerS <= 0 {
			continue
		}
		for _, ref := range rows {
			if ref.Target == Redis && ref.Scenario == r.Scenario && ref.Concurrency == r.Concurrency &&
				(ref.QPS == r.QPS || r.Scenario == ServerMax) && ref.OpsPerS > 0 {
				out = append(out, Ratio{r.Scenario, r.Concurrency, r.Target, r.OpsPerS / ref.OpsPerS})
			}
		}
	}
	return out
}

// Plot draws the throughput-latency curve (ops/s against p99, one line per
// target, a point per level) into path (.png or .svg).
func Plot(path string, rows []Row, title string) error {
	ext := strings.ToLower(filepath.Ext(path))
	if ext != ".png" && ext != ".svg" {
		return fmt.Errorf("%w: plot file %q: want .png or .svg", ErrInvalid, path)
	}
	by := map[string]plotter.XYs{}
	tags := map[string][]string{} // each point's level
	var names []string
	for _, r := range rows {
		if _, ok := by[r.Target]; !ok {
			names = append(names, r.Target)
		}
		by[r.Target] = append(by[r.Target], plotter.XY{X: r.OpsPerS, Y: r.P99US})
		tag := fmt.Sprintf("c=%d", r.Concurrency)
		if r.QPS > 0 {
			tag = fmt.Sprintf("%.0f/s", r.QPS)
		}
		tags[r.Target] = append(tags[r.Target], tag)
	}
	if len(names) == 0 {
		return fmt.Errorf("%w: nothing to plot", ErrInvalid)
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "operations / s"
	p.Y.Label.Text = "p99 latency (µs)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	colors := []color.Color{
		color.RGBA{31, 119, 180, 255}, color.RGBA{255, 127, 14, 255}, color.RGBA{44, 160, 44, 255}, color.RGBA{214, 39, 40, 255},
	}
	for i, n := range names {
		pts := by[n] // in the order of the levels: the curve follows the load
		for j := range pts {
			pts[j].Y = max(pts[j].Y, 1) // log scale
		}
		l, s, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		l.Color, s.Color = colors[i%len(colors)], colors[i%len(colors)]
		l.Width = vg.Points(1.5)
		p.Add(l, s)
		p.Legend.Add(n, l, s)
		lb, err := plotter.NewLabels(plotter.XYLabels{XYs: pts, Labels: tags[n]})
		if err != nil {
			return err
		}
		for j := range lb.TextStyle {
			lb.TextStyle[j].Color = colors[i%len(colors)]
			lb.TextStyle[j].XAlign = 0.1
		}
		p.Add(lb)
	}
	p.X.Min = 0
	p.Legend.Top, p.Legend.Left = true, true
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}
