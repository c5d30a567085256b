package prefetch

import (
	"fmt"
	"image/color"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Plot draws the mean recall over traces against the budget, one line per
// policy, to path (the extension picks the format: .png, .svg, .pdf).
func Plot(path string, rs []Result) error {
	sum := Summarize(rs)
	var policies []string
	for _, s := range sum {
		if !slices.Contains(policies, s.Policy) {
			policies = append(policies, s.Policy)
		}
	}
	p := plot.New()
	p.Title.Text = "attention-mass recall against fast-tier budget"
	p.X.Label.Text = "budget (fraction of the request's blocks)"
	p.Y.Label.Text = "recall (mean over traces, layers and steps)"
	p.Y.Min, p.Y.Max = 0, 1
	p.Add(plotter.NewGrid())
	for i, pol := range policies {
		var pts plotter.XYs
		for _, s := range sum {
			if s.Policy == pol {
				pts = append(pts, plotter.XY{X: s.Budget, Y: s.Recall})
			}
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("plot: %w", err)
		}
		c := plotutil.Color(i)
		if pol == PolicyOracle {
			c = color.Gray{Y: 0x60}
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		l.Color, sc.Color = c, c
		sc.Shape = plotutil.Shape(i)
		p.Add(l, sc)
		p.Legend.Add(pol, l, sc)
	}
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.XOffs = -vg.Points(4)
	p.Legend.YOffs = vg.Points(20)
	if err := p.Save(7*vg.Inch, 4.5*vg.Inch, path); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}

// EqualRecall compares the bytes policy moves at each budget with what
// base moves at the smallest swept budget where base reaches the same
// recall (false when no swept budget does).
type EqualRecall struct {
	Budget, BaseBudget         float64
	Recall, BaseRecall         float64
	BytesMoved, BaseBytesMoved int64
}

// CompareAtEqualRecall finds, for each budget policy was run at, the base
// run of equal or higher recall with the smallest budget.
func CompareAtEqualRecall(rs []Result, policy, base string) []EqualRecall {
	sum := Summarize(rs)
	var out []EqualRecall
	for _, s := range sum {
		if s.Policy != policy {
			continue
		}
		for _, b := range sum { // ascending budget
			if b.Policy == base && b.Recall >= s.Recall {
				out = append(out, EqualRecall{s.Budget, b.Budget, s.Recall, b.Recall, s.BytesMoved, b.BytesMoved})
				break
			}
		}
	}
	return out
}
