package gpu

import (
	"encoding/hex"
	"path/filepath"
	"slices"
	"time"
)

// Vendor names the driver API behind a Device.
type Vendor uint8

const (
	VendorAny  Vendor = iota // detect from the library (Open's default)
	VendorCUDA               // NVIDIA CUDA driver API, libcuda.so.1
	VendorHIP                // AMD HIP runtime, libamdhip64.so
)

func (v Vendor) String() string {
	switch v {
	case VendorCUDA:
		return "cuda"
	case VendorHIP:
		return "hip"
	}
	return "any"
}

// CopyDir is the direction of a copy.
type CopyDir uint8

// Copy directions (the shim's KVG_H2D, KVG_D2H, KVG_D2D).
const (
	H2D CopyDir = 1 // host to device
	D2H CopyDir = 2 // device to host
	D2D CopyDir = 3 // device to device
)

// DevPtr is an address in device memory.
type DevPtr uint64

// IPCHandle is an exported device allocation (CUipcMemHandle /
// hipIpcMemHandle_t): another process on the same host opens it with
// OpenIPCHandle and copies device to device.
type IPCHandle [64]byte

func (h IPCHandle) String() string { return hex.EncodeToString(h[:]) }

// Info describes an opened device.
type Info struct {
	Vendor        Vendor
	Ordinal       int
	Name          string
	PCIBusID      string // "0000:3b:00.0"; empty when the driver does not say
	TotalMem      int64
	DriverVersion int // e.g. 12040 for CUDA 12.4; 0 when unknown
	// Library is the file the driver was loaded from (resolved by the
	// loader: where a bare name like libamdhip64.so was found), or the
	// name passed to dlopen when the loader does not say.
	Library string
}

// Device is one GPU, bound once and usable from any goroutine: every call
// makes the device current on the calling OS thread itself.
//
// Host memory handed to the asynchronous copies (Stream.*Async) must lie
// outside the Go heap — memory from AllocHost, or an mmap'd region, ideally
// registered with RegisterHost — and stay valid until the stream is
// synchronized. The waiting copies (Stream.CopyH2D etc.) accept any memory.
type Device interface {
	Info() Info
	// MemInfo returns the device's free and total memory in bytes.
	MemInfo() (free, total int64, err error)
	// Alloc allocates n bytes of device memory (cuMemAlloc / hipMalloc).
	Alloc(n int64) (DevPtr, error)
	Free(p DevPtr) error
	// AllocHost allocates n bytes of pinned host memory, outside the Go
	// heap. The slice is valid until FreeHost.
	AllocHost(n int) ([]byte, error)
	FreeHost(b []byte) error
	// RegisterHost page-locks b (which must not be in the Go heap: an mmap'd
	// arena, for instance) so copies from and to it run at full link speed
	// without staging. Call unregister before unmapping b.
	RegisterHost(b []byte) (unregister func() error, err error)
	// NewStream creates a stream that does not synchronize with the default
	// stream, with its own pair of timing events.
	NewStream() (Stream, error)
	// NewEvent creates a timing event.
	NewEvent() (Event, error)
	// IPCHandle exports the allocation that contains p. ErrNotSupported
	// when the driver has no IPC entry points.
	IPCHandle(p DevPtr) (IPCHandle, error)
	// OpenIPCHandle maps an allocation exported by another process. CUDA
	// refuses handles exported by the calling process.
	OpenIPCHandle(h IPCHandle) (DevPtr, error)
	CloseIPCHandle(p DevPtr) error
	// Close releases the device (the CUDA primary context). Streams,
	// events and allocations should be released first; the driver frees
	// what is left when the last reference to the context goes.
	Close() error
}

// Stream is an ordered queue of copies. A Stream is used by one goroutine
// at a time; pool streams rather than sharing one.
type Stream interface {
	// CopyH2DAsync queues a copy of src to dst. src must be outside the Go
	// heap and stay untouched until Sync.
	CopyH2DAsync(dst DevPtr, src []byte) error
	// CopyD2HAsync queues a copy of len(dst) bytes from src into dst, which
	// must be outside the Go heap and not be read until Sync.
	CopyD2HAsync(dst []byte, src DevPtr) error
	// CopyD2DAsync queues a copy of n bytes between device addresses.
	CopyD2DAsync(dst, src DevPtr, n int64) error
	// CopyH2D copies src to dst and waits; src may be any memory. The
	// duration is the device time between events recorded around the copy.
	CopyH2D(dst DevPtr, src []byte) (time.Duration, error)
	// CopyD2H copies len(dst) bytes from src into dst and waits.
	CopyD2H(dst []byte, src DevPtr) (time.Duration, error)
	// CopyD2D copies n bytes and waits.
	CopyD2D(dst, src DevPtr, n int64) (time.Duration, error)
	// QueueRepeat queues count copies of the same n bytes in one call into
	// the driver (one cgo transition, one context bind), as benchmarks
	// need: at 64 KiB a copy crosses PCIe in about 1.2 µs, less than a
	// cgo call, a lock and a bind cost per copy. dir says which of dst,
	// host and src are used (H2D: host to dst; D2H: src to host; D2D: src
	// to dst, host nil). host must be outside the Go heap, at least n
	// bytes, and untouched until Sync.
	QueueRepeat(dir CopyDir, dst DevPtr, host []byte, src DevPtr, n int64, count int) error
	// Record records e on the stream.
	Record(e Event) error
	// Sync waits until every queued operation has finished.
	Sync() error
	Close() error
}

// Event marks a point in a stream.
type Event interface {
	// Sync waits until the event has completed.
	Sync() error
	// Since returns the device time from start to this event; both must
	// have been recorded and completed.
	Since(start Event) (time.Duration, error)
	Close() error
}

type options struct {
	path    string
	vendor  Vendor
	ordinal int
}

// Option configures Open.
type Option func(*options)

// WithLibraryPath loads exactly this library instead of searching the
// default names; the vendor is detected from its symbols unless WithVendor
// says otherwise. Tests use it to load the fake device library.
func WithLibraryPath(path string) Option { return func(o *options) { o.path = path } }

// WithVendor restricts Open to one vendor's library names.
func WithVendor(v Vendor) Option { return func(o *options) { o.vendor = v } }

// WithOrdinal selects the device by the driver's ordinal (default 0).
func WithOrdinal(n int) Option { return func(o *options) { o.ordinal = n } }

// Library names tried by Open, in order.
var (
	cudaLibraries = []string{"libcuda.so.1", "libcuda.so"}
	hipLibraries  = []string{"libamdhip64.so", "libamdhip64.so.7", "libamdhip64.so.6", "libamdhip64.so.5"}
)

// hipCandidates returns the HIP runtime paths Open tries: the loader's
// search path first (the names above), then the install locations ROCm
// uses and keeps off the loader path: $ROCM_PATH/lib, $HIP_PATH/lib,
// /opt/rocm/lib. getenv is os.Getenv outside tests.
func hipCandidates(getenv func(string) string) []string {
	out := slices.Clone(hipLibraries)
	var dirs []string
	for _, env := range []string{"ROCM_PATH", "HIP_PATH"} {
		if v := getenv(env); v != "" {
			dirs = append(dirs, filepath.Join(v, "lib"))
		}
	}
	dirs = append(dirs, "/opt/rocm/lib")
	seen := map[string]bool{}
	for _, d := range dirs {
		if seen[d] {
			continue
		}
		seen[d] = true
		for _, n := range hipLibraries {
			out = append(out, filepath.Join(d, n))
		}
	}
	return out
}

// msDuration converts an event-timed millisecond figure.
func msDuration(ms float32) time.Duration {
	return time.Duration(float64(ms) * float64(time.Millisecond))
}
