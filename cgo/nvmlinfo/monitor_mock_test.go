//go:build linux && cgo

package nvmlinfo_test

import (
	"errors"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"

	"github.com/kvtier/kvtier/cgo/nvmlinfo"
)

// mockGPU is what one mocked device reports.
type mockGPU struct {
	name             string
	busID            string
	total, used      uint64
	txKBps, rxKBps   uint32
	utilGPU, utilMem uint32
	tempC            uint32
	powerMW          uint32
	gen, width       int
	maxGen, maxWidth int
}

func (g mockGPU) device() *mock.Device {
	var pci nvml.PciInfo
	for i := range len(g.busID) {
		pci.BusId[i] = int8(g.busID[i])
	}
	return &mock.Device{
		GetNameFunc: func() (string, nvml.Return) { return g.name, nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: g.total, Used: g.used, Free: g.total - g.used}, nvml.SUCCESS
		},
		GetPciInfoFunc: func() (nvml.PciInfo, nvml.Return) { return pci, nvml.SUCCESS },
		GetPcieThroughputFunc: func(c nvml.PcieUtilCounter) (uint32, nvml.Return) {
			if c == nvml.PCIE_UTIL_TX_BYTES {
				return g.txKBps, nvml.SUCCESS
			}
			return g.rxKBps, nvml.SUCCESS
		},
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: g.utilGPU, Memory: g.utilMem}, nvml.SUCCESS
		},
		GetTemperatureFunc: func(s nvml.TemperatureSensors) (uint32, nvml.Return) {
			if s != nvml.TEMPERATURE_GPU {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return g.tempC, nvml.SUCCESS
		},
		GetPowerUsageFunc:             func() (uint32, nvml.Return) { return g.powerMW, nvml.SUCCESS },
		GetCurrPcieLinkGenerationFunc: func() (int, nvml.Return) { return g.gen, nvml.SUCCESS },
		GetCurrPcieLinkWidthFunc:      func() (int, nvml.Return) { return g.width, nvml.SUCCESS },
		GetMaxPcieLinkGenerationFunc:  func() (int, nvml.Return) { return g.maxGen, nvml.SUCCESS },
		GetMaxPcieLinkWidthFunc:       func() (int, nvml.Return) { return g.maxWidth, nvml.SUCCESS },
	}
}

// mockNVML is go-nvml's mock Interface over devs; symbols in missing are
// reported absent by LookupSymbol, as an older driver would.
func mockNVML(devs []nvml.Device, missing ...string) *mock.Interface {
	ext := &mock.ExtendedInterface{LookupSymbolFunc: func(s string) error {
		for _, m := range missing {
			if s == m {
				return errors.New("symbol not found")
			}
		}
		return nil
	}}
	return &mock.Interface{
		InitFunc:           func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:       func() nvml.Return { return nvml.SUCCESS },
		ExtensionsFunc:     func() nvml.ExtendedInterface { return ext },
		DeviceGetCountFunc: func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i < 0 || i >= len(devs) {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return devs[i], nvml.SUCCESS
		},
	}
}

var (
	h100 = mockGPU{name: "NVIDIA H100 80GB HBM3", busID: "00000000:3B:00.0", total: 80 << 30, used: 3 << 30,
		txKBps: 1 << 20, rxKBps: 12 << 20, utilGPU: 71, utilMem: 40, tempC: 54, powerMW: 312500,
		gen: 5, width: 16, maxGen: 5, maxWidth: 16}
	idle = mockGPU{name: "NVIDIA H100 80GB HBM3", busID: "00000000:BB:00.0", total: 80 << 30, used: 1 << 20,
		gen: 1, width: 16, maxGen: 5, maxWidth: 16, tempC: 31, powerMW: 69000}
)

func TestMonitorWithGoNVMLMock(t *testing.T) {
	m, err := nvmlinfo.NewMonitor(mockNVML([]nvml.Device{h100.device(), idle.device()}), "mock")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got, err := m.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := []nvmlinfo.Telemetry{{
		Index: 0, Name: h100.name, PCIBusID: h100.busID,
		MemTotal: 80 << 30, MemUsed: 3 << 30, MemFree: 77 << 30,
		PCIeTxBytesPerSec: 1 << 30, PCIeRxBytesPerSec: 12 << 30,
		UtilGPU: 71, UtilMem: 40, TemperatureC: 54, PowerWatts: 312.5,
		PCIeGen: 5, PCIeWidth: 16, PCIeMaxGen: 5, PCIeMaxWidth: 16,
		LinkMaxBytesPerSec: nvmlinfo.LinkBandwidth(5, 16),
	}, {
		Index: 1, Name: idle.name, PCIBusID: idle.busID,
		MemTotal: 80 << 30, MemUsed: 1 << 20, MemFree: 80<<30 - 1<<20,
		PCIeTxBytesPerSec: 0, PCIeRxBytesPerSec: 0,
		UtilGPU: 0, UtilMem: 0, TemperatureC: 31, PowerWatts: 69,
		PCIeGen: 1, PCIeWidth: 16, PCIeMaxGen: 5, PCIeMaxWidth: 16,
		LinkMaxBytesPerSec: nvmlinfo.LinkBandwidth(5, 16),
	}}
	if len(got) != len(want) {
		t.Fatalf("%d devices, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("device %d:\ngot  %+v\nwant %+v", i, got[i], want[i])
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReadAll(); !errors.Is(err, nvmlinfo.ErrClosed) {
		t.Fatalf("ReadAll after Close: %v, want ErrClosed", err)
	}
}

// An older driver lacks some queries: their fields say "unknown" (-1 or 0)
// and nothing calls the missing symbol.
func TestMonitorMissingQueries(t *testing.T) {
	dev := h100.device()
	lib := mockNVML([]nvml.Device{dev}, "nvmlDeviceGetPcieThroughput", "nvmlDeviceGetPowerUsage",
		"nvmlDeviceGetTemperature", "nvmlDeviceGetMaxPcieLinkGeneration")
	m, err := nvmlinfo.NewMonitor(lib, "mock")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got, err := m.ReadAll()
	if err != nil || len(got) != 1 {
		t.Fatalf("ReadAll = %v, %v", got, err)
	}
	g := got[0]
	if g.PCIeTxBytesPerSec != -1 || g.PCIeRxBytesPerSec != -1 || g.PowerWatts != -1 || g.TemperatureC != -1 {
		t.Errorf("unsupported queries not reported unknown: %+v", g)
	}
	if g.PCIeMaxGen != 0 || g.LinkMaxBytesPerSec != 0 {
		t.Errorf("link maximum without the max-generation query: %+v", g)
	}
	for name, n := range map[string]int{
		"GetPcieThroughput": len(dev.GetPcieThroughputCalls()), "GetPowerUsage": len(dev.GetPowerUsageCalls()),
		"GetTemperature": len(dev.GetTemperatureCalls()), "GetMaxPcieLinkGeneration": len(dev.GetMaxPcieLinkGenerationCalls()),
	} {
		if n != 0 {
			t.Errorf("%s called %d times although the library lacks it", name, n)
		}
	}
}

func TestMonitorUnavailable(t *testing.T) {
	lib := mockNVML(nil)
	lib.InitFunc = func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }
	if _, err := nvmlinfo.NewMonitor(lib, "mock"); !errors.Is(err, nvmlinfo.ErrUnavailable) {
		t.Fatalf("NewMonitor with the driver not loaded: %v, want ErrUnavailable", err)
	}
	// A device that fails to read is skipped; none readable is unavailable.
	bad := &mock.Device{GetNameFunc: func() (string, nvml.Return) { return "", nvml.ERROR_GPU_IS_LOST }}
	m, err := nvmlinfo.NewMonitor(mockNVML([]nvml.Device{bad}), "mock")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.ReadAll(); !errors.Is(err, nvmlinfo.ErrUnavailable) {
		t.Fatalf("ReadAll with a lost GPU: %v, want ErrUnavailable", err)
	}
	m2, _ := nvmlinfo.NewMonitor(mockNVML([]nvml.Device{bad, idle.device()}), "mock")
	defer m2.Close()
	if got, err := m2.ReadAll(); err != nil || len(got) != 1 || got[0].Index != 1 {
		t.Fatalf("ReadAll with one lost GPU of two = %+v, %v; want device 1 alone", got, err)
	}
}
