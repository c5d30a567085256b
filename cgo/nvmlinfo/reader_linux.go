//go:build cgo

package nvmlinfo

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// nvmlMu serializes every go-nvml call: the library swaps package-global
// function variables when it loads and unloads.
var nvmlMu sync.Mutex

// Reader holds NVML open on one device, for repeated readings (the daemon's
// metrics). It is safe for concurrent use.
type Reader struct {
	lib    nvml.Interface // guarded by nvmlMu, like closed
	dev    nvml.Device
	closed bool
}

// Open initializes NVML and selects a device. The error wraps
// ErrUnavailable when there is no NVML library, it fails to initialize, or
// the device is not there.
func Open(opts ...Option) (*Reader, error) {
	o, lib := newLibrary(opts)
	nvmlMu.Lock()
	defer nvmlMu.Unlock()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
			return nil, fmt.Errorf("%w: no NVML library (%s)", ErrUnavailable, libName(o.path))
		}
		return nil, fmt.Errorf("%w: nvmlInit: %s", ErrUnavailable, ret.Error())
	}
	r := &Reader{lib: lib}
	dev, err := r.selectDevice(o)
	if err != nil {
		lib.Shutdown()
		return nil, err
	}
	r.dev = dev
	return r, nil
}

// newLibrary applies opts and returns them with the NVML library they
// name (not yet initialized).
func newLibrary(opts []Option) (options, nvml.Interface) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var libOpts []nvml.LibraryOption
	if o.path != "" {
		libOpts = append(libOpts, nvml.WithLibraryPath(o.path))
	}
	return o, nvml.New(libOpts...)
}

func libName(p string) string {
	if p == "" {
		return "libnvidia-ml.so.1"
	}
	return p
}

// has reports whether the loaded library exports any of names. Every call
// below is guarded by it: go-nvml calls the C symbol directly, and a
// missing one would abort the process.
func (r *Reader) has(names ...string) bool { return has(r.lib, names...) }

func has(lib nvml.Interface, names ...string) bool {
	ext := lib.Extensions()
	for _, n := range names {
		if ext.LookupSymbol(n) == nil {
			return true
		}
	}
	return false
}

func (r *Reader) selectDevice(o options) (nvml.Device, error) {
	if o.pciBusID != "" {
		if !r.has("nvmlDeviceGetHandleByPciBusId_v2", "nvmlDeviceGetHandleByPciBusId") {
			return nil, fmt.Errorf("%w: NVML cannot look devices up by PCI bus id", ErrUnavailable)
		}
		d, ret := r.lib.DeviceGetHandleByPciBusId(o.pciBusID)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("%w: no NVML device at %s: %s", ErrUnavailable, o.pciBusID, ret.Error())
		}
		return d, nil
	}
	if !r.has("nvmlDeviceGetCount_v2", "nvmlDeviceGetCount") || !r.has("nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex") {
		return nil, fmt.Errorf("%w: NVML lacks device enumeration", ErrUnavailable)
	}
	n, ret := r.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("%w: nvmlDeviceGetCount: %s", ErrUnavailable, ret.Error())
	}
	if o.index < 0 || o.index >= n {
		return nil, fmt.Errorf("%w: NVML device %d requested, %d present", ErrUnavailable, o.index, n)
	}
	d, ret := r.lib.DeviceGetHandleByIndex(o.index)
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("%w: nvmlDeviceGetHandleByIndex(%d): %s", ErrUnavailable, o.index, ret.Error())
	}
	return d, nil
}

// Read takes one reading. Fields the driver does not support are left at
// their "unknown" values; only a failure to read the name or memory is an
// error.
func (r *Reader) Read() (Telemetry, error) {
	nvmlMu.Lock()
	defer nvmlMu.Unlock()
	if r.closed {
		return Telemetry{}, ErrClosed
	}
	return readDevice(r.lib, r.dev)
}

// readDevice reads one device. Called with nvmlMu held.
func readDevice(lib nvml.Interface, dev nvml.Device) (Telemetry, error) {
	t := unknownTelemetry()
	has := func(names ...string) bool { return has(lib, names...) }
	if !has("nvmlDeviceGetName") || !has("nvmlDeviceGetMemoryInfo") {
		return t, fmt.Errorf("%w: NVML lacks name or memory queries", ErrUnavailable)
	}
	name, ret := dev.GetName()
	if ret != nvml.SUCCESS {
		return t, fmt.Errorf("%w: nvmlDeviceGetName: %s", ErrUnavailable, ret.Error())
	}
	t.Name = name
	mem, ret := dev.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return t, fmt.Errorf("%w: nvmlDeviceGetMemoryInfo: %s", ErrUnavailable, ret.Error())
	}
	t.MemTotal, t.MemFree, t.MemUsed = int64(mem.Total), int64(mem.Free), int64(mem.Used)
	if has("nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo_v2", "nvmlDeviceGetPciInfo") {
		if pci, ret := dev.GetPciInfo(); ret == nvml.SUCCESS {
			t.PCIBusID = cString(pci.BusId[:])
		}
	}
	intQuery := func(symbol string, f func() (int, nvml.Return)) int {
		if !has(symbol) {
			return 0
		}
		if v, ret := f(); ret == nvml.SUCCESS {
			return v
		}
		return 0
	}
	t.PCIeGen = intQuery("nvmlDeviceGetCurrPcieLinkGeneration", dev.GetCurrPcieLinkGeneration)
	t.PCIeWidth = intQuery("nvmlDeviceGetCurrPcieLinkWidth", dev.GetCurrPcieLinkWidth)
	t.PCIeMaxGen = intQuery("nvmlDeviceGetMaxPcieLinkGeneration", dev.GetMaxPcieLinkGeneration)
	t.PCIeMaxWidth = intQuery("nvmlDeviceGetMaxPcieLinkWidth", dev.GetMaxPcieLinkWidth)
	t.LinkMaxBytesPerSec = LinkBandwidth(t.PCIeMaxGen, t.PCIeMaxWidth)
	if has("nvmlDeviceGetUtilizationRates") {
		if u, ret := dev.GetUtilizationRates(); ret == nvml.SUCCESS {
			t.UtilGPU, t.UtilMem = int(u.Gpu), int(u.Memory)
		}
	}
	if has("nvmlDeviceGetPcieThroughput") {
		// KB/s (1024 bytes) over a 20 ms sample.
		if v, ret := dev.GetPcieThroughput(nvml.PCIE_UTIL_TX_BYTES); ret == nvml.SUCCESS {
			t.PCIeTxBytesPerSec = float64(v) * 1024
		}
		if v, ret := dev.GetPcieThroughput(nvml.PCIE_UTIL_RX_BYTES); ret == nvml.SUCCESS {
			t.PCIeRxBytesPerSec = float64(v) * 1024
		}
	}
	if has("nvmlDeviceGetTemperature") {
		if v, ret := dev.GetTemperature(nvml.TEMPERATURE_GPU); ret == nvml.SUCCESS {
			t.TemperatureC = int(v)
		}
	}
	if has("nvmlDeviceGetPowerUsage") {
		if v, ret := dev.GetPowerUsage(); ret == nvml.SUCCESS { // milliwatts
			t.PowerWatts = float64(v) / 1000
		}
	}
	return t, nil
}

// Monitor holds NVML open on every device, for repeated readings (the
// daemon's metrics and `kvtier stats`). It is safe for concurrent use.
type Monitor struct {
	lib    nvml.Interface // guarded by nvmlMu, like closed
	closed bool
}

// OpenMonitor initializes NVML. The error wraps ErrUnavailable when there
// is no NVML library or it fails to initialize.
func OpenMonitor(opts ...Option) (*Monitor, error) {
	o, lib := newLibrary(opts)
	return NewMonitor(lib, libName(o.path))
}

// NewMonitor initializes lib (a go-nvml Interface: the real library, or
// go-nvml's mock package in tests) and returns a Monitor over it; name is
// the library's name for errors.
func NewMonitor(lib nvml.Interface, name string) (*Monitor, error) {
	nvmlMu.Lock()
	defer nvmlMu.Unlock()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
			return nil, fmt.Errorf("%w: no NVML library (%s)", ErrUnavailable, name)
		}
		return nil, fmt.Errorf("%w: nvmlInit: %s", ErrUnavailable, ret.Error())
	}
	return &Monitor{lib: lib}, nil
}

// ReadAll reads every device, in NVML index order. A device that cannot
// be read is skipped; the error wraps ErrUnavailable only when none could.
func (m *Monitor) ReadAll() ([]Telemetry, error) {
	nvmlMu.Lock()
	defer nvmlMu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if !has(m.lib, "nvmlDeviceGetCount_v2", "nvmlDeviceGetCount") || !has(m.lib, "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex") {
		return nil, fmt.Errorf("%w: NVML lacks device enumeration", ErrUnavailable)
	}
	n, ret := m.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("%w: nvmlDeviceGetCount: %s", ErrUnavailable, ret.Error())
	}
	out := make([]Telemetry, 0, n)
	var errs []error
	for i := range n {
		dev, ret := m.lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			errs = append(errs, fmt.Errorf("nvmlDeviceGetHandleByIndex(%d): %s", i, ret.Error()))
			continue
		}
		t, err := readDevice(m.lib, dev)
		if err != nil {
			errs = append(errs, fmt.Errorf("device %d: %w", i, err))
			continue
		}
		t.Index = i
		out = append(out, t)
	}
	if len(out) == 0 && len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, errors.Join(errs...))
	}
	return out, nil
}

// Close shuts NVML down. Further reads return ErrClosed.
func (m *Monitor) Close() error {
	nvmlMu.Lock()
	defer nvmlMu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if ret := m.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("nvmlinfo: nvmlShutdown: %s", ret.Error())
	}
	return nil
}

func cString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

// Close shuts NVML down. Further reads return ErrClosed.
func (r *Reader) Close() error {
	nvmlMu.Lock()
	defer nvmlMu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if ret := r.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("nvmlinfo: nvmlShutdown: %s", ret.Error())
	}
	return nil
}
