package gpulink

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLinkFromSysfs(t *testing.T) {
	root := t.TempDir()
	write := func(dev string, files map[string]string) {
		dir := filepath.Join(root, dev)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, v := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("0000:3b:00.0", map[string]string{"max_link_speed": "32.0 GT/s PCIe", "max_link_width": "16",
		"current_link_speed": "2.5 GT/s PCIe", "current_link_width": "16"})
	write("0000:5e:00.0", map[string]string{"max_link_speed": "Unknown", "max_link_width": "16"})
	tests := []struct {
		name, bus string
		wantGen   int
		ok        bool
	}{
		{"cuda style", "0000:3B:00.0", 5, true},
		{"nvml style", "00000000:3b:00.0", 5, true},
		{"unknown speed", "0000:5e:00.0", 0, false},
		{"absent", "0000:01:00.0", 0, false},
		{"no bus id", "", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := linkFromSysfs(root, tc.bus)
			if (err == nil) != tc.ok {
				t.Fatalf("linkFromSysfs(%q): %+v, %v", tc.bus, l, err)
			}
			if tc.ok && (l.MaxGen != tc.wantGen || l.MaxWidth != 16 || l.Gen != 1 || l.Source != "sysfs" || l.MaxBytesPerSec < 63e9) {
				t.Fatalf("link %+v", l)
			}
		})
	}
}
