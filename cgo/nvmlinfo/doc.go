// Package nvmlinfo reads GPU telemetry through NVML (go-nvml): device name,
// memory total, used and free, PCIe generation and width (current and
// maximum), the link's maximum bandwidth, PCIe TX/RX throughput, GPU and
// memory utilization, temperature and power.
//
// Reader reads one device (gpulink, matched by PCI bus id); Monitor reads
// every device (the daemon's kvtier_gpu_* metrics and `kvtier stats`);
// ReadAll is the one-shot host description benchmarks print. NewMonitor
// takes any go-nvml Interface, so tests run on go-nvml's mock package.
//
// No NVML library (no NVIDIA driver, a CGO_ENABLED=0 build, another OS) is
// not an error condition for callers: Open and Read return an error wrapping
// ErrUnavailable, which means "no NVIDIA GPU telemetry here".
//
// Caveats:
//   - go-nvml keeps package-global state and loads libnvidia-ml.so.1 with
//     RTLD_GLOBAL, binding its calls to the first library loaded; all NVML
//     calls in this package are serialized, and a process should use one
//     NVML library path.
//   - Every query beyond nvmlInit is checked with dlsym first, so an older
//     driver that lacks an entry point yields a zero field, never a crash.
//   - LinkMaxBytesPerSec is the raw per-direction rate of the link at its
//     maximum generation and width (after line encoding, before packet
//     overhead): what "link maximum" means in kvtier's reports. The current
//     generation is usually lower at idle; GPUs retrain under load.
//   - PCIe throughput is NVML's own 20 ms sample per direction, so each
//     ReadAll takes about 40 ms per device; callers cache readings.
//   - Match a CUDA device to its NVML twin by PCI bus id (WithPCIBusID):
//     CUDA's device order need not match NVML's.
package nvmlinfo
