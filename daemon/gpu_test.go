package daemon_test

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvtier/kvtier/daemon"
)

var testGPUs = []daemon.GPUStats{{
	Index: 0, Name: "NVIDIA H100 80GB HBM3", PCIBusID: "00000000:3B:00.0",
	MemUsed: 3 << 30, MemTotal: 80 << 30, PCIeTxBytesPerSec: 1 << 30, PCIeRxBytesPerSec: 12 << 30,
	UtilGPU: 71, UtilMem: 40, TemperatureC: 54, PowerWatts: 312.5,
	LinkGen: 5, LinkWidth: 16, LinkMaxGen: 5, LinkMaxWidth: 16, LinkMaxBytesPerSec: 63.015e9,
}, {
	// An older driver: no throughput, temperature, power or utilization.
	Index: 1, Name: "old", MemUsed: 1 << 20, MemTotal: 16 << 30,
	PCIeTxBytesPerSec: -1, PCIeRxBytesPerSec: -1, UtilGPU: -1, UtilMem: -1, TemperatureC: -1, PowerWatts: -1,
}}

func TestGPUTelemetryInMetricsAndStats(t *testing.T) {
	var reads atomic.Int64
	src := daemon.GPUSourceFunc(func() ([]daemon.GPUStats, error) {
		reads.Add(1)
		return testGPUs, nil
	})
	e := startEnv(t, envOptions{opts: []daemon.Option{daemon.WithGPUs(src)}})
	want := `
# HELP kvtier_gpu_memory_used_bytes Device memory in use, all processes (NVML).
# TYPE kvtier_gpu_memory_used_bytes gauge
kvtier_gpu_memory_used_bytes{gpu="0",name="NVIDIA H100 80GB HBM3"} 3.221225472e+09
kvtier_gpu_memory_used_bytes{gpu="1",name="old"} 1.048576e+06
# HELP kvtier_gpu_pcie_throughput_bytes_per_second PCIe traffic over NVML's last 20 ms sample; direction tx is from the GPU, rx into it.
# TYPE kvtier_gpu_pcie_throughput_bytes_per_second gauge
kvtier_gpu_pcie_throughput_bytes_per_second{direction="rx",gpu="0",name="NVIDIA H100 80GB HBM3"} 1.2884901888e+10
kvtier_gpu_pcie_throughput_bytes_per_second{direction="tx",gpu="0",name="NVIDIA H100 80GB HBM3"} 1.073741824e+09
# HELP kvtier_gpu_utilization_ratio GPU (resource=gpu) and memory bandwidth (resource=memory) utilization over the driver's sample period, 0 to 1.
# TYPE kvtier_gpu_utilization_ratio gauge
kvtier_gpu_utilization_ratio{gpu="0",name="NVIDIA H100 80GB HBM3",resource="gpu"} 0.71
kvtier_gpu_utilization_ratio{gpu="0",name="NVIDIA H100 80GB HBM3",resource="memory"} 0.4
# HELP kvtier_gpu_temperature_celsius GPU die temperature.
# TYPE kvtier_gpu_temperature_celsius gauge
kvtier_gpu_temperature_celsius{gpu="0",name="NVIDIA H100 80GB HBM3"} 54
# HELP kvtier_gpu_power_watts Board power draw.
# TYPE kvtier_gpu_power_watts gauge
kvtier_gpu_power_watts{gpu="0",name="NVIDIA H100 80GB HBM3"} 312.5
# HELP kvtier_gpu_pcie_link_generation PCIe link generation now (state=current; it drops at idle) and at most (state=max).
# TYPE kvtier_gpu_pcie_link_generation gauge
kvtier_gpu_pcie_link_generation{gpu="0",name="NVIDIA H100 80GB HBM3",state="current"} 5
kvtier_gpu_pcie_link_generation{gpu="0",name="NVIDIA H100 80GB HBM3",state="max"} 5
# HELP kvtier_gpu_pcie_link_width PCIe link width in lanes now (state=current) and at most (state=max).
# TYPE kvtier_gpu_pcie_link_width gauge
kvtier_gpu_pcie_link_width{gpu="0",name="NVIDIA H100 80GB HBM3",state="current"} 16
kvtier_gpu_pcie_link_width{gpu="0",name="NVIDIA H100 80GB HBM3",state="max"} 16
# HELP kvtier_gpu_telemetry_up 1 when the last NVML reading succeeded, 0 when it failed.
# TYPE kvtier_gpu_telemetry_up gauge
kvtier_gpu_telemetry_up 1
`
	names := []string{"kvtier_gpu_memory_used_bytes", "kvtier_gpu_pcie_throughput_bytes_per_second", "kvtier_gpu_utilization_ratio",
		"kvtier_gpu_temperature_celsius", "kvtier_gpu_power_watts", "kvtier_gpu_pcie_link_generation", "kvtier_gpu_pcie_link_width", "kvtier_gpu_telemetry_up"}
	if err := testutil.GatherAndCompare(e.srv.Registry(), strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}

	st := stats(t, e.cl)
	if len(st.Gpus) != 2 || st.GpuTelemetryError != "" {
		t.Fatalf("Stats: %d GPUs, error %q; want 2 and none", len(st.Gpus), st.GpuTelemetryError)
	}
	g := st.Gpus[0]
	if g.Name != testGPUs[0].Name || g.MemoryUsedBytes != 3<<30 || g.MemoryTotalBytes != 80<<30 ||
		g.PcieRxBytesPerSecond != 12<<30 || g.TemperatureCelsius != 54 || g.PowerWatts != 312.5 ||
		g.PcieLinkGeneration != 5 || g.PcieLinkMaxWidth != 16 || g.GpuUtilizationPercent != 71 {
		t.Errorf("Stats GPU 0 = %+v", g)
	}
	if old := st.Gpus[1]; old.TemperatureCelsius != -1 || old.PowerWatts != -1 || old.GpuUtilizationPercent != -1 {
		t.Errorf("unknown readings of GPU 1 not -1: %+v", old)
	}
	// The scrape and the Stats call came within a second: one NVML reading.
	if n := reads.Load(); n != 1 {
		t.Errorf("%d NVML readings for one scrape and one Stats call, want 1 (cached)", n)
	}
}

func TestGPUTelemetryError(t *testing.T) {
	src := daemon.GPUSourceFunc(func() ([]daemon.GPUStats, error) { return nil, errors.New("nvmlInit: Driver Not Loaded") })
	e := startEnv(t, envOptions{opts: []daemon.Option{daemon.WithGPUs(src)}})
	want := `
# HELP kvtier_gpu_telemetry_up 1 when the last NVML reading succeeded, 0 when it failed.
# TYPE kvtier_gpu_telemetry_up gauge
kvtier_gpu_telemetry_up 0
`
	if err := testutil.GatherAndCompare(e.srv.Registry(), strings.NewReader(want), "kvtier_gpu_telemetry_up", "kvtier_gpu_memory_used_bytes"); err != nil {
		t.Error(err)
	}
	st := stats(t, e.cl)
	if len(st.Gpus) != 0 || !strings.Contains(st.GpuTelemetryError, "Driver Not Loaded") {
		t.Fatalf("Stats: %d GPUs, error %q", len(st.Gpus), st.GpuTelemetryError)
	}
}
