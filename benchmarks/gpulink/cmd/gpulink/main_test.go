package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/kvtier/kvtier/cgo/gpu/gputest"
)

func TestRun(t *testing.T) {
	f := gputest.BuildFake(t)
	src, err := os.ReadFile("../../../../cgo/nvmlinfo/testdata/fakenvml.c")
	if err != nil {
		t.Fatal(err)
	}
	// One NVML library for the whole process (go-nvml binds globally).
	nvml := gputest.CompileC(t, "libnvidia-ml.so.1", src)
	quick := []string{"-lib", f.Path, "-nvml", nvml, "-sizes", "64KiB,1MiB,4MiB", "-iters", "3", "-bw-bytes", "8MiB", "-tier-size", "256KiB", "-tier-gets", "10"}
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   []string
		stderr   string
		wantJSON bool
	}{
		{name: "table", args: append(quick, "-min-ratio", "0"), code: 0,
			stdout: []string{"device: Fake GPU 0", "gen5 x16", "hbm tier get 256KiB", "PASS h2d 1MiB", "PASS d2h 4MiB", "gpu 0: Fake NVML GPU 0"}},
		{name: "check fails", args: append(quick, "-min-ratio", "1000", "-check"), code: 1, stdout: []string{"FAIL h2d 4MiB"}},
		{name: "json", args: append(quick, "-json", "-dirs", "h2d"), code: 0, wantJSON: true},
		{name: "no gpu", args: []string{"-lib", t.TempDir() + "/libcuda.so.1"}, code: 1, stderr: "no GPU"},
		{name: "bad size", args: []string{"-sizes", "lots"}, code: 2, stderr: "bad size"},
		{name: "bad flag", args: []string{"-frobnicate"}, code: 2},
		{name: "stray argument", args: []string{"now"}, code: 2, stderr: "unexpected"},
		{name: "bad host", args: append(quick, "-host", "swap"), code: 1, stderr: "unknown host memory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tc.args, &stdout, &stderr); code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, &stdout, &stderr)
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, &stdout)
				}
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, &stderr)
			}
			if tc.wantJSON {
				var v struct {
					Results  []map[string]any `json:"results"`
					Verdicts []map[string]any `json:"verdicts"`
					Link     map[string]any   `json:"link"`
				}
				if err := json.Unmarshal(stdout.Bytes(), &v); err != nil || len(v.Results) != 3 || len(v.Verdicts) != 4 || v.Link["source"] != "nvml" {
					t.Fatalf("JSON %v: %s", err, &stdout)
				}
			}
		})
	}
}
