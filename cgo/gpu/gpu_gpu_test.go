//go:build gpu

// Tests against the real driver, run by `make gpu-check` on a GPU machine
// (go test -tags gpu). Without a GPU they fail: that build tag means "a GPU
// is expected here".

package gpu_test

import (
	"bytes"
	"runtime"
	"sync"
	"testing"

	"github.com/kvtier/kvtier/cgo/gpu"
)

// TestMain holds one device open for the whole test binary, so the CUDA
// primary context is created once: each test's Open and Close only take
// and drop a reference. Without persistence mode, releasing the last
// reference destroys the context, and recreating it per test takes
// seconds on an 8-GPU node. Without a GPU nothing is held and the tests
// fail on their own Open.
func TestMain(m *testing.M) {
	if d, err := gpu.Open(); err == nil {
		defer d.Close()
	}
	m.Run()
}

func openReal(t *testing.T) gpu.Device {
	t.Helper()
	d, err := gpu.Open()
	if err != nil {
		t.Fatalf("the gpu-tagged tests need a GPU and its driver: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestGPUDevice(t *testing.T) {
	d := openReal(t)
	info := d.Info()
	t.Logf("device: %+v", info)
	free, total, err := d.MemInfo()
	if err != nil || total <= 0 || free <= 0 || free > total || info.Name == "" {
		t.Fatalf("MemInfo = %d, %d, %v; info %+v", free, total, err, info)
	}
	const n = 4 << 20
	a, err := d.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free(a)
	b, err := d.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free(b)
	s, err := d.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// Pageable Go memory through the waiting copies.
	src := pattern(n, 11)
	el, err := s.CopyH2D(a, src)
	if err != nil || el <= 0 {
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
		t.Fatal("round trip through the GPU differs")
	}

	// Pinned memory through the asynchronous copies, timed with events.
	pin, err := d.AllocHost(n)
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeHost(pin)
	copy(pin, pattern(n, 12))
	e0, _ := d.NewEvent()
	defer e0.Close()
	e1, _ := d.NewEvent()
	defer e1.Close()
	s.Record(e0)
	if err := s.CopyH2DAsync(a, pin); err != nil {
		t.Fatal(err)
	}
	if err := s.CopyD2HAsync(pin, b); err != nil { // b still holds src
		t.Fatal(err)
	}
	s.Record(e1)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if el, err := e1.Since(e0); err != nil || el <= 0 {
		t.Fatalf("Since: %v, %v", el, err)
	}
	if !bytes.Equal(pin, src) {
		t.Fatal("async D2H into pinned memory differs")
	}

	// A registered mmap'd region, as the DRAM arena.
	arena := mmap(t, n)
	unregister, err := d.RegisterHost(arena)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CopyD2H(arena, a); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(arena, pattern(n, 12)) {
		t.Fatal("D2H into registered memory differs")
	}
	if err := unregister(); err != nil {
		t.Fatal(err)
	}
}

// TestGPUThreads uses one device from goroutines on fresh OS threads.
func TestGPUThreads(t *testing.T) {
	d := openReal(t)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // never unlocked: a new thread per worker
			p, err := d.Alloc(1 << 20)
			if err != nil {
				t.Error(err)
				return
			}
			defer d.Free(p)
			s, err := d.NewStream()
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Close()
			src := pattern(1<<20, uint64(w))
			got := make([]byte, 1<<20)
			if _, err := s.CopyH2D(p, src); err != nil {
				t.Error(err)
				return
			}
			if _, err := s.CopyD2H(got, p); err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(got, src) {
				t.Errorf("worker %d: data differs", w)
			}
		}()
	}
	wg.Wait()
}

func TestGPUIPC(t *testing.T) {
	checkIPC(t, "", openReal(t))
}
