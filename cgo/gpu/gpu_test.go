package gpu_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/kvtier/kvtier/cgo/gpu"
	"github.com/kvtier/kvtier/cgo/gpu/gputest"
)

func pattern(n int, seed uint64) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

func TestOpenUnavailable(t *testing.T) {
	fake := func(t *testing.T, flags ...gputest.Flag) *gputest.Fake { return gputest.BuildFake(t, flags...) }
	tests := []struct {
		name        string
		setup       func(t *testing.T) []gpu.Option
		missingSym  string // expected in the message, with ErrMissingSymbol
		wantInvalid bool
	}{
		{name: "no library", setup: func(t *testing.T) []gpu.Option {
			return []gpu.Option{gpu.WithLibraryPath(t.TempDir() + "/libcuda.so.1")}
		}},
		{name: "no device", setup: func(t *testing.T) []gpu.Option {
			f := fake(t)
			f.SetDevices(0)
			return []gpu.Option{gpu.WithLibraryPath(f.Path)}
		}},
		{name: "no device hip", setup: func(t *testing.T) []gpu.Option {
			f := fake(t, gputest.NoCUDA)
			f.SetDevices(0)
			return []gpu.Option{gpu.WithLibraryPath(f.Path)}
		}},
		{name: "init fails", setup: func(t *testing.T) []gpu.Option {
			f := fake(t)
			f.SetInitResult(gputest.CodeNotInitialized)
			return []gpu.Option{gpu.WithLibraryPath(f.Path)}
		}},
		{name: "ordinal out of range", setup: func(t *testing.T) []gpu.Option {
			f := fake(t)
			return []gpu.Option{gpu.WithLibraryPath(f.Path), gpu.WithOrdinal(3)}
		}},
		{name: "negative ordinal", wantInvalid: true, setup: func(t *testing.T) []gpu.Option {
			f := fake(t)
			return []gpu.Option{gpu.WithLibraryPath(f.Path), gpu.WithOrdinal(-1)}
		}},
		{name: "missing cuda symbol", missingSym: "cuMemAlloc_v2", setup: func(t *testing.T) []gpu.Option {
			f := fake(t, gputest.OmitAlloc)
			return []gpu.Option{gpu.WithLibraryPath(f.Path)}
		}},
		{name: "missing hip symbol", missingSym: "hipMalloc", setup: func(t *testing.T) []gpu.Option {
			f := fake(t, gputest.OmitAlloc, gputest.NoCUDA)
			return []gpu.Option{gpu.WithLibraryPath(f.Path)}
		}},
		{name: "wrong vendor forced", missingSym: "hipInit", setup: func(t *testing.T) []gpu.Option {
			f := fake(t, gputest.NoHIP)
			return []gpu.Option{gpu.WithLibraryPath(f.Path), gpu.WithVendor(gpu.VendorHIP)}
		}},
		{name: "not a gpu library", missingSym: "neither cuInit nor hipInit", setup: func(t *testing.T) []gpu.Option {
			gputest.RequireCgo(t)
			p := gputest.CompileC(t, "libother.so", []byte("int other(void) { return 1; }\n"))
			return []gpu.Option{gpu.WithLibraryPath(p)}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := gpu.Open(tc.setup(t)...)
			if err == nil {
				d.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, gpu.ErrUnavailable) {
				t.Fatalf("error %v does not wrap ErrUnavailable", err)
			}
			if tc.missingSym != "" {
				if !errors.Is(err, gpu.ErrMissingSymbol) || !strings.Contains(err.Error(), tc.missingSym) {
					t.Fatalf("error %v: want ErrMissingSymbol naming %s", err, tc.missingSym)
				}
			}
			if tc.wantInvalid && !errors.Is(err, gpu.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestMissingSymbolDoesNotUseLegacyABI(t *testing.T) {
	f := gputest.BuildFake(t, gputest.OmitAlloc)
	if _, err := gpu.Open(gpu.WithLibraryPath(f.Path)); !errors.Is(err, gpu.ErrMissingSymbol) {
		t.Fatalf("Open: %v, want ErrMissingSymbol", err)
	}
	if n := f.Calls("cuInit"); n != 0 {
		t.Errorf("cuInit called %d times before the symbols were all bound", n)
	}
}

type variant struct {
	name   string
	flags  []gputest.Flag
	vendor gpu.Vendor
}

var (
	cudaAndHIP = []variant{
		{"cuda", []gputest.Flag{gputest.NoHIP}, gpu.VendorCUDA},
		{"hip", []gputest.Flag{gputest.NoCUDA}, gpu.VendorHIP},
	}
	allVariants = append([]variant{
		{"cuda-no-v2", []gputest.Flag{gputest.NoHIP, gputest.NoV2}, gpu.VendorCUDA},
		{"both-exported", nil, gpu.VendorCUDA},
	}, cudaAndHIP...)
)

// vendors runs fn against a CUDA-only and a HIP-only fake, a CUDA fake
// without the _v2 aliases, and one exporting both APIs (CUDA wins).
func vendors(t *testing.T, fn func(t *testing.T, f *gputest.Fake, d gpu.Device)) {
	forVariants(t, allVariants, fn)
}

func forVariants(t *testing.T, vs []variant, fn func(t *testing.T, f *gputest.Fake, d gpu.Device)) {
	for _, tc := range vs {
		t.Run(tc.name, func(t *testing.T) {
			f := gputest.BuildFake(t, tc.flags...)
			d := f.Open(t)
			if got := d.Info().Vendor; got != tc.vendor {
				t.Fatalf("vendor %v, want %v", got, tc.vendor)
			}
			fn(t, f, d)
		})
	}
}

func TestInfo(t *testing.T) {
	vendors(t, func(t *testing.T, f *gputest.Fake, d gpu.Device) {
		info := d.Info()
		if !strings.HasPrefix(info.Name, "Fake") || info.TotalMem != gputest.DefaultMemory || info.Ordinal != 0 ||
			info.PCIBusID == "" || info.DriverVersion == 0 || info.Library != f.Path {
			t.Fatalf("info %+v", info)
		}
		free, total, err := d.MemInfo()
		if err != nil || total != info.TotalMem || free != total {
			t.Fatalf("MemInfo = %d, %d, %v", free, total, err)
		}
		p, err := d.Alloc(1 << 20)
		if err != nil {
			t.Fatal(err)
		}
		if free2, _, _ := d.MemInfo(); free2 != free-1<<20 {
			t.Errorf("free after a 1 MiB alloc: %d, want %d", free2, free-1<<20)
		}
		if err := d.Free(p); err != nil {
			t.Fatal(err)
		}
	})
}

func TestInfoWithoutOptionalSymbols(t *testing.T) {
	f := gputest.BuildFake(t, gputest.NoOptional)
	d := f.Open(t)
	info := d.Info()
	if info.PCIBusID != "" || info.DriverVersion != 0 || info.Name == "" {
		t.Fatalf("info %+v", info)
	}
	p, err := d.Alloc(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free(p)
	if _, err := d.IPCHandle(p); !errors.Is(err, gpu.ErrNotSupported) {
		t.Errorf("IPCHandle: %v, want ErrNotSupported", err)
	}
	f.Fail("cuMemcpyHtoDAsync_v2", 0, 1, gputest.CodeIllegalAddress)
	s, err := d.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.CopyH2D(p, make([]byte, 16))
	var de *gpu.DriverError
	if !errors.As(err, &de) || de.Code != gputest.CodeIllegalAddress || !strings.Contains(err.Error(), "error 700") {
		t.Fatalf("copy error %v: want a DriverError with the numeric code", err)
	}
}

func TestCopyRoundTrip(t *testing.T) {
	vendors(t, func(t *testing.T, f *gputest.Fake, d gpu.Device) {
		const n = 256 << 10
		src := pattern(n, 1)
		a, err := d.Alloc(n)
		if err != nil {
			t.Fatal(err)
		}
		b, err := d.Alloc(n)
		if err != nil {
			t.Fatal(err)
		}
		s, err := d.NewStream()
		if err != nil {
			t.Fatal(err)
		}
		// Waiting copies, from and into the Go heap.
		if el, err := s.CopyH2D(a, src); err != nil || el < 0 {
			t.Fatalf("CopyH2D: %v, %v", el, err)
		}
		if _, err := s.CopyD2D(b, a, n); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, n)
		if _, err := s.CopyD2H(got, b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, src) {
			t.Fatal("D2H after H2D and D2D returned other bytes")
		}
		// Asynchronous copies through pinned memory, timed with events.
		pin, err := d.AllocHost(n)
		if err != nil {
			t.Fatal(err)
		}
		copy(pin, pattern(n, 2))
		want := bytes.Clone(pin)
		e0, _ := d.NewEvent()
		e1, _ := d.NewEvent()
		if err := s.Record(e0); err != nil {
			t.Fatal(err)
		}
		if err := s.CopyH2DAsync(b, pin); err != nil {
			t.Fatal(err)
		}
		if err := s.CopyD2DAsync(a, b, n); err != nil {
			t.Fatal(err)
		}
		clear(pin)
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := s.CopyD2HAsync(pin, a); err != nil {
			t.Fatal(err)
		}
		if err := s.Record(e1); err != nil {
			t.Fatal(err)
		}
		if err := e1.Sync(); err != nil {
			t.Fatal(err)
		}
		if el, err := e1.Since(e0); err != nil || el < 0 {
			t.Fatalf("Since: %v, %v", el, err)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pin, want) {
			t.Fatal("async round trip returned other bytes")
		}
		if f.Stat("pinned_copies") != 2 || f.Stat("pageable_copies") != 2 {
			t.Errorf("pinned %d, pageable %d copies; want 2 and 2", f.Stat("pinned_copies"), f.Stat("pageable_copies"))
		}
		// Zero-length copies are no-ops; out-of-range ones are refused.
		if _, err := s.CopyH2D(a, nil); err != nil {
			t.Errorf("empty copy: %v", err)
		}
		if _, err := s.CopyH2D(a+n-8, make([]byte, 16)); !errors.Is(err, gpu.ErrInvalid) {
			t.Errorf("copy past the allocation: %v, want ErrInvalid", err)
		}
		if _, err := s.CopyD2D(0, a, 8); !errors.Is(err, gpu.ErrInvalid) {
			t.Errorf("copy to null: %v, want ErrInvalid", err)
		}
		for _, c := range []interface{ Close() error }{e0, e1, s} {
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.FreeHost(pin); err != nil {
			t.Fatal(err)
		}
		for _, p := range []gpu.DevPtr{a, b} {
			if err := d.Free(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		f.CheckNoLeaks(t)
		for _, legacy := range []string{"cuMemAlloc", "cuMemFree", "cuMemGetInfo", "cuDeviceTotalMem", "cuMemcpyHtoDAsync", "cuMemcpyDtoHAsync", "cuMemcpyDtoDAsync"} {
			if n := f.Calls(legacy); n != 0 {
				t.Errorf("legacy 32-bit %s called %d times", legacy, n)
			}
		}
	})
}

func TestV2Fallback(t *testing.T) {
	for _, tc := range []struct {
		name      string
		flags     []gputest.Flag
		want, not string
	}{
		{"v2 exported", nil, "_v2", ""},
		{"v2 missing", []gputest.Flag{gputest.NoV2}, "", "_v2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := gputest.BuildFake(t, append(tc.flags, gputest.NoHIP)...)
			d := f.Open(t)
			buf := make([]byte, 1<<16)
			mem := mmap(t, 1<<16)
			unreg, err := d.RegisterHost(mem)
			if err != nil {
				t.Fatal(err)
			}
			if err := unreg(); err != nil {
				t.Fatal(err)
			}
			p, _ := d.Alloc(int64(len(buf)))
			s, err := d.NewStream()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.CopyH2D(p, buf); err != nil {
				t.Fatal(err)
			}
			s.Close()
			d.Free(p)
			d.Close()
			for _, base := range []string{"cuMemHostRegister", "cuStreamDestroy", "cuEventDestroy", "cuEventElapsedTime", "cuDevicePrimaryCtxRelease"} {
				v2, v1 := f.Calls(base+"_v2"), f.Calls(base)
				if tc.want == "_v2" && (v2 == 0 || v1 != 0) {
					t.Errorf("%s: _v2 called %d, unversioned %d; want the _v2 name", base, v2, v1)
				}
				if tc.not == "_v2" && (v2 != 0 || v1 == 0) {
					t.Errorf("%s: _v2 called %d, unversioned %d; want the fallback", base, v2, v1)
				}
			}
			f.CheckNoLeaks(t)
		})
	}
}

func mmap(t *testing.T, n int) []byte {
	t.Helper()
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Munmap(b) })
	return b
}

func TestRegisterHost(t *testing.T) {
	vendors(t, func(t *testing.T, f *gputest.Fake, d gpu.Device) {
		const n = 1 << 20
		arena := mmap(t, n)
		unreg, err := d.RegisterHost(arena)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.RegisterHost(arena[4096:8192]); err == nil {
			t.Error("registering an overlapping range succeeded")
		}
		if _, err := d.RegisterHost(nil); !errors.Is(err, gpu.ErrInvalid) {
			t.Errorf("RegisterHost(nil): %v, want ErrInvalid", err)
		}
		p, err := d.Alloc(n)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := d.NewStream()
		copy(arena, pattern(n, 3))
		if err := s.CopyH2DAsync(p, arena[:n/2]); err != nil {
			t.Fatal(err)
		}
		if err := s.CopyD2HAsync(arena[n/2:], p); err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(arena[:n/2], arena[n/2:]) {
			t.Fatal("registered round trip differs")
		}
		if got := f.Stat("pinned_copies"); got != 2 {
			t.Errorf("pinned copies %d, want 2", got)
		}
		if err := unreg(); err != nil {
			t.Fatal(err)
		}
		if err := unreg(); err != nil {
			t.Errorf("second unregister: %v", err)
		}
		s.Close()
		d.Free(p)
		d.Close()
		f.CheckNoLeaks(t)
	})
}

func TestFailures(t *testing.T) {
	tests := []struct {
		name   string
		vendor []gputest.Flag
		inject func(f *gputest.Fake)
		op     func(d gpu.Device, s gpu.Stream, p gpu.DevPtr) error
		want   error
		code   int
	}{
		{
			name:   "device out of memory",
			inject: func(f *gputest.Fake) {},
			op:     func(d gpu.Device, _ gpu.Stream, _ gpu.DevPtr) error { _, err := d.Alloc(1 << 30); return err },
			want:   gpu.ErrOutOfMemory, code: gputest.CodeOutOfMemory,
		},
		{
			name:   "injected alloc failure",
			inject: func(f *gputest.Fake) { f.Fail("cuMemAlloc_v2", 0, 1, gputest.CodeOutOfMemory) },
			op:     func(d gpu.Device, _ gpu.Stream, _ gpu.DevPtr) error { _, err := d.Alloc(4096); return err },
			want:   gpu.ErrOutOfMemory, code: gputest.CodeOutOfMemory,
		},
		{
			name:   "hip alloc failure",
			vendor: []gputest.Flag{gputest.NoCUDA},
			inject: func(f *gputest.Fake) { f.Fail("hipMalloc", 0, 1, gputest.CodeOutOfMemory) },
			op:     func(d gpu.Device, _ gpu.Stream, _ gpu.DevPtr) error { _, err := d.Alloc(4096); return err },
			want:   gpu.ErrOutOfMemory, code: gputest.CodeOutOfMemory,
		},
		{
			name:   "pinned host out of memory",
			inject: func(f *gputest.Fake) { f.Fail("cuMemHostAlloc", 0, 1, gputest.CodeOutOfMemory) },
			op:     func(d gpu.Device, _ gpu.Stream, _ gpu.DevPtr) error { _, err := d.AllocHost(4096); return err },
			want:   gpu.ErrOutOfMemory, code: gputest.CodeOutOfMemory,
		},
		{
			name:   "copy error at queue time",
			inject: func(f *gputest.Fake) { f.Fail("cuMemcpyHtoDAsync_v2", 0, 1, gputest.CodeIllegalAddress) },
			op: func(_ gpu.Device, s gpu.Stream, p gpu.DevPtr) error {
				_, err := s.CopyH2D(p, make([]byte, 64))
				return err
			},
			want: gpu.ErrDriver, code: gputest.CodeIllegalAddress,
		},
		{
			name:   "copy error at sync",
			inject: func(f *gputest.Fake) { f.Fail("cuStreamSynchronize", 0, 1, gputest.CodeIllegalAddress) },
			op: func(_ gpu.Device, s gpu.Stream, p gpu.DevPtr) error {
				_, err := s.CopyD2H(make([]byte, 64), p)
				return err
			},
			want: gpu.ErrDriver, code: gputest.CodeIllegalAddress,
		},
		{
			name:   "hip copy error",
			vendor: []gputest.Flag{gputest.NoCUDA},
			inject: func(f *gputest.Fake) { f.Fail("hipMemcpyAsync", 0, 1, gputest.CodeIllegalAddress) },
			op: func(_ gpu.Device, s gpu.Stream, p gpu.DevPtr) error {
				_, err := s.CopyD2D(p, p+64, 64)
				return err
			},
			want: gpu.ErrDriver, code: gputest.CodeIllegalAddress,
		},
		{
			name:   "event timing error",
			inject: func(f *gputest.Fake) { f.Fail("cuEventElapsedTime_v2", 0, 1, gputest.CodeInvalidValue) },
			op: func(_ gpu.Device, s gpu.Stream, p gpu.DevPtr) error {
				_, err := s.CopyH2D(p, make([]byte, 64))
				return err
			},
			want: gpu.ErrInvalid, code: gputest.CodeInvalidValue,
		},
		{
			// Exclusive-process mode: another process holds the GPU.
			name:   "device unavailable is no usable GPU",
			inject: func(f *gputest.Fake) { f.Fail("cuMemAlloc_v2", 0, 1, gputest.CodeDeviceUnavailable) },
			op:     func(d gpu.Device, _ gpu.Stream, _ gpu.DevPtr) error { _, err := d.Alloc(4096); return err },
			want:   gpu.ErrUnavailable, code: gputest.CodeDeviceUnavailable,
		},
		{
			name:   "driver and kernel module mismatch is no usable GPU",
			inject: func(f *gputest.Fake) { f.Fail("cuMemGetInfo_v2", 0, 1, gputest.CodeSystemDriverMismatch) },
			op:     func(d gpu.Device, _ gpu.Stream, _ gpu.DevPtr) error { _, _, err := d.MemInfo(); return err },
			want:   gpu.ErrUnavailable, code: gputest.CodeSystemDriverMismatch,
		},
		{
			name:   "hip insufficient driver is no usable GPU",
			vendor: []gputest.Flag{gputest.NoCUDA},
			inject: func(f *gputest.Fake) { f.Fail("hipMalloc", 0, 1, gputest.CodeInsufficientDriver) },
			op:     func(d gpu.Device, _ gpu.Stream, _ gpu.DevPtr) error { _, err := d.Alloc(4096); return err },
			want:   gpu.ErrUnavailable, code: gputest.CodeInsufficientDriver,
		},
		{
			name:   "context lost",
			inject: func(f *gputest.Fake) { f.Fail("cuCtxSetCurrent", 0, 1, gputest.CodeInvalidContext) },
			op:     func(d gpu.Device, _ gpu.Stream, _ gpu.DevPtr) error { _, _, err := d.MemInfo(); return err },
			want:   gpu.ErrDriver, code: gputest.CodeInvalidContext,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := gputest.BuildFake(t, tc.vendor...)
			d := f.Open(t)
			p, err := d.Alloc(1 << 16)
			if err != nil {
				t.Fatal(err)
			}
			s, err := d.NewStream()
			if err != nil {
				t.Fatal(err)
			}
			tc.inject(f)
			err = tc.op(d, s, p)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			var de *gpu.DriverError
			if !errors.As(err, &de) || de.Code != tc.code || de.Name == "" {
				t.Fatalf("error %v: want a named DriverError with code %d", err, tc.code)
			}
			// The failure was transient: the device still works.
			if _, err := s.CopyH2D(p, make([]byte, 64)); err != nil {
				t.Fatalf("copy after the failure: %v", err)
			}
			s.Close()
			d.Free(p)
			d.Close()
			f.CheckNoLeaks(t)
		})
	}
}

// TestThreadBinding drives one device (ordinal 1 of 2) from goroutines that
// each own a fresh OS thread. The fake CUDA rejects calls from a thread
// without a current context, and the fake HIP allocates on the thread's
// current device, so a wrapper that does not bind the device on every call
// fails here.
func TestThreadBinding(t *testing.T) {
	for _, flags := range [][]gputest.Flag{{gputest.NoHIP}, {gputest.NoCUDA}} {
		t.Run(string(flags[0]), func(t *testing.T) {
			f := gputest.BuildFake(t, flags...)
			f.SetDevices(2)
			d := f.Open(t, gpu.WithOrdinal(1))
			const workers, n = 8, 64 << 10
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Never unlocked: the thread exits with the
					// goroutine, so every worker runs on a new one.
					runtime.LockOSThread()
					errs <- func() error {
						p, err := d.Alloc(n)
						if err != nil {
							return err
						}
						defer d.Free(p)
						s, err := d.NewStream()
						if err != nil {
							return err
						}
						defer s.Close()
						src := pattern(n, uint64(w))
						if _, err := s.CopyH2D(p, src); err != nil {
							return err
						}
						got := make([]byte, n)
						if _, err := s.CopyD2H(got, p); err != nil {
							return err
						}
						if !bytes.Equal(got, src) {
							return fmt.Errorf("worker %d: data differs", w)
						}
						return nil
					}()
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if f.Stat("used0") != 0 {
				t.Errorf("%d bytes landed on device 0, want all on device 1", f.Stat("used0"))
			}
			d.Close()
			f.CheckNoLeaks(t)
		})
	}
}

func TestConcurrentStreams(t *testing.T) {
	f := gputest.BuildFake(t)
	d := f.Open(t)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := d.NewStream()
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Close()
			p, err := d.Alloc(4096)
			if err != nil {
				t.Error(err)
				return
			}
			defer d.Free(p)
			buf := pattern(4096, uint64(w))
			got := make([]byte, 4096)
			for range 50 {
				if _, err := s.CopyH2D(p, buf); err != nil {
					t.Error(err)
					return
				}
				if _, err := s.CopyD2H(got, p); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(got, buf) {
					t.Error("data differs")
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestClosed(t *testing.T) {
	f := gputest.BuildFake(t)
	d := f.Open(t)
	s, _ := d.NewStream()
	e, _ := d.NewEvent()
	p, _ := d.Alloc(4096)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	checks := map[string]error{
		"alloc":   func() error { _, err := d.Alloc(8); return err }(),
		"free":    d.Free(p),
		"meminfo": func() error { _, _, err := d.MemInfo(); return err }(),
		"stream":  func() error { _, err := d.NewStream(); return err }(),
		"copy":    func() error { _, err := s.CopyH2D(p, make([]byte, 8)); return err }(),
		"sync":    s.Sync(),
		"record":  s.Record(e),
		"event":   e.Sync(),
	}
	for name, err := range checks {
		if !errors.Is(err, gpu.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if f.Stat("ctx_refs") != 0 {
		t.Errorf("primary context still retained after Close")
	}
}

func TestForeignEvent(t *testing.T) {
	f := gputest.BuildFake(t)
	d1 := f.Open(t)
	d2 := f.Open(t)
	s, _ := d1.NewStream()
	defer s.Close()
	e, _ := d2.NewEvent()
	defer e.Close()
	if err := s.Record(e); !errors.Is(err, gpu.ErrInvalid) {
		t.Errorf("recording another device's event: %v, want ErrInvalid", err)
	}
}

const ipcChildEnv = "KVTIER_GPU_IPC_CHILD"

// TestIPC exports an allocation and has a child process (this test binary,
// re-run) open the handle, check the bytes and overwrite them.
func TestIPC(t *testing.T) {
	forVariants(t, cudaAndHIP, func(t *testing.T, f *gputest.Fake, d gpu.Device) {
		checkIPC(t, f.Path, d)
	})
}

// checkIPC runs the IPC exchange with a child that opens libPath ("" for
// the default driver).
func checkIPC(t *testing.T, libPath string, d gpu.Device) {
	t.Helper()
	const n = 1 << 16
	base, err := d.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free(base)
	s, _ := d.NewStream()
	defer s.Close()
	if _, err := s.CopyH2D(base, pattern(n, 7)); err != nil {
		t.Fatal(err)
	}
	h, err := d.IPCHandle(base + 4096) // any address inside names the allocation
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestIPCChild$", "-test.v")
	cmd.Env = append(os.Environ(), ipcChildEnv+"="+libPath+","+h.String())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ipc child ok") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	got := make([]byte, n)
	if _, err := s.CopyD2H(got, base); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pattern(n, 8)) {
		t.Fatal("the child's write through the IPC mapping is not visible")
	}
}

func TestIPCChild(t *testing.T) {
	env := os.Getenv(ipcChildEnv)
	if env == "" {
		t.Skip("run by TestIPC")
	}
	path, hexh, _ := strings.Cut(env, ",")
	var h gpu.IPCHandle
	if raw, err := hex.DecodeString(hexh); err != nil || len(raw) != len(h) {
		t.Fatalf("bad handle %q: %v", hexh, err)
	} else {
		copy(h[:], raw)
	}
	var opts []gpu.Option
	if path != "" { // empty: the real driver (GPU-tagged test)
		opts = append(opts, gpu.WithLibraryPath(path))
	}
	d, err := gpu.Open(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	p, err := d.OpenIPCHandle(h)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := d.NewStream()
	defer s.Close()
	const n = 1 << 16
	got := make([]byte, n)
	if _, err := s.CopyD2H(got, p); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pattern(n, 7)) {
		t.Fatal("bytes read through the IPC handle differ")
	}
	if _, err := s.CopyH2D(p, pattern(n, 8)); err != nil {
		t.Fatal(err)
	}
	if err := d.CloseIPCHandle(p); err != nil {
		t.Fatal(err)
	}
	t.Log("ipc child ok")
}

func TestVendorString(t *testing.T) {
	for v, want := range map[gpu.Vendor]string{gpu.VendorAny: "any", gpu.VendorCUDA: "cuda", gpu.VendorHIP: "hip"} {
		if v.String() != want {
			t.Errorf("%d.String() = %q, want %q", v, v.String(), want)
		}
	}
}

// BenchmarkCopy measures the binding's cost per waiting copy on the fake
// device (a memmove), next to a plain copy of the same size.
func BenchmarkCopy(b *testing.B) {
	f := gputest.BuildFake(b)
	d := f.Open(b)
	s, err := d.NewStream()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for _, n := range []int{64 << 10, 1 << 20, 4 << 20} {
		p, err := d.Alloc(int64(n))
		if err != nil {
			b.Fatal(err)
		}
		src := pattern(n, 1)
		dst := make([]byte, n)
		b.Run(fmt.Sprintf("op=h2d/size=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.CopyH2D(p, src); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("op=memcpy/size=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				copy(dst, src)
			}
		})
		d.Free(p)
	}
}

// TestHIPIPCFlagByVersion opens an exported allocation on a HIP runtime
// that reports ROCm 5 and one that reports HIP 6: ROCm 5 accepts only
// flags 0 in hipIpcOpenMemHandle, HIP 6 only hipIpcMemLazyEnablePeerAccess
// (1). The fake lets the exporting process open its own handle.
func TestHIPIPCFlagByVersion(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version int
	}{
		{"rocm 5.4", 50422061},
		{"rocm 6.1", 60140831},
		{"short form 6", 60241},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := gputest.BuildFake(t, gputest.NoCUDA)
			f.SetDriverVersion(tc.version)
			d := f.Open(t)
			if got := d.Info().DriverVersion; got != tc.version {
				t.Fatalf("driver version %d, want %d", got, tc.version)
			}
			p, err := d.Alloc(1 << 16)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Free(p)
			h, err := d.IPCHandle(p)
			if err != nil {
				t.Fatal(err)
			}
			q, err := d.OpenIPCHandle(h)
			if err != nil {
				t.Fatalf("hipIpcOpenMemHandle on %s: %v", tc.name, err)
			}
			if err := d.CloseIPCHandle(q); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestHIPFoundUnderROCmPath: ROCm keeps libamdhip64.so in /opt/rocm/lib,
// off the loader path; Open looks under $ROCM_PATH/lib and says where it
// found the library.
func TestHIPFoundUnderROCmPath(t *testing.T) {
	f := gputest.BuildFake(t, gputest.NoCUDA)
	root := t.TempDir()
	lib := root + "/lib/libamdhip64.so"
	if err := os.MkdirAll(root+"/lib", 0o755); err != nil {
		t.Fatal(err)
	}
	so, err := os.ReadFile(f.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lib, so, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ROCM_PATH", root)
	t.Setenv("LD_LIBRARY_PATH", "")
	d, err := gpu.Open(gpu.WithVendor(gpu.VendorHIP))
	if err != nil {
		t.Fatalf("Open with ROCM_PATH=%s: %v", root, err)
	}
	defer d.Close()
	if got := d.Info().Library; got != lib {
		t.Fatalf("Info().Library = %q, want %q", got, lib)
	}
}

func TestQueueRepeat(t *testing.T) {
	vendors(t, func(t *testing.T, f *gputest.Fake, d gpu.Device) {
		const n = 4096
		host, err := d.AllocHost(n)
		if err != nil {
			t.Fatal(err)
		}
		defer d.FreeHost(host)
		a, _ := d.Alloc(n)
		b, _ := d.Alloc(n)
		defer d.Free(a)
		defer d.Free(b)
		s, err := d.NewStream()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		copy(host, pattern(n, 3))
		for _, step := range []struct {
			dir       gpu.CopyDir
			dst, src  gpu.DevPtr
			host      []byte
			wantError bool
		}{
			{gpu.H2D, a, 0, host, false},
			{gpu.D2D, b, a, nil, false},
			{gpu.D2H, 0, b, host, false},
			{gpu.H2D, a, 0, host[:n/2], true}, // host shorter than n
			{gpu.D2D, 0, a, nil, true},        // null destination
			{9, a, a, host, true},             // no such direction
		} {
			if step.dir == gpu.D2H {
				clear(host)
			}
			err := s.QueueRepeat(step.dir, step.dst, step.host, step.src, n, 3)
			if step.wantError {
				if !errors.Is(err, gpu.ErrInvalid) {
					t.Errorf("dir %d: %v, want ErrInvalid", step.dir, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("dir %d: %v", step.dir, err)
			}
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(host, pattern(n, 3)) {
			t.Fatal("bytes after H2D, D2D and D2H repeats differ")
		}
		if err := s.QueueRepeat(gpu.H2D, a, host, 0, n, 0); err != nil {
			t.Fatalf("zero copies: %v", err)
		}
	})
}

// TestBindingRestoresThreadState: another CUDA (or HIP) user in the process
// has its own context (device) current on an OS thread; a kvtier call on
// that thread must put it back, not leave kvtier's device current.
func TestBindingRestoresThreadState(t *testing.T) {
	for _, tc := range cudaAndHIP {
		t.Run(tc.name, func(t *testing.T) {
			f := gputest.BuildFake(t, tc.flags...)
			f.SetDevices(2)
			d := f.Open(t) // ordinal 0
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			set, get := f.SetThreadContext, f.ThreadContext
			if tc.vendor == gpu.VendorHIP {
				set, get = f.SetThreadHIPDevice, f.ThreadHIPDevice
			}
			set(1) // the other user's device 1
			if _, _, err := d.MemInfo(); err != nil {
				t.Fatal(err)
			}
			p, err := d.Alloc(4096)
			if err != nil {
				t.Fatal(err)
			}
			if got := get(); got != 1 {
				t.Fatalf("after kvtier's calls the thread's current device is %d, want the other user's 1", got)
			}
			if err := d.Free(p); err != nil {
				t.Fatal(err)
			}
			if tc.vendor == gpu.VendorCUDA {
				set(-1) // no context current: kvtier's calls still bind their own
				if _, _, err := d.MemInfo(); err != nil {
					t.Fatal(err)
				}
				if got := get(); got != -1 {
					t.Fatalf("the thread's context is now device %d, want none", got)
				}
			}
		})
	}
}

// TestBlockingSync: waiting copies must not spin a core each, so Open asks
// for blocking synchronization (CU_CTX_SCHED_BLOCKING_SYNC,
// hipDeviceScheduleBlockingSync) before the context is made.
func TestBlockingSync(t *testing.T) {
	for _, tc := range cudaAndHIP {
		t.Run(tc.name, func(t *testing.T) {
			f := gputest.BuildFake(t, tc.flags...)
			f.Open(t)
			stat := "ctx_flags"
			if tc.vendor == gpu.VendorHIP {
				stat = "hip_flags"
			}
			if flags := f.Stat(stat); flags&0x4 == 0 {
				t.Fatalf("%s = %#x: blocking sync (0x4) not requested", stat, flags)
			}
		})
	}
}
