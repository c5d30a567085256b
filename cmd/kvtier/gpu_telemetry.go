package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/kvtier/kvtier/cgo/nvmlinfo"
	"github.com/kvtier/kvtier/daemon"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// GPU telemetry: serve hands NVML readings to the daemon (kvtier_gpu_* in
// /metrics, the gpus of Stats); `kvtier stats` prints them.

// gpuReader is what the daemon's GPU source reads: nvmlinfo's Monitor.
type gpuReader interface {
	ReadAll() ([]nvmlinfo.Telemetry, error)
}

// gpuSource adapts an NVML monitor to the daemon's GPUSource.
func gpuSource(r gpuReader) daemon.GPUSource {
	return daemon.GPUSourceFunc(func() ([]daemon.GPUStats, error) {
		ts, err := r.ReadAll()
		if err != nil {
			return nil, err
		}
		out := make([]daemon.GPUStats, len(ts))
		for i, t := range ts {
			out[i] = daemon.GPUStats{
				Index: t.Index, Name: t.Name, PCIBusID: t.PCIBusID,
				MemUsed: t.MemUsed, MemTotal: t.MemTotal,
				PCIeTxBytesPerSec: t.PCIeTxBytesPerSec, PCIeRxBytesPerSec: t.PCIeRxBytesPerSec,
				UtilGPU: t.UtilGPU, UtilMem: t.UtilMem, TemperatureC: t.TemperatureC, PowerWatts: t.PowerWatts,
				LinkGen: t.PCIeGen, LinkWidth: t.PCIeWidth, LinkMaxGen: t.PCIeMaxGen, LinkMaxWidth: t.PCIeMaxWidth,
				LinkMaxBytesPerSec: t.LinkMaxBytesPerSec,
			}
		}
		return out, nil
	})
}

// openGPUTelemetry opens NVML for the daemon. No NVML (no NVIDIA driver, a
// build without cgo) is not an error: the daemon runs without GPU series.
// The returned close function is never nil.
func openGPUTelemetry(log *slog.Logger) (daemon.Option, func()) {
	m, err := nvmlinfo.OpenMonitor()
	if err != nil {
		if errors.Is(err, nvmlinfo.ErrUnavailable) {
			log.Info("kvtier serve: no NVML; no GPU telemetry", "reason", err)
		} else {
			log.Warn("kvtier serve: NVML failed; no GPU telemetry", "err", err)
		}
		return nil, func() {}
	}
	return daemon.WithGPUs(gpuSource(m)), func() { _ = m.Close() }
}

// gpuJSON is one GPU in `kvtier stats --json`. Signed fields are -1 when
// the driver does not support the query.
type gpuJSON struct {
	Index                 uint32  `json:"index"`
	Name                  string  `json:"name"`
	PCIBusID              string  `json:"pci_bus_id,omitempty"`
	MemoryUsedBytes       uint64  `json:"memory_used_bytes"`
	MemoryTotalBytes      uint64  `json:"memory_total_bytes"`
	PCIeTxBytesPerSec     float64 `json:"pcie_tx_bytes_per_second"`
	PCIeRxBytesPerSec     float64 `json:"pcie_rx_bytes_per_second"`
	UtilGPUPercent        int32   `json:"gpu_utilization_percent"`
	UtilMemPercent        int32   `json:"memory_utilization_percent"`
	TemperatureC          int32   `json:"temperature_celsius"`
	PowerWatts            float64 `json:"power_watts"`
	LinkGen               uint32  `json:"pcie_link_generation"`
	LinkWidth             uint32  `json:"pcie_link_width"`
	LinkMaxGen            uint32  `json:"pcie_link_max_generation"`
	LinkMaxWidth          uint32  `json:"pcie_link_max_width"`
	LinkMaxBytesPerSecond float64 `json:"pcie_link_max_bytes_per_second"`
}

func gpusFromProto(gs []*pb.GpuDeviceTelemetry) []gpuJSON {
	out := make([]gpuJSON, 0, len(gs))
	for _, g := range gs {
		out = append(out, gpuJSON{
			Index: g.GetIndex(), Name: g.GetName(), PCIBusID: g.GetPciBusId(),
			MemoryUsedBytes: g.GetMemoryUsedBytes(), MemoryTotalBytes: g.GetMemoryTotalBytes(),
			PCIeTxBytesPerSec: g.GetPcieTxBytesPerSecond(), PCIeRxBytesPerSec: g.GetPcieRxBytesPerSecond(),
			UtilGPUPercent: g.GetGpuUtilizationPercent(), UtilMemPercent: g.GetMemoryUtilizationPercent(),
			TemperatureC: g.GetTemperatureCelsius(), PowerWatts: g.GetPowerWatts(),
			LinkGen: g.GetPcieLinkGeneration(), LinkWidth: g.GetPcieLinkWidth(),
			LinkMaxGen: g.GetPcieLinkMaxGeneration(), LinkMaxWidth: g.GetPcieLinkMaxWidth(),
			LinkMaxBytesPerSecond: g.GetPcieLinkMaxBytesPerSecond(),
		})
	}
	return out
}

// writeGPUs prints the GPU table of `kvtier stats`: nothing without GPUs,
// the reason when telemetry failed.
func writeGPUs(w io.Writer, gs []gpuJSON, telemetryErr string) {
	if telemetryErr != "" {
		fmt.Fprintf(w, "gpu telemetry: %s\n", telemetryErr)
	}
	if len(gs) == 0 {
		return
	}
	fmt.Fprintf(w, "%-3s %-24s %17s %9s %9s %5s %5s %6s %8s %14s\n", "GPU", "NAME", "MEM USED/TOTAL", "PCIE TX", "PCIE RX", "UTIL", "MEM", "TEMP", "POWER", "LINK (MAX)")
	for _, g := range gs {
		fmt.Fprintf(w, "%-3d %-24s %17s %9s %9s %5s %5s %6s %8s %14s\n", g.Index, g.Name,
			fmt.Sprintf("%.1f/%.1f GiB", float64(g.MemoryUsedBytes)/(1<<30), float64(g.MemoryTotalBytes)/(1<<30)),
			rate(g.PCIeTxBytesPerSec), rate(g.PCIeRxBytesPerSec),
			orNA(g.UtilGPUPercent >= 0, fmt.Sprintf("%d%%", g.UtilGPUPercent)),
			orNA(g.UtilMemPercent >= 0, fmt.Sprintf("%d%%", g.UtilMemPercent)),
			orNA(g.TemperatureC >= 0, fmt.Sprintf("%dC", g.TemperatureC)),
			orNA(g.PowerWatts >= 0, fmt.Sprintf("%.0fW", g.PowerWatts)),
			link(g))
	}
}

// rate prints bytes per second in GB/s; n/a when unknown.
func rate(v float64) string {
	if v < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fGB/s", v/1e9)
}

func orNA(ok bool, s string) string {
	if !ok {
		return "n/a"
	}
	return s
}

// link prints "gen5 x16 (gen5 x16)": the link now, and its maximum.
func link(g gpuJSON) string {
	part := func(gen, width uint32) string {
		if gen == 0 || width == 0 {
			return "n/a"
		}
		return fmt.Sprintf("gen%d x%d", gen, width)
	}
	return part(g.LinkGen, g.LinkWidth) + " (" + part(g.LinkMaxGen, g.LinkMaxWidth) + ")"
}
