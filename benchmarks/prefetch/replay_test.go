package prefetch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvtier/kvtier/benchmarks/report"
)

var fixtures = []string{"testdata/kv-p00.bin", "testdata/kv-p03.bin"}

func TestReplayFixtures(t *testing.T) {
	rs, err := Run(context.Background(), fixtures, []float64{0.2}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != len(fixtures)*len(AllPolicies) {
		t.Fatalf("%d results", len(rs))
	}
	by := map[string]Result{}
	for _, s := range Summarize(rs) {
		by[s.Policy] = Result{Recall: s.Recall, HitRate: s.HitRate, BytesMoved: s.BytesMoved}
	}
	for _, r := range rs {
		if r.Blocks != 6 || r.Steps != 16 {
			t.Fatalf("%s/%s: %d blocks, %d steps; want 6 of 30 blocks over 16 steps", r.Trace, r.Policy, r.Blocks, r.Steps)
		}
		if !(r.Recall > 0 && r.Recall <= 1) || r.HitRate < 0 || r.HitRate > 1 || r.BytesMoved <= 0 || r.Late != 0 {
			t.Fatalf("%+v", r)
		}
	}
	oracle := by[PolicyOracle].Recall
	for p, r := range by {
		if r.Recall > oracle+1e-9 {
			t.Errorf("%s recall %.3f above the oracle's %.3f", p, r.Recall, oracle)
		}
	}
	// The orderings the targets rest on, with margin: learned
	// policies beat recency, and the current query beats the previous one.
	lru := by[PolicyLRU].Recall
	for _, p := range []string{PolicyScores, PolicyQueries, PolicyQueriesNow, PolicyScoresQueries} {
		if by[p].Recall < 1.1*lru {
			t.Errorf("%s recall %.3f, lru %.3f", p, by[p].Recall, lru)
		}
	}
	if by[PolicyQueriesNow].Recall < by[PolicyQueries].Recall {
		t.Errorf("current query %.3f below previous query %.3f", by[PolicyQueriesNow].Recall, by[PolicyQueries].Recall)
	}
	// Replays are deterministic.
	again, err := Run(context.Background(), fixtures, []float64{0.2}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range rs {
		if rs[i] != again[i] {
			t.Fatalf("replay differs: %+v then %+v", rs[i], again[i])
		}
	}
	var buf bytes.Buffer
	if err := report.JSON(&buf, rs); err != nil {
		t.Fatal(err)
	}
	var back []map[string]any
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"trace", "policy", "budget", "recall", "hit_rate", "bytes_moved", "late", "wasted"} {
		if _, ok := back[0][k]; !ok {
			t.Fatalf("JSON lacks %q: %v", k, back[0])
		}
	}
}

func TestReplayDeadline(t *testing.T) {
	// A deadline of 1ns passes before the first move: every block of every
	// plan is late and nothing is resident.
	rs, err := Run(context.Background(), fixtures[:1], []float64{0.2}, Config{Policies: []string{PolicyScores}, LayerTime: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r := rs[0]; r.Late == 0 || r.BytesMoved != 0 || r.Recall != 0 {
		t.Fatalf("%+v", r)
	}
}

func TestReplayCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, fixtures[:1], []float64{0.2}, Config{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "kv-bad.bin")
	if err := os.WriteFile(bad, []byte("xx"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kv-bad.json"), []byte(`{"format":"tinylm-kv-dump/1","tensors":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		paths   []string
		budgets []float64
		cfg     Config
		want    string
	}{
		{"no trace", nil, []float64{0.2}, Config{}, "no trace"},
		{"missing file", []string{filepath.Join(dir, "none.bin")}, []float64{0.2}, Config{}, "none"},
		{"bad trace", []string{bad}, []float64{0.2}, Config{}, "kv-bad"},
		{"zero budget", fixtures[:1], []float64{0}, Config{}, "budget"},
		{"budget above 1", fixtures[:1], []float64{1.5}, Config{}, "budget"},
		{"block tokens", fixtures[:1], []float64{0.2}, Config{BlockTokens: 7}, "tokens per block"},
		{"policy", fixtures[:1], []float64{0.2}, Config{Policies: []string{"mru"}}, "unknown policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(context.Background(), tc.paths, tc.budgets, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
		})
	}
}
