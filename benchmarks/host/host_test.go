package host

import (
	"runtime"
	"strings"
	"testing"
)

func TestDescribe(t *testing.T) {
	in := Describe(t.TempDir())
	if in.Cores != runtime.NumCPU() || in.OS == "" {
		t.Fatalf("cores %d, os %q", in.Cores, in.OS)
	}
	if in.Disk == nil || in.Disk.Dir == "" {
		t.Fatalf("no disk description: %+v", in.Disk)
	}
	if runtime.GOOS == "linux" {
		if in.MemBytes <= 0 || in.Disk.FileSystem == "" {
			t.Fatalf("linux host without memory or file system: %+v %+v", in, *in.Disk)
		}
	}
	s := in.String()
	if !strings.Contains(s, "cores") || !strings.Contains(s, in.Disk.Dir) {
		t.Fatalf("summary %q", s)
	}
	if Describe("").Disk != nil {
		t.Fatal("a disk described without a directory")
	}
}
