package main

import (
	"bytes"
	"flag"
	"github.com/kvtier/kvtier/codec"
	"strings"
	"testing"
)

func TestParseByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"4096", 4096, true},
		{"4GiB", 4 << 30, true},
		{"512MiB", 512 << 20, true},
		{"10G", 10 << 30, true},
		{"1.5GB", 1_500_000_000, true},
		{" 64 KiB ", 64 << 10, true},
		{"0", 0, true},
		{"-1", 0, false},
		{"lots", 0, false},
		{"9EiB", 0, false},
		{"", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseByteSize(tc.in)
			if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
				t.Errorf("parseByteSize(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
	if s := formatBytes(4 << 30); s != "4GiB" {
		t.Errorf("formatBytes = %q", s)
	}
}

func TestApplyEnv(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	a := fs.String("dram-bytes", "1", "")
	b := fs.String("socket", "s", "")
	c := fs.Bool("insecure", false, "")
	if err := fs.Parse([]string{"--socket", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KVTIER_DRAM_BYTES", "from-env")
	t.Setenv("KVTIER_SOCKET", "ignored: the flag wins")
	t.Setenv("KVTIER_INSECURE", "true")
	if err := applyEnv(fs); err != nil {
		t.Fatal(err)
	}
	if *a != "from-env" || *b != "from-flag" || !*c {
		t.Errorf("dram-bytes %q socket %q insecure %v", *a, *b, *c)
	}
	t.Setenv("KVTIER_INSECURE", "maybe")
	fs2 := flag.NewFlagSet("y", flag.ContinueOnError)
	fs2.Bool("insecure", false, "")
	if err := applyEnv(fs2); err == nil || !strings.Contains(err.Error(), "KVTIER_INSECURE") {
		t.Errorf("bad env value: %v", err)
	}
}

func TestServeUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runServe([]string{"-h"}, &out, &errb); code != 0 {
		t.Fatalf("serve -h: exit %d", code)
	}
	for _, want := range []string{"--dram-bytes", "[$KVTIER_DRAM_BYTES]", "--socket", "--tokens", "--metrics-addr", "(default 127.0.0.1:9464)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("serve -h lacks %q", want)
		}
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"extra argument", []string{"now"}},
		{"bad size", []string{"--dram-bytes", "big"}},
		{"tcp without tls", []string{"--addr", "127.0.0.1:0"}},
		{"bad hbm", []string{"--hbm", "maybe"}},
		{"bad log level", []string{"--log-level", "loud"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o, e bytes.Buffer
			if code := runServe(tc.args, &o, &e); code != 2 {
				t.Errorf("exit %d, want 2 (%s)", code, e.String())
			}
		})
	}
}

func TestDefaultDRAMBytes(t *testing.T) {
	if n := defaultDRAMBytes(); n <= 0 || n > defaultDRAMCap {
		t.Errorf("defaultDRAMBytes = %d, want in (0, 4GiB]", n)
	}
}

// TestCodecFlags covers --nvme-codec (default lossless) and --dram-codec
// (default raw).
func TestCodecFlags(t *testing.T) {
	cases := []struct {
		name, in string
		fallback codec.Mode
		wantErr  bool
		modes    map[string]codec.Mode // namespace → mode
	}{
		{"nvme unset default", "", codec.Lossless, false, map[string]codec.Mode{"any": codec.Lossless}},
		{"dram unset default", "", codec.Raw, false, map[string]codec.Mode{"any": codec.Raw}},
		{"one mode", "raw", codec.Lossless, false, map[string]codec.Mode{"any": codec.Raw}},
		{"overrides", "lossless,llama/70b=int4, tiny=int8", codec.Lossless, false,
			map[string]codec.Mode{"any": codec.Lossless, "llama/70b": codec.Int4, "tiny": codec.Int8}},
		{"nvme only overrides", "m=int3", codec.Lossless, false, map[string]codec.Mode{"m": codec.Int3, "other": codec.Lossless}},
		{"dram only overrides", "m=int8", codec.Raw, false, map[string]codec.Mode{"m": codec.Int8, "other": codec.Raw}},
		{"unknown mode", "zstd", codec.Lossless, true, nil},
		{"bad namespace", "lossless,a b=int4", codec.Lossless, true, nil},
		{"bare mode after first", "lossless,int4", codec.Lossless, true, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := codecModes{fallback: tc.fallback}
			if tc.in != "" {
				err := c.Set(tc.in)
				if (err != nil) != tc.wantErr {
					t.Fatalf("Set(%q) = %v, want error %v", tc.in, err, tc.wantErr)
				}
				if err != nil {
					return
				}
			}
			for ns, want := range tc.modes {
				if got := c.modeOf(ns); got != want {
					t.Errorf("modeOf(%q) = %v, want %v", ns, got, want)
				}
			}
		})
	}
}
