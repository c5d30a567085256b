package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestPlanCommand(t *testing.T) {
	var out, errb bytes.Buffer
	args := []string{"plan", "--model", "llama-3.1-70b", "--gpu", "h100", "--gpus", "8", "--context", "4096", "--codec", "3.7x"}
	if rc := run(args, &out, &errb); rc != 0 {
		t.Fatalf("rc %d: %s", rc, errb.String())
	}
	for _, want := range []string{"327680 B of KV per token", "1.342 GB (1.250 GiB)", "390 requests, 1445 with the codec"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if rc := run(append(args, "--json"), &out, &errb); rc != 0 {
		t.Fatalf("json rc %d: %s", rc, errb.String())
	}
	var rows []map[string]any
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil || len(rows) != 1 {
		t.Fatalf("json: %v (%d rows)", err, len(rows))
	}
	if rows[0]["kv_bytes_per_token"] != 327680.0 || rows[0]["chapter_requests_codec"] != 1445.0 {
		t.Errorf("json row %v", rows[0])
	}
	for _, bad := range [][]string{{"plan", "--model", "gpt-9"}, {"plan", "--gpu", "tpu"}, {"plan", "--dram", "lots"}, {"plan", "--codec", "0.5x"}} {
		if rc := run(bad, &out, &errb); rc != 2 {
			t.Errorf("%v: rc %d, want 2", bad, rc)
		}
	}
}
