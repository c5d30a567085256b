package tierbench

import (
	"fmt"
	"image/color"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Plot draws rows as a horizontal bar chart, tier and reference side by
// side for every row at parallel 1 (or every row when none is), into path;
// the extension (.png or .svg) picks the format.
func Plot(path string, rows []Row, title string) error {
	ext := strings.ToLower(filepath.Ext(path))
	if ext != ".png" && ext != ".svg" {
		return fmt.Errorf("%w: plot file %q: want .png or .svg", ErrInvalid, path)
	}
	var sel []Row
	for _, r := range rows {
		if r.Parallel == 1 {
			sel = append(sel, r)
		}
	}
	if len(sel) == 0 {
		sel = rows
	}
	if len(sel) == 0 {
		return fmt.Errorf("%w: nothing to plot", ErrInvalid)
	}
	// Bars are drawn bottom-up: reverse so the table's first row is on top.
	tier, ref := make(plotter.Values, len(sel)), make(plotter.Values, len(sel))
	names := make([]string, len(sel))
	for i, r := range sel {
		j := len(sel) - 1 - i
		tier[j], ref[j] = r.GBps, r.RefGBps
		names[j] = fmt.Sprintf("%s %s %s %s", r.Tier, r.Op, r.Order, sizeName(r.BlockBytes))
		if r.Ref != "" {
			names[j] += fmt.Sprintf(" (%.2fx)", r.Ratio)
		}
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "GB/s"
	const barW = 5
	bt, err := plotter.NewBarChart(tier, vg.Points(barW))
	if err != nil {
		return err
	}
	bt.Horizontal, bt.Color, bt.LineStyle.Width = true, color.RGBA{R: 31, G: 119, B: 180, A: 255}, 0
	bt.Offset = vg.Points(barW / 2)
	br, err := plotter.NewBarChart(ref, vg.Points(barW))
	if err != nil {
		return err
	}
	br.Horizontal, br.Color, br.LineStyle.Width = true, color.RGBA{R: 170, G: 170, B: 170, A: 255}, 0
	br.Offset = -vg.Points(barW / 2)
	p.Add(bt, br)
	p.Legend.Add("tier", bt)
	p.Legend.Add("reference (same run)", br)
	p.Legend.Top = true
	p.NominalY(names...)
	p.Y.Max = float64(len(sel)) + 0.6 // room for the legend above the first bar
	p.X.Min = 0
	for i := range tier {
		p.X.Max = max(p.X.Max, tier[i]*1.05, ref[i]*1.05)
	}
	p.Add(plotter.NewGrid())
	h := vg.Length(len(sel)+1)*vg.Points(2.2*barW) + 2*vg.Inch
	return p.Save(8*vg.Inch, h, path)
}
