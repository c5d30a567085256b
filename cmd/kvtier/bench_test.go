package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

const fixture = "../../codec/testdata/kv/kv-p00.bin"

func TestBenchCodecJSON(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"bench", "codec", "--input", fixture, "--modes", "lossless,int4", "--json", "--time", "1ms", "--disk-dir", ""}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rows []map[string]any
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2", len(rows))
	}
	for _, r := range rows {
		for _, k := range []string{"mode", "input", "ratio", "k_rel_err", "v_rel_err", "attn_rel_err", "attn_kl", "encode_gbps", "decode_gbps"} {
			if _, ok := r[k]; !ok {
				t.Fatalf("row lacks %q: %v", k, r)
			}
		}
		if r["input"] != "kv-p00" {
			t.Fatalf("input %v", r["input"])
		}
		if r["ratio"].(float64) <= 1 || r["encode_gbps"].(float64) <= 0 {
			t.Fatalf("implausible row %v", r)
		}
	}
	if rows[0]["mode"] != "lossless" || rows[0]["attn_rel_err"].(float64) != 0 {
		t.Fatalf("lossless row %v", rows[0])
	}
	if e := rows[1]["attn_rel_err"].(float64); e <= 0 || e > 0.1 {
		t.Fatalf("int4 attention error %v", e)
	}
	if !strings.Contains(errb.String(), "bench codec: kv-p00 int4") {
		t.Fatalf("no progress on stderr: %q", errb.String())
	}
}

func TestBenchCodecTable(t *testing.T) {
	var out, errb bytes.Buffer
	dir := t.TempDir()
	code := run([]string{"bench", "codec", "--modes", "int8,lossless", "--synthetic", "2x2x64x32", "--time", "1ms", "--disk-dir", dir, "--disk-mib", "8"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 6 || !strings.Contains(lines[0], "attn_rel_err") || !strings.Contains(lines[1], "synthetic") {
		t.Fatalf("table:\n%s", out.String())
	}
	if !strings.HasPrefix(lines[3], "disk: ") {
		t.Fatalf("no disk line: %q", lines[3])
	}
	if !strings.HasPrefix(lines[4], "memcpy: ") {
		t.Fatalf("no memcpy reference line: %q", lines[4])
	}
	if last := lines[5]; !strings.HasPrefix(last, "summary: default mode lossless") || !strings.Contains(last, "bit-exact") {
		t.Fatalf("last line is not the default mode's summary: %q", last)
	}
}

func TestBenchUsage(t *testing.T) {
	cases := map[string]struct {
		args []string
		code int
	}{
		"no benchmark":    {[]string{"bench"}, 2},
		"unknown":         {[]string{"bench", "warp"}, 2},
		"help":            {[]string{"bench", "help"}, 0},
		"bad mode":        {[]string{"bench", "codec", "--modes", "int5"}, 2},
		"bad flag":        {[]string{"bench", "codec", "--nope"}, 2},
		"stray argument":  {[]string{"bench", "codec", "extra"}, 2},
		"missing input":   {[]string{"bench", "codec", "--input", "/nonexistent/kv.bin", "--disk-dir", ""}, 1},
		"codec help flag": {[]string{"bench", "codec", "-h"}, 0},
		"bad shape":       {[]string{"bench", "codec", "--synthetic", "2x2", "--disk-dir", ""}, 2},
	}
	for name, c := range cases {
		var out, errb bytes.Buffer
		if got := run(c.args, &out, &errb); got != c.code {
			t.Errorf("%s: exit %d, want %d (%s)", name, got, c.code, errb.String())
		}
	}
}
