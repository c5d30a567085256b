package gputest

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kvtier/kvtier/cgo/gpu"
)

//go:embed testdata/fakegpu.c
var fakeSource []byte

// Flag selects a variant of the fake library: symbols it does not export.
type Flag string

// Variants.
const (
	// NoCUDA exports only the HIP runtime symbols.
	NoCUDA Flag = "no-cuda"
	// NoHIP exports only the CUDA driver symbols.
	NoHIP Flag = "no-hip"
	// NoV2 drops the _v2 names of the CUDA functions whose _v2 kept the
	// ABI, so the binding must fall back to the unversioned names.
	NoV2 Flag = "no-v2"
	// OmitAlloc drops cuMemAlloc_v2 and hipMalloc: a required symbol is
	// missing (the legacy 32-bit cuMemAlloc is still there and must not
	// be used).
	OmitAlloc Flag = "omit-alloc"
	// NoOptional drops IPC, error names, driver version and PCI bus id.
	NoOptional Flag = "no-optional"
)

// hidden lists, per variant, the symbols (version-script patterns) the
// linked library does not export.
var hidden = map[Flag][]string{
	NoCUDA: {"cu*"},
	NoHIP:  {"hip*"},
	NoV2: {"cuDevicePrimaryCtxRelease_v2", "cuMemHostRegister_v2", "cuStreamDestroy_v2",
		"cuEventDestroy_v2", "cuEventElapsedTime_v2", "cuIpcOpenMemHandle_v2"},
	OmitAlloc: {"cuMemAlloc_v2", "hipMalloc"},
	NoOptional: {"cuDriverGetVersion", "cuDeviceGetPCIBusId", "cuIpc*", "cuGetErrorName",
		"hipDriverGetVersion", "hipDeviceGetPCIBusId", "hipIpc*", "hipGetErrorName"},
}

// Status codes the fake returns (CUDA and HIP numbering).
const (
	CodeInvalidValue   = 1
	CodeOutOfMemory    = 2
	CodeNotInitialized = 3
	CodeNoDevice       = 100
	CodeInvalidContext = 201
	CodeIllegalAddress = 700
	// CUDA: CUDA_ERROR_DEVICE_UNAVAILABLE (exclusive-process mode) and
	// CUDA_ERROR_SYSTEM_DRIVER_MISMATCH; HIP: hipErrorInsufficientDriver.
	CodeDeviceUnavailable    = 46
	CodeSystemDriverMismatch = 803
	CodeInsufficientDriver   = 35
)

// DefaultMemory is the memory of each fake device unless SetMemory says
// otherwise; BuildFake starts every fake with one device of this size.
const DefaultMemory = 256 << 20

// Fake is a loaded fake device library. Its state (devices, memory,
// failures, counters) is private to this copy of the library: every
// BuildFake call loads a fresh one.
type Fake struct {
	// Path is the shared object to pass to gpu.WithLibraryPath.
	Path string
	ctl  control
}

// control is the part of Fake that calls into the library (cgo only).
type control interface {
	fail(name string, skip, times int64, code int)
	calls(name string) int64
	stat(name string) int64
	setDevices(n int)
	setMemory(n int64)
	setInitResult(code int)
	setDriverVersion(v int)
	setThreadCtx(dev int)
	threadCtx() int
	setThreadHIPDev(dev int)
	threadHIPDev() int
}

// Fail makes the named entry point (e.g. "cuMemAlloc_v2", "hipMemcpyAsync")
// return code after letting skip calls through, for times calls (times < 0:
// every call from then on). Code 0 clears the failure.
func (f *Fake) Fail(name string, skip, times int64, code int) { f.ctl.fail(name, skip, times, code) }

// Calls returns how many times the named entry point was called.
func (f *Fake) Calls(name string) int64 { return f.ctl.calls(name) }

// Stat returns a counter: "allocs", "host", "registered", "ipc", "streams",
// "events" (live objects), "pinned_copies", "pageable_copies", "ctx_refs",
// "used0".."used7" (device bytes allocated), "registered_bytes" (host
// bytes page-locked with cuMemHostRegister/hipHostRegister now),
// "ctx_flags" and "hip_flags" (device 0's primary context flags and
// hipSetDeviceFlags), "freed_imported" (device allocations freed while this process still
// had their IPC export open: undefined behaviour on a real driver). -1
// for an unknown name.
func (f *Fake) Stat(name string) int64 { return f.ctl.stat(name) }

// SetDevices sets the number of devices (0: init fails with no device).
func (f *Fake) SetDevices(n int) { f.ctl.setDevices(n) }

// SetMemory sets the memory of each device in bytes.
func (f *Fake) SetMemory(n int64) { f.ctl.setMemory(n) }

// SetDriverVersion sets the version cuDriverGetVersion and
// hipDriverGetVersion report (0: 12040 and 60241). The fake's HIP follows
// it for the IPC flag: HIP 5 (e.g. 50422061) accepts only flags 0 in
// hipIpcOpenMemHandle, HIP 6 only 1. Set it before Open.
func (f *Fake) SetDriverVersion(v int) { f.ctl.setDriverVersion(v) }

// SetThreadContext makes device dev's CUDA primary context current on the
// calling OS thread (-1: none), as another CUDA user in the process would;
// ThreadContext reports the device of the thread's current context (-1:
// none). SetThreadHIPDevice and ThreadHIPDevice do the same for HIP's
// current device. The caller must hold its OS thread
// (runtime.LockOSThread).
func (f *Fake) SetThreadContext(dev int)   { f.ctl.setThreadCtx(dev) }
func (f *Fake) ThreadContext() int         { return f.ctl.threadCtx() }
func (f *Fake) SetThreadHIPDevice(dev int) { f.ctl.setThreadHIPDev(dev) }
func (f *Fake) ThreadHIPDevice() int       { return f.ctl.threadHIPDev() }

// SetInitResult makes cuInit/hipInit return code.
func (f *Fake) SetInitResult(code int) { f.ctl.setInitResult(code) }

// Open opens the fake as a gpu.Device and closes it when the test ends.
func (f *Fake) Open(t testing.TB, opts ...gpu.Option) gpu.Device {
	t.Helper()
	d, err := gpu.Open(append([]gpu.Option{gpu.WithLibraryPath(f.Path)}, opts...)...)
	if err != nil {
		t.Fatalf("open fake device: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// CheckNoLeaks fails the test if device allocations, pinned or registered
// host memory, IPC mappings, streams, events or context references are
// still live.
func (f *Fake) CheckNoLeaks(t testing.TB) {
	t.Helper()
	for _, name := range []string{"allocs", "host", "registered", "ipc", "streams", "events", "ctx_refs"} {
		if n := f.Stat(name); n != 0 {
			t.Errorf("fake device: %d %s still live", n, name)
		}
	}
}

// RequireCompiler skips the test when no C compiler is found, except under
// CI (the CI environment variable set), where it fails: CI must run the
// cgo paths, never skip them silently.
func RequireCompiler(t testing.TB) string {
	t.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	// CC may carry flags ("gcc -m64"); the first word is the program.
	prog := strings.Fields(cc)
	if len(prog) == 0 {
		prog = []string{"gcc"}
	}
	if _, err := exec.LookPath(prog[0]); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("C compiler %q not found, and CI is set: the fake GPU tests must run in CI", prog[0])
		}
		t.Skipf("C compiler %q not found: skipping the fake GPU tests", prog[0])
	}
	return cc
}

var (
	buildMu    sync.Mutex            // protects buildCache
	buildCache = map[string][]byte{} // build key -> object or shared object bytes
)

// CompileC compiles src into a shared object named name inside t.TempDir()
// and returns its path. cflags go to the compiler.
func CompileC(t testing.TB, name string, src []byte, cflags ...string) string {
	t.Helper()
	return build(t, name, src, cflags, nil)
}

// build compiles src once per process (cached object file), links it into a
// shared object that exports everything but the hide patterns (cached per
// pattern set), and copies the result to t.TempDir()/name, so that each
// caller gets its own file and dlopen its own copy of the library's state.
func build(t testing.TB, name string, src []byte, cflags, hide []string) string {
	t.Helper()
	cc := strings.Fields(RequireCompiler(t))
	sum := sha256.Sum256(src)
	objKey := hex.EncodeToString(sum[:8]) + " " + strings.Join(cflags, " ")
	soKey := objKey + " hide:" + strings.Join(hide, ",")

	buildMu.Lock()
	defer buildMu.Unlock()
	so, ok := buildCache[soKey]
	if !ok {
		dir, err := os.MkdirTemp("", "kvtier-cc-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		run := func(args ...string) error {
			args = append(append([]string(nil), cc[1:]...), args...)
			if out, err := exec.Command(cc[0], args...).CombinedOutput(); err != nil {
				return fmt.Errorf("%s %s: %v\n%s", cc[0], strings.Join(args, " "), err, out)
			}
			return nil
		}
		objPath := filepath.Join(dir, "obj.o")
		obj, ok := buildCache[objKey]
		if !ok {
			srcPath := filepath.Join(dir, "src.c")
			if err := os.WriteFile(srcPath, src, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := run(append([]string{"-c", "-fPIC", "-O0", "-Wall", "-o", objPath, srcPath}, cflags...)...); err != nil {
				t.Fatalf("compile %s: %v", name, err)
			}
			if obj, err = os.ReadFile(objPath); err != nil {
				t.Fatal(err)
			}
			buildCache[objKey] = obj
		} else if err := os.WriteFile(objPath, obj, 0o600); err != nil {
			t.Fatal(err)
		}
		soPath := filepath.Join(dir, "out.so")
		args := []string{"-shared", "-o", soPath, objPath}
		if len(hide) > 0 {
			script := "{ global: *; local: " + strings.Join(hide, "; ") + "; };\n"
			mapPath := filepath.Join(dir, "exports.map")
			if err := os.WriteFile(mapPath, []byte(script), 0o600); err != nil {
				t.Fatal(err)
			}
			args = append(args, "-Wl,--version-script="+mapPath)
		}
		if err := run(args...); err != nil {
			t.Fatalf("link %s: %v", name, err)
		}
		if so, err = os.ReadFile(soPath); err != nil {
			t.Fatal(err)
		}
		buildCache[soKey] = so
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, so, 0o700); err != nil {
		t.Fatal(err)
	}
	return path
}
