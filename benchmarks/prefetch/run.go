package prefetch

import (
	"context"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/dram"
)

// Run loads the traces into a fresh store (a DRAM arena sized for them)
// and replays each at each budget.
func Run(ctx context.Context, paths []string, budgets []float64, cfg Config) ([]Result, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("%w: no trace", ErrConfig)
	}
	if len(budgets) == 0 {
		return nil, fmt.Errorf("%w: no budget", ErrConfig)
	}
	cfg.ensureDefaults()
	traces := make([]*Trace, len(paths))
	var need int64
	for i, p := range paths {
		t, err := LoadTrace(p)
		if err != nil {
			return nil, err
		}
		traces[i] = t
		need += int64(t.Layers) * int64(t.Tokens) * int64(t.KVHeads) * int64(t.HeadDim) * 2 * 2
	}
	arena, err := dram.New(max(2*need, 8<<20), dram.WithChunkSize(64<<10), dram.WithHugePages(false))
	if err != nil {
		return nil, err
	}
	st, err := tiers.Open(ctx, tiers.Config{DRAM: arena})
	if err != nil {
		_ = arena.Close()
		return nil, err
	}
	defer st.Close()
	var out []Result
	for _, t := range traces {
		if t.Tokens%cfg.BlockTokens != 0 {
			return nil, fmt.Errorf("%w: %d tokens per block do not divide %s's %d", ErrConfig, cfg.BlockTokens, t.Name, t.Tokens)
		}
		if _, err := Load(ctx, st, t, cfg.BlockTokens); err != nil {
			return nil, fmt.Errorf("loading %s: %w", t.Name, err)
		}
		for _, b := range budgets {
			c := cfg
			c.Budget = b
			rs, err := Replay(ctx, st, t, c)
			if err != nil {
				return nil, err
			}
			out = append(out, rs...)
		}
	}
	return out, nil
}

// Summary is one policy's figures averaged over traces at one budget.
type Summary struct {
	Policy     string  `json:"policy"`
	Budget     float64 `json:"budget"`
	Recall     float64 `json:"recall"`
	HitRate    float64 `json:"hit_rate"`
	BytesMoved int64   `json:"bytes_moved"` // summed over traces
	Late       int64   `json:"late"`
	Wasted     int64   `json:"wasted"`
	VsOracle   float64 `json:"vs_oracle"` // recall / the oracle's, same budget
	VsLRU      float64 `json:"vs_lru"`    // recall / lru's, same budget
}

// Summarize averages results over traces, per budget and policy.
func Summarize(rs []Result) []Summary {
	type key struct {
		b float64
		p string
	}
	var order []key
	acc := map[key]*Summary{}
	n := map[key]int{}
	for _, r := range rs {
		k := key{r.Budget, r.Policy}
		s := acc[k]
		if s == nil {
			s = &Summary{Policy: r.Policy, Budget: r.Budget}
			acc[k] = s
			order = append(order, k)
		}
		s.Recall += r.Recall
		s.HitRate += r.HitRate
		s.BytesMoved += r.BytesMoved
		s.Late += r.Late
		s.Wasted += r.Wasted
		n[k]++
	}
	out := make([]Summary, 0, len(order))
	for _, k := range order {
		s := acc[k]
		s.Recall /= float64(n[k])
		s.HitRate /= float64(n[k])
		out = append(out, *s)
	}
	for i := range out {
		for _, o := range out {
			if o.Budget != out[i].Budget {
				continue
			}
			if o.Policy == PolicyOracle && o.Recall > 0 {
				out[i].VsOracle = out[i].Recall / o.Recall
			}
			if o.Policy == PolicyLRU && o.Recall > 0 {
				out[i].VsLRU = out[i].Recall / o.Recall
			}
		}
	}
	slices.SortStableFunc(out, func(a, b Summary) int {
		switch {
		case a.Budget < b.Budget:
			return -1
		case a.Budget > b.Budget:
			return 1
		}
		return 0
	})
	return out
}

// WriteTable prints the per-trace results and the averages over traces.
func WriteTable(w io.Writer, rs []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "trace\tpolicy\tbudget\tblocks\trecall\thit_rate\tbytes_moved\tlate\twasted\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%d\t%.3f\t%.3f\t%d\t%d\t%d\t\n", r.Trace, r.Policy, r.Budget, r.Blocks, r.Recall, r.HitRate, r.BytesMoved, r.Late, r.Wasted)
	}
	fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t\t")
	fmt.Fprintln(tw, "mean over traces\tpolicy\tbudget\t\trecall\thit_rate\tbytes_moved\tvs oracle\tvs lru\t")
	for _, s := range Summarize(rs) {
		fmt.Fprintf(tw, "\t%s\t%.2f\t\t%.3f\t%.3f\t%d\t%.2f\t%.2f\t\n", s.Policy, s.Budget, s.Recall, s.HitRate, s.BytesMoved, s.VsOracle, s.VsLRU)
	}
	return tw.Flush()
}
