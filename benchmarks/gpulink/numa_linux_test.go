package gpulink_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kvtier/kvtier/benchmarks/gpulink"
	"github.com/kvtier/kvtier/cgo/gpu/gputest"
)

// TestHostBuffersOnGPUNode: sysfs says the GPU (the fake's bus
// 0000:10:00.0) sits on NUMA node 1, whose CPUs are this thread's first
// allowed CPU; the host buffers are allocated there and the report says so.
// Without the sysfs entry they are not placed, and the report says that.
func TestHostBuffersOnGPUNode(t *testing.T) {
	var mine unix.CPUSet
	if err := unix.SchedGetaffinity(0, &mine); err != nil {
		t.Skipf("sched_getaffinity: %v", err)
	}
	cpu := -1
	for c := 0; c < 1024 && cpu < 0; c++ {
		if mine.IsSet(c) {
			cpu = c
		}
	}
	if cpu < 0 {
		t.Skip("no allowed CPU found")
	}
	root := t.TempDir()
	write := func(path, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "pci", "0000:10:00.0", "numa_node"), "1\n")
	write(filepath.Join(root, "node", "node1", "cpulist"), strconv.Itoa(cpu)+"\n")
	cfg := gpulink.Config{Sizes: []int64{64 << 10}, Directions: []gpulink.Direction{gpulink.H2D}, LatencyIters: 2, BandwidthBytes: 1 << 20, Warmup: 1}
	for _, tc := range []struct {
		name       string
		pci        string
		gpu, host  int
		tableWants string
	}{
		{"placed", filepath.Join(root, "pci"), 1, 1, "buffers on NUMA node 1, the GPU's"},
		{"unknown", filepath.Join(root, "none"), -1, -1, "NUMA node unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer gpulink.SetSysfs(tc.pci, filepath.Join(root, "node"))()
			f := gputest.BuildFake(t)
			dev := f.Open(t)
			rep, err := gpulink.Measure(context.Background(), dev, gpulink.Link{}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if rep.GPUNUMANode != tc.gpu || rep.HostNUMANode != tc.host {
				t.Fatalf("GPU node %d, host node %d; want %d and %d", rep.GPUNUMANode, rep.HostNUMANode, tc.gpu, tc.host)
			}
			var b bytes.Buffer
			if err := rep.WriteTable(&b, nil); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(b.String(), tc.tableWants) {
				t.Errorf("table lacks %q:\n%s", tc.tableWants, b.String())
			}
		})
	}
}

func TestParseCPUListViaNode(t *testing.T) {
	root := t.TempDir()
	for _, tc := range []struct {
		list string
		ok   bool
	}{{"0", true}, {"0-1", true}, {"", false}, {"x", false}, {"3-1", false}} {
		dir := filepath.Join(root, "node", "node0")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cpulist"), []byte(tc.list), 0o644); err != nil {
			t.Fatal(err)
		}
		restore := gpulink.SetSysfs(root, filepath.Join(root, "node"))
		ran := false
		got := gpulink.OnNode(0, func() { ran = true })
		restore()
		if got != tc.ok || ran != tc.ok {
			t.Errorf("cpulist %q: onNode = %v (fn ran %v), want %v", tc.list, got, ran, tc.ok)
		}
	}
}
