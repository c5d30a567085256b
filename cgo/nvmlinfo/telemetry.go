package nvmlinfo

// Telemetry is one reading of a GPU.
type Telemetry struct {
	Name     string
	PCIBusID string // as NVML prints it, e.g. "00000000:3B:00.0"; empty when unknown
	MemTotal int64  // bytes
	MemFree  int64  // bytes
	// The PCIe link now (it trains down at idle) and at most (the lower of
	// what the GPU and its slot support). 0 when the driver cannot say.
	PCIeGen, PCIeWidth       int
	PCIeMaxGen, PCIeMaxWidth int
	// LinkMaxBytesPerSec is LinkBandwidth(PCIeMaxGen, PCIeMaxWidth): the
	// per-direction maximum of the host link. 0 when unknown.
	LinkMaxBytesPerSec float64
	// Utilization in percent over the driver's last sample period; -1 when
	// not supported.
	UtilGPU, UtilMem int

	// Index is the device's NVML index (ReadAll; 0 for Read).
	Index int
	// MemUsed is the device memory in use, all processes (bytes).
	MemUsed int64
	// PCIe traffic over NVML's last 20 ms sample, in bytes per second,
	// TX from the GPU and RX into it; -1 when not supported.
	PCIeTxBytesPerSec, PCIeRxBytesPerSec float64
	// TemperatureC is the GPU die temperature; -1 when not supported.
	TemperatureC int
	// PowerWatts is the board's power draw; -1 when not supported.
	PowerWatts float64
}

// unknownTelemetry is a reading before any query: every optional field
// says "not supported".
func unknownTelemetry() Telemetry {
	return Telemetry{UtilGPU: -1, UtilMem: -1, PCIeTxBytesPerSec: -1, PCIeRxBytesPerSec: -1, TemperatureC: -1, PowerWatts: -1}
}

// laneBytesPerSec is the per-direction data rate of one lane after line
// encoding: 8b/10b for gen 1-2, 128b/130b for gen 3-5, 242/256 FLIT for gen 6.
var laneBytesPerSec = [...]float64{
	1: 2.5e9 * 8 / 10 / 8,
	2: 5e9 * 8 / 10 / 8,
	3: 8e9 * 128 / 130 / 8,
	4: 16e9 * 128 / 130 / 8,
	5: 32e9 * 128 / 130 / 8,
	6: 64e9 * 242 / 256 / 8,
}

// LinkBandwidth returns the per-direction bandwidth in bytes per second of
// a PCIe link of generation gen and width lanes; 0 for an unknown generation
// or width.
func LinkBandwidth(gen, width int) float64 {
	if gen <= 0 || gen >= len(laneBytesPerSec) || width <= 0 {
		return 0
	}
	return laneBytesPerSec[gen] * float64(width)
}

type options struct {
	path     string
	index    int
	pciBusID string
}

// Option configures Open and Read.
type Option func(*options)

// WithLibraryPath loads this NVML library instead of libnvidia-ml.so.1.
func WithLibraryPath(p string) Option { return func(o *options) { o.path = p } }

// WithIndex selects the device by NVML index (default 0).
func WithIndex(i int) Option { return func(o *options) { o.index = i } }

// WithPCIBusID selects the device by PCI bus id ("0000:3b:00.0"), the way
// to find the NVML twin of a CUDA device. It takes precedence over WithIndex.
func WithPCIBusID(id string) Option { return func(o *options) { o.pciBusID = id } }

// ReadAll opens NVML, reads every device once and closes NVML: the host
// description benchmarks print. The error wraps ErrUnavailable when there
// is no NVML (no NVIDIA driver, a build without cgo).
func ReadAll(opts ...Option) ([]Telemetry, error) {
	m, err := OpenMonitor(opts...)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	return m.ReadAll()
}

// Read opens NVML, reads the selected device once and closes NVML.
func Read(opts ...Option) (Telemetry, error) {
	r, err := Open(opts...)
	if err != nil {
		return Telemetry{}, err
	}
	defer r.Close()
	return r.Read()
}
