package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvtier/kvtier/benchmarks/engine"
)

func TestBenchDecodeJSON(t *testing.T) {
	// Two small windows of this package's own source (the eval text needs GOROOT).
	dir := t.TempDir()
	src := "package x\n\n" + strings.Repeat("func f() int {\n\treturn g(1, 2) + h(\"abc\")\n}\n\n", 10)
	for _, n := range []string{"a.go", "b.go"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	svg := filepath.Join(dir, "d.svg")
	var out, errb bytes.Buffer
	args := []string{"bench", "decode", "--text", filepath.Join(dir, "a.go") + "," + filepath.Join(dir, "b.go"),
		"--windows", "2", "--context", "64", "--mode", "sparse", "--sweep", "policy=lru,scores,queries,scores+queries,oracle", "--sweep", "budget=0.3,1",
		"--json", "--plot", svg}
	if rc := run(args, &out, &errb); rc != 0 {
		t.Fatalf("rc %d: %s", rc, errb.String())
	}
	var rows []engine.DecodeRow
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil || len(rows) != 10 {
		t.Fatalf("json: %v, %d rows:\n%s", err, len(rows), out.String())
	}
	var raw []map[string]any
	if err := json.Unmarshal(out.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"model", "mode", "policy", "budget", "codec", "context", "tpot_ms_resident", "tpot_ms",
		"overhead_pct", "stall_ms", "bytes_moved_per_token", "hit_rate", "nll", "nll_resident", "token_agreement", "measured"} {
		if _, ok := raw[0][f]; !ok {
			t.Errorf("row lacks %q", f)
		}
	}
	for _, r := range rows {
		if r.Budget == 1 && r.Agreement != 1 {
			t.Errorf("%s at budget 1: agreement %v", r.Policy, r.Agreement)
		}
	}
	if b, err := os.ReadFile(svg); err != nil || !bytes.Contains(b, []byte("<svg")) {
		t.Errorf("plot: %v", err)
	}
	for _, bad := range [][]string{
		{"bench", "decode", "--model", "gpt-9"},
		{"bench", "decode", "--context", "100"},
		{"bench", "decode", "--sweep", "color=red"},
	} {
		if rc := run(bad, &out, &errb); rc != 2 {
			t.Errorf("%v: rc %d, want 2", bad, rc)
		}
	}
}

func TestBenchEngineJSON(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for i, n := range []string{"a.go", "b.go", "c.go"} {
		src := "package x\n\n" + strings.Repeat("func f"+string(rune('a'+i))+"() int {\n\treturn g(1, 2) + h(\"abc\")\n}\n\n", 20)
		files = append(files, filepath.Join(dir, n))
		if err := os.WriteFile(files[i], []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out, errb bytes.Buffer
	args := []string{"bench", "engine", "--text", strings.Join(files, ","), "--workload", "long-doc-qa", "--requests", "3", "--gen", "4",
		"--scenario", "server", "--sla-ttft", "100000", "--json"}
	if rc := run(args, &out, &errb); rc != 0 {
		t.Fatalf("rc %d: %s", rc, errb.String())
	}
	var rows []engine.EngineRow
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil || len(rows) != 2 {
		t.Fatalf("json: %v, %d rows", err, len(rows))
	}
	if rows[0].Cache != "kvtier" || rows[0].HitRate <= 0 || rows[1].HitRate != 0 || rows[0].QPS <= 0 {
		t.Errorf("rows %+v", rows)
	}
	if rc := run([]string{"bench", "engine", "--scenario", "batch"}, &out, &errb); rc != 2 {
		t.Errorf("bad scenario: rc %d", rc)
	}
}
