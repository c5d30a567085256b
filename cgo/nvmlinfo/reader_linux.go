//go:build cgo

package nvmlinfo

import (
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
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var libOpts []nvml.LibraryOption
	if o.path != "" {
		libOpts = append(libOpts, nvml.WithLibraryPath(o.path))
	}
	nvmlMu.Lock()
	defer nvmlMu.Unlock()
	lib := nvml.New(libOpts...)
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

func libName(p string) string {
	if p == "" {
		return "libnvidia-ml.so.1"
	}
	return p
}

// has reports whether the loaded library exports any of names. Every call
// below is guarded by it: go-nvml calls the C symbol directly, and a
// missing one would abort the process.
func (r *Reader) has(names ...string) bool {
	ext := r.lib.Extensions()
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
	t := Telemetry{UtilGPU: -1, UtilMem: -1}
	if !r.has("nvmlDeviceGetName") || !r.has("nvmlDeviceGetMemoryInfo") {
		return t, fmt.Errorf("%w: NVML lacks name or memory queries", ErrUnavailable)
	}
	name, ret := r.dev.GetName()
	if ret != nvml.SUCCESS {
		return t, fmt.Errorf("%w: nvmlDeviceGetName: %s", ErrUnavailable, ret.Error())
	}
	t.Name = name
	mem, ret := r.dev.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return t, fmt.Errorf("%w: nvmlDeviceGetMemoryInfo: %s", ErrUnavailable, ret.Error())
	}
	t.MemTotal, t.MemFree = int64(mem.Total), int64(mem.Free)
	if r.has("nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo_v2", "nvmlDeviceGetPciInfo") {
		if pci, ret := r.dev.GetPciInfo(); ret == nvml.SUCCESS {
			t.PCIBusID = cString(pci.BusId[:])
		}
	}
	t.PCIeGen = r.intQuery("nvmlDeviceGetCurrPcieLinkGeneration", r.dev.GetCurrPcieLinkGeneration)
	t.PCIeWidth = r.intQuery("nvmlDeviceGetCurrPcieLinkWidth", r.dev.GetCurrPcieLinkWidth)
	t.PCIeMaxGen = r.intQuery("nvmlDeviceGetMaxPcieLinkGeneration", r.dev.GetMaxPcieLinkGeneration)
	t.PCIeMaxWidth = r.intQuery("nvmlDeviceGetMaxPcieLinkWidth", r.dev.GetMaxPcieLinkWidth)
	t.LinkMaxBytesPerSec = LinkBandwidth(t.PCIeMaxGen, t.PCIeMaxWidth)
	if r.has("nvmlDeviceGetUtilizationRates") {
		if u, ret := r.dev.GetUtilizationRates(); ret == nvml.SUCCESS {
			t.UtilGPU, t.UtilMem = int(u.Gpu), int(u.Memory)
		}
	}
	return t, nil
}

func (r *Reader) intQuery(symbol string, f func() (int, nvml.Return)) int {
	if !r.has(symbol) {
		return 0
	}
	v, ret := f()
	if ret != nvml.SUCCESS {
		return 0
	}
	return v
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
