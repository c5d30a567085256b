package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestCodeName(t *testing.T) {
	for in, want := range map[string]string{
		"NotFound": "NOT_FOUND", "OK": "OK", "DeadlineExceeded": "DEADLINE_EXCEEDED",
		"Unauthenticated": "UNAUTHENTICATED", "FailedPrecondition": "FAILED_PRECONDITION",
	} {
		if got := codeName(in); got != want {
			t.Errorf("codeName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestClientUsageErrors: command-line mistakes exit 2 without a daemon.
func TestClientUsageErrors(t *testing.T) {
	key := []string{"--ns", "n", "--hash", strings.Repeat("ab", 16), "--layer", "0"}
	for _, tc := range []struct {
		name string
		run  func([]string, *bytes.Buffer, *bytes.Buffer) int
		args []string
		msg  string
	}{
		{"put without file", wrap(runPut), append(key, "--dtype", "fp16", "--tokens", "1", "--kv-heads", "1", "--head-dim", "1"), "missing"},
		{"put bad dtype", wrap(runPut), append(key, "--dtype", "int8", "--tokens", "1", "--kv-heads", "1", "--head-dim", "1", "f"), "dtype"},
		{"put no tokens", wrap(runPut), append(key, "--dtype", "fp16", "--kv-heads", "1", "--head-dim", "1", "f"), "--tokens"},
		{"put tokens over the codec's limit", wrap(runPut), append(key, "--dtype", "fp16", "--tokens", "70000", "--kv-heads", "1", "--head-dim", "1", "f"), "tokens: 70000 not in 1..65536"},
		{"put kv-heads over the codec's limit", wrap(runPut), append(key, "--dtype", "fp16", "--tokens", "1", "--kv-heads", "2000", "--head-dim", "1", "f"), "kv_heads: 2000 not in 1..1024"},
		{"get layer over the store's limit", wrap(runGet), []string{"--ns", "n", "--hash", strings.Repeat("ab", 16), "--layer", "1024"}, "layer: 1024 not in -1..1023"},
		{"put bad order", wrap(runPut), append(key, "--dtype", "fp16", "--tokens", "1", "--kv-heads", "1", "--head-dim", "1", "--order", "zigzag", "f"), "--order"},
		{"get no ns", wrap(runGet), []string{"--hash", strings.Repeat("ab", 16), "--layer", "0"}, "--ns"},
		{"get short hash", wrap(runGet), []string{"--ns", "n", "--hash", "abcd", "--layer", "0"}, "--hash"},
		{"get odd hex", wrap(runGet), []string{"--ns", "n", "--hash", "xyz", "--layer", "0"}, "hex"},
		{"get shm over tcp", wrap(runGet), append(key, "--addr", "127.0.0.1:1", "--shm"), "--shm"},
		{"get tls and insecure", wrap(runGet), append(key, "--addr", "127.0.0.1:1", "--insecure", "--tls-ca", "x"), "--insecure"},
		{"lookup bad layer", wrap(runLookup), []string{"--ns", "n", "--hashes", strings.Repeat("ab", 16), "--layer", "-2"}, "--layer"},
		{"lookup bad hash", wrap(runLookup), []string{"--ns", "n", "--hashes", strings.Repeat("ab", 16) + ",zz"}, "--hashes[1]"},
		{"stats extra arg", wrap(runStats), []string{"now"}, "unexpected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := tc.run(tc.args, &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.msg) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, errb.String(), tc.msg)
			}
		})
	}
}

func wrap(f func([]string, io.Writer, io.Writer) int) func([]string, *bytes.Buffer, *bytes.Buffer) int {
	return func(a []string, o, e *bytes.Buffer) int { return f(a, o, e) }
}
