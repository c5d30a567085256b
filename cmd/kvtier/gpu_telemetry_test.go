//go:build linux && cgo

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvtier/kvtier/cgo/nvmlinfo"
	"github.com/kvtier/kvtier/daemon"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/dram"
)

// mockH100 is go-nvml's mock of one H100 on a gen5 x16 link, reading
// 2 GiB/s TX and 8 GiB/s RX.
func mockH100() *mock.Interface {
	var pci nvml.PciInfo
	for i, c := range "00000000:3B:00.0" {
		pci.BusId[i] = int8(c)
	}
	dev := &mock.Device{
		GetNameFunc: func() (string, nvml.Return) { return "NVIDIA H100 80GB HBM3", nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: 80 << 30, Used: 20 << 30, Free: 60 << 30}, nvml.SUCCESS
		},
		GetPciInfoFunc: func() (nvml.PciInfo, nvml.Return) { return pci, nvml.SUCCESS },
		GetPcieThroughputFunc: func(c nvml.PcieUtilCounter) (uint32, nvml.Return) {
			if c == nvml.PCIE_UTIL_TX_BYTES {
				return 2 << 20, nvml.SUCCESS // KB/s
			}
			return 8 << 20, nvml.SUCCESS
		},
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: 88, Memory: 35}, nvml.SUCCESS
		},
		GetTemperatureFunc:            func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 61, nvml.SUCCESS },
		GetPowerUsageFunc:             func() (uint32, nvml.Return) { return 402000, nvml.SUCCESS },
		GetCurrPcieLinkGenerationFunc: func() (int, nvml.Return) { return 4, nvml.SUCCESS },
		GetCurrPcieLinkWidthFunc:      func() (int, nvml.Return) { return 16, nvml.SUCCESS },
		GetMaxPcieLinkGenerationFunc:  func() (int, nvml.Return) { return 5, nvml.SUCCESS },
		GetMaxPcieLinkWidthFunc:       func() (int, nvml.Return) { return 16, nvml.SUCCESS },
	}
	ext := &mock.ExtendedInterface{LookupSymbolFunc: func(string) error { return nil }}
	return &mock.Interface{
		InitFunc:                   func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:               func() nvml.Return { return nvml.SUCCESS },
		ExtensionsFunc:             func() nvml.ExtendedInterface { return ext },
		DeviceGetCountFunc:         func() (int, nvml.Return) { return 1, nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(int) (nvml.Device, nvml.Return) { return dev, nvml.SUCCESS },
	}
}

// TestGPUTelemetryEndToEnd: NVML (go-nvml's mock) → nvmlinfo.Monitor →
// the daemon's /metrics and Stats → `kvtier stats` and `kvtier stats --json`.
func TestGPUTelemetryEndToEnd(t *testing.T) {
	mon, err := nvmlinfo.NewMonitor(mockH100(), "mock")
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	arena, err := dram.New(8<<20, dram.WithChunkSize(64<<10), dram.WithHugePages(false))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := tiers.Open(context.Background(), tiers.Config{DRAM: arena, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "d.sock")
	if len(sock) > 100 {
		t.Skipf("socket path %s too long", sock)
	}
	srv, err := daemon.New(daemon.Config{Socket: sock, Logger: log, ShutdownTimeout: 5 * time.Second}, store,
		daemon.WithGPUs(gpuSource(mon)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatal(err)
	}

	want := `
# HELP kvtier_gpu_memory_total_bytes Device memory in total (NVML).
# TYPE kvtier_gpu_memory_total_bytes gauge
kvtier_gpu_memory_total_bytes{gpu="0",name="NVIDIA H100 80GB HBM3"} 8.589934592e+10
# HELP kvtier_gpu_pcie_link_max_bytes_per_second Per-direction PCIe bandwidth at the link's maximum generation and width.
# TYPE kvtier_gpu_pcie_link_max_bytes_per_second gauge
kvtier_gpu_pcie_link_max_bytes_per_second{gpu="0",name="NVIDIA H100 80GB HBM3"} 6.301538461538461e+10
# HELP kvtier_gpu_power_watts Board power draw.
# TYPE kvtier_gpu_power_watts gauge
kvtier_gpu_power_watts{gpu="0",name="NVIDIA H100 80GB HBM3"} 402
`
	if err := testutil.GatherAndCompare(srv.Registry(), strings.NewReader(want),
		"kvtier_gpu_memory_total_bytes", "kvtier_gpu_pcie_link_max_bytes_per_second", "kvtier_gpu_power_watts"); err != nil {
		t.Fatal(err)
	}

	var out, errb bytes.Buffer
	if code := runStats([]string{"--socket", sock}, &out, &errb); code != 0 {
		t.Fatalf("stats exit %d: %s", code, errb.String())
	}
	for _, w := range []string{"NVIDIA H100 80GB HBM3", "20.0/80.0 GiB", "2.15GB/s", "8.59GB/s", "88%", "35%", "61C", "402W", "gen4 x16 (gen5 x16)"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("stats output lacks %q:\n%s", w, out.String())
		}
	}
	out.Reset()
	if code := runStats([]string{"--socket", sock, "--json"}, &out, &errb); code != 0 {
		t.Fatalf("stats --json exit %d: %s", code, errb.String())
	}
	var js statsJSON
	if err := json.Unmarshal(out.Bytes(), &js); err != nil {
		t.Fatal(err)
	}
	if len(js.GPUs) != 1 {
		t.Fatalf("stats --json: %d GPUs, want 1: %s", len(js.GPUs), out.String())
	}
	g := js.GPUs[0]
	if g.MemoryUsedBytes != 20<<30 || g.PCIeRxBytesPerSec != 8<<30 || g.TemperatureC != 61 || g.PowerWatts != 402 ||
		g.LinkGen != 4 || g.LinkMaxGen != 5 || g.LinkMaxWidth != 16 || g.UtilGPUPercent != 88 {
		t.Errorf("stats --json GPU = %+v", g)
	}
}

func TestWriteGPUsUnknown(t *testing.T) {
	var b bytes.Buffer
	writeGPUs(&b, []gpuJSON{{Name: "old", PCIeTxBytesPerSec: -1, PCIeRxBytesPerSec: -1, UtilGPUPercent: -1, UtilMemPercent: -1, TemperatureC: -1, PowerWatts: -1}}, "")
	if got := b.String(); strings.Count(got, "n/a") != 8 {
		t.Errorf("unknown readings not printed as n/a:\n%s", got)
	}
	b.Reset()
	writeGPUs(&b, nil, "nvmlInit: Driver Not Loaded")
	if !strings.Contains(b.String(), "gpu telemetry: nvmlInit: Driver Not Loaded") {
		t.Errorf("telemetry error not printed: %q", b.String())
	}
}
