package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeConfigErrorsExit2: every configuration error exits 2, as usage
// errors do, and says what is wrong without the shutdown's warnings.
func TestServeConfigErrorsExit2(t *testing.T) {
	dir, err := os.MkdirTemp("", "kvc")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	short := filepath.Join(dir, "short.json")
	if err := os.WriteFile(short, []byte(`{"tokens":[{"name":"a","token":"tooshort","namespaces":["*"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--socket", filepath.Join(dir, "s"), "--nvme-dir", "", "--metrics-addr", "", "--dram-bytes", "16MiB", "--hbm", "off"}
	cases := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"short token", []string{"--tokens", short}, "shorter than 16"},
		{"missing tokens file", []string{"--tokens", filepath.Join(dir, "none.json")}, "tokens file"},
		{"bad certificate path", []string{"--addr", "127.0.0.1:0", "--tls-cert", filepath.Join(dir, "no.pem"), "--tls-key", filepath.Join(dir, "no.key")}, "tls cert"},
		{"tcp without tls", []string{"--addr", "127.0.0.1:0"}, "TCP needs"},
		{"hbm bytes without a GPU", []string{"--hbm", "auto", "--hbm-bytes", "1GiB"}, "hbm-bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append(append([]string{}, base...), tc.args...)
			// A configuration the daemon wrongly accepts would serve
			// forever: interrupt it, so the test fails instead of hanging.
			stop := time.AfterFunc(10*time.Second, func() { _ = syscall.Kill(os.Getpid(), syscall.SIGINT) })
			code := runServe(args, &out, &errb)
			stop.Stop()
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr:\n%s", code, errb.String())
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, errb.String())
			}
			if strings.Contains(errb.String(), "calls still running") {
				t.Errorf("a configuration error logs the shutdown timeout warning:\n%s", errb.String())
			}
		})
	}
}

// TestServeHelpOnce: -h prints the help once, on stdout, and no default
// twice; get's output flag reads -o, --out with one environment variable.
func TestServeHelpOnce(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runServe([]string{"-h"}, &out, &errb); code != 0 {
		t.Fatalf("serve -h: exit %d", code)
	}
	if errb.Len() != 0 {
		t.Errorf("serve -h wrote to stderr too:\n%s", errb.String())
	}
	if n := strings.Count(out.String(), "usage: kvtier serve"); n != 1 {
		t.Errorf("usage printed %d times", n)
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Count(line, "(default ") > 1 {
			t.Errorf("default given twice: %q", line)
		}
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"get", "-h"}, &out, &errb); code != 0 {
		t.Fatalf("get -h: exit %d", code)
	}
	help := out.String()
	if !strings.Contains(help, "-o, --out FILE") || strings.Contains(help, "--o ") || strings.Contains(help, "KVTIER_O]") {
		t.Errorf("get -h does not show -o, --out FILE with KVTIER_OUT alone:\n%s", help)
	}
}

// TestDefaultSocketIsAbsolute: without XDG_RUNTIME_DIR the default socket
// is still an absolute path, in a private directory.
func TestDefaultSocketIsAbsolute(t *testing.T) {
	for _, xdg := range []string{"", "relative/dir", "/run/user/1000"} {
		t.Setenv("XDG_RUNTIME_DIR", xdg)
		if s := defaultSocket(); !filepath.IsAbs(s) {
			t.Errorf("XDG_RUNTIME_DIR=%q: default socket %q is relative", xdg, s)
		}
	}
	dir := filepath.Join(t.TempDir(), "p")
	if err := ensurePrivateDir(dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("private dir: %v, %v; want mode 0700", fi.Mode(), err)
	}
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := ensurePrivateDir(open); err == nil {
		t.Error("a directory writable by others was accepted")
	}
}
