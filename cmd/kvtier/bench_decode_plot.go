package main

import (
	"fmt"
	"os"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/kvtier/kvtier/benchmarks/engine"
)

// plotDecode writes an SVG of two panels: decode overhead (%) and
// cross-entropy increase (%) against budget, one line per mode/policy/codec.
func plotDecode(path string, rows []engine.DecodeRow) error {
	series := map[string][]engine.DecodeRow{}
	var names []string
	for _, r := range rows {
		k := r.Mode + " " + r.Policy + " " + r.Codec
		if _, ok := series[k]; !ok {
			names = append(names, k)
		}
		series[k] = append(series[k], r)
	}
	panels := []struct {
		title string
		y     func(engine.DecodeRow) float64
	}{
		{"decode overhead vs all-resident (%)", func(r engine.DecodeRow) float64 { return r.OverheadPct }},
		{"cross-entropy increase (%)", func(r engine.DecodeRow) float64 { return r.NLLIncreasePct }},
	}
	c := vgsvg.New(7*vg.Inch, 8*vg.Inch)
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadY: vg.Centimeter, PadX: vg.Centimeter, PadTop: vg.Centimeter / 2, PadBottom: vg.Centimeter / 2}
	for i, pn := range panels {
		p := plot.New()
		p.Title.Text = pn.title
		p.X.Label.Text = "budget (fraction of a request's blocks resident)"
		p.Legend.Top = true
		for j, name := range names {
			rs := series[name]
			sort.Slice(rs, func(a, b int) bool { return rs[a].Budget < rs[b].Budget })
			pts := make(plotter.XYs, len(rs))
			for k, r := range rs {
				pts[k].X, pts[k].Y = r.Budget, pn.y(r)
			}
			l, s, err := plotter.NewLinePoints(pts)
			if err != nil {
				return err
			}
			l.Color, s.Color = plotutil.Color(j), plotutil.Color(j)
			s.Shape = plotutil.Shape(j)
			p.Add(l, s)
			p.Legend.Add(name, l, s)
		}
		p.Draw(tiles.At(dc, 0, i))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plot: %w", err)
	}
	return f.Close()
}
