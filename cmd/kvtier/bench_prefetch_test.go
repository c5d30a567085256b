package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const prefetchTrace = "../../benchmarks/prefetch/testdata/kv-p00.bin"

func TestBenchPrefetchJSON(t *testing.T) {
	var out, errb bytes.Buffer
	plot := filepath.Join(t.TempDir(), "recall.png")
	code := run([]string{"bench", "prefetch", "--trace", prefetchTrace, "--sweep", "budget=0.2,0.4", "--policies", "lru,scores,oracle", "--json", "--plot", plot}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rs []map[string]any
	if err := json.Unmarshal(out.Bytes(), &rs); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if len(rs) != 6 {
		t.Fatalf("%d results, want 2 budgets × 3 policies", len(rs))
	}
	for _, r := range rs {
		if r["trace"] != "kv-p00" || r["recall"].(float64) <= 0 {
			t.Fatalf("%v", r)
		}
	}
	if fi, err := os.Stat(plot); err != nil || fi.Size() == 0 {
		t.Fatalf("plot: %v", err)
	}
}

func TestBenchPrefetchTableAndErrors(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"bench", "prefetch", "--trace", prefetchTrace, "--policies", "lru,queries"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "mean over traces") || !strings.Contains(out.String(), "queries") {
		t.Fatalf("table: %s", out.String())
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "--trace is required"},
		{[]string{"--trace", prefetchTrace, "--sweep", "budget=0.2,x"}, "--sweep"},
		{[]string{"--trace", prefetchTrace, "--sweep", "size=1"}, "--sweep"},
		{[]string{"--trace", prefetchTrace, "--budget", "2"}, "budget"},
		{[]string{"--trace", prefetchTrace, "--combine", "max"}, "--combine"},
		{[]string{"--trace", prefetchTrace, "--policies", "mru"}, "unknown policy"},
	} {
		out.Reset()
		errb.Reset()
		if code := run(append([]string{"bench", "prefetch"}, tc.args...), &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}
