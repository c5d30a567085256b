package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvtier/kvtier/benchmarks/load"
)

func TestBenchTiersJSON(t *testing.T) {
	var out, errb bytes.Buffer
	dir := t.TempDir()
	plot := filepath.Join(dir, "tiers.svg")
	code := run([]string{"bench", "tiers", "--tiers", "dram", "--sizes", "64KiB", "--parallel", "1", "--iterations", "16",
		"--dram-bytes", "4MiB", "--json", "--plot", plot, "--note", "test"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rows []map[string]any
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if len(rows) != 3 { // read seq, read random, write seq
		t.Fatalf("%d rows, want 3: %s", len(rows), out.String())
	}
	for _, r := range rows {
		for _, k := range []string{"tier", "op", "order", "parallel", "block_bytes", "gbps", "p50_us", "p99_us", "ref", "ref_gbps", "ratio_to_ref", "capacity_bytes", "direct_io", "host"} {
			if _, ok := r[k]; !ok {
				t.Fatalf("row lacks %q: %v", k, r)
			}
		}
		if r["tier"] != "dram" || r["ref"] != "memcpy" || r["gbps"].(float64) <= 0 || r["host"].(map[string]any)["note"] != "test" {
			t.Fatalf("row %v", r)
		}
	}
	if st, err := os.Stat(plot); err != nil || st.Size() == 0 {
		t.Fatalf("no plot: %v", err)
	}
	if !strings.Contains(errb.String(), "bench tiers: 3 rows") {
		t.Fatalf("stderr: %q", errb.String())
	}
}

func TestBenchTiersLoadUsage(t *testing.T) {
	cases := map[string]struct {
		args []string
		code int
	}{
		"tiers help":          {[]string{"bench", "tiers", "-h"}, 0},
		"tiers unknown tier":  {[]string{"bench", "tiers", "--tiers", "tape"}, 2},
		"tiers bad size":      {[]string{"bench", "tiers", "--sizes", "12x"}, 2},
		"tiers odd size":      {[]string{"bench", "tiers", "--sizes", "5000"}, 2},
		"tiers bad duration":  {[]string{"bench", "tiers", "--duration", "-1s"}, 2},
		"tiers stray":         {[]string{"bench", "tiers", "extra"}, 2},
		"tiers bad plot":      {[]string{"bench", "tiers", "--tiers", "dram", "--sizes", "64KiB", "--iterations", "2", "--dram-bytes", "2MiB", "--plot", "x.gif"}, 1},
		"load help":           {[]string{"bench", "load", "-h"}, 0},
		"load bad mix":        {[]string{"bench", "load", "--mix", "get=x"}, 2},
		"load bad block":      {[]string{"bench", "load", "--block-bytes", "1000"}, 2},
		"load bad scenario":   {[]string{"bench", "load", "--scenario", "batch"}, 2},
		"load server no qps":  {[]string{"bench", "load", "--scenario", "server"}, 2},
		"load find-max sweep": {[]string{"bench", "load", "--find-max"}, 2},
		"load bad plane":      {[]string{"bench", "load", "--plane", "rdma"}, 2},
		"load addr shm":       {[]string{"bench", "load", "--addr", "localhost:1"}, 2},
		"load both targets":   {[]string{"bench", "load", "--socket", "/x", "--addr", "localhost:1", "--plane", "inline"}, 2},
		"load no daemon":      {[]string{"bench", "load", "--socket", "/nonexistent/kvtier.sock", "--iterations", "1"}, 1},
	}
	for name, c := range cases {
		var out, errb bytes.Buffer
		if got := run(c.args, &out, &errb); got != c.code {
			t.Errorf("%s: exit %d, want %d (%s)", name, got, c.code, errb.String())
		}
	}
}

// TestBenchLoad runs the command against a daemon built from this tree.
func TestBenchLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts a daemon")
	}
	// make test builds bin/kvtier first and names it in KVTIER_BIN.
	bin := os.Getenv("KVTIER_BIN")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "kvtier")
		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	d, err := load.StartDaemon(context.Background(), bin, "--dram-bytes", "256MiB", "--hbm", "off")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var out, errb bytes.Buffer
	code := run([]string{"bench", "load", "--socket", d.Socket, "--scenario", "sweep", "--levels", "1,2", "--iterations", "40",
		"--keys", "32", "--mix", "get=0.8,put=0.1,lookup=0.1", "--vs-redis", "--json"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rows []map[string]any
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	want := 4 // two levels × two planes
	if _, err := exec.LookPath("redis-server"); err == nil {
		want = 6
	} else if !strings.Contains(errb.String(), "skipping Redis") {
		t.Fatalf("no message about the missing Redis: %s", errb.String())
	}
	if len(rows) != want {
		t.Fatalf("%d rows, want %d", len(rows), want)
	}
	for _, r := range rows {
		for _, k := range []string{"target", "scenario", "concurrency", "qps", "block_bytes", "ops_per_s", "gbps", "p50_us", "p90_us", "p99_us", "p999_us", "errors", "host"} {
			if _, ok := r[k]; !ok {
				t.Fatalf("row lacks %q: %v", k, r)
			}
		}
		if r["errors"].(float64) != 0 || r["ops_per_s"].(float64) <= 0 {
			t.Fatalf("row %v", r)
		}
	}
}
