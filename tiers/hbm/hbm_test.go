package hbm_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"

	"github.com/kvtier/kvtier/cgo/gpu"
	"github.com/kvtier/kvtier/cgo/gpu/gputest"
	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/hbm"
)

// layoutOf returns a layout of exactly n bytes (n a multiple of 256).
func layoutOf(n int) tiers.Layout {
	return tiers.Layout{DType: codec.FP16, KVHeads: 1, HeadDim: 128, Tokens: uint32(n / 512)}
}

func key(t testing.TB, i int) tiers.Key {
	t.Helper()
	var b [16]byte
	b[0], b[1], b[15] = byte(i), byte(i>>8), 1
	h, err := tiers.HashFromBytes(b[:])
	if err != nil {
		t.Fatal(err)
	}
	return tiers.Key{Namespace: "test/model", Hash: h, Layer: tiers.AllLayers}
}

func data(n int, seed uint64) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

type env struct {
	fake *gputest.Fake
	dev  gpu.Device
	tier *hbm.Tier
}

// newTier opens a fake device and an HBM tier on it; at the end of the test
// it closes both and checks that nothing leaked on the device.
func newTier(t *testing.T, capacity int64, opts ...hbm.Option) env {
	t.Helper()
	f := gputest.BuildFake(t)
	dev, err := gpu.Open(gpu.WithLibraryPath(f.Path))
	if err != nil {
		t.Fatal(err)
	}
	tier, err := hbm.New(dev, capacity, opts...)
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tier.Close(); err != nil {
			t.Errorf("tier Close: %v", err)
		}
		if err := dev.Close(); err != nil {
			t.Errorf("device Close: %v", err)
		}
		f.CheckNoLeaks(t)
	})
	return env{f, dev, tier}
}

func TestPutGetDelete(t *testing.T) {
	e := newTier(t, 32<<20, hbm.WithChunkSize(4<<20))
	ctx := context.Background()
	sizes := []int{4 << 10, 64 << 10, 100 << 10, 1 << 20, 3 << 20}
	for i, n := range sizes {
		if err := e.tier.Put(ctx, key(t, i), layoutOf(n), data(n, uint64(i))); err != nil {
			t.Fatalf("put %d bytes: %v", n, err)
		}
	}
	var used int64
	for i, n := range sizes {
		used += int64(n)
		prefix := []byte("prefix")
		l, got, err := e.tier.Get(ctx, key(t, i), prefix)
		if err != nil {
			t.Fatal(err)
		}
		if l != layoutOf(n) || !bytes.Equal(got[:6], prefix) || !bytes.Equal(got[6:], data(n, uint64(i))) {
			t.Fatalf("block %d: layout %v, %d bytes back", i, l, len(got))
		}
	}
	st := e.tier.Stats()
	if st.Name != "hbm" || st.CapacityBytes != 32<<20 || st.UsedBytes != used || st.Blocks != int64(len(sizes)) || st.ReservedBytes < used {
		t.Fatalf("stats %+v (used %d)", st, used)
	}
	for i := range sizes {
		if err := e.tier.Delete(ctx, key(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.tier.Delete(ctx, key(t, 99)); err != nil {
		t.Fatalf("deleting a missing block: %v", err)
	}
	if _, got, err := e.tier.Get(ctx, key(t, 0), []byte("x")); !errors.Is(err, tiers.ErrNotFound) || string(got) != "x" {
		t.Fatalf("Get after Delete: %q, %v; want ErrNotFound and dst untouched", got, err)
	}
	if st := e.tier.Stats(); st.UsedBytes != 0 || st.ReservedBytes != 0 || st.Blocks != 0 {
		t.Fatalf("stats after deleting everything: %+v", st)
	}
	lat := e.tier.Latency()
	if lat.Put.Count != uint64(len(sizes)) || lat.Get.Count != uint64(len(sizes)) || lat.GetCopy.Count != uint64(len(sizes)) || lat.PutCopy.Count != uint64(len(sizes)) {
		t.Fatalf("latency counts %+v", lat)
	}
	if lat.Get.P99 < lat.Get.P50 || lat.Get.P50 <= 0 {
		t.Fatalf("get latency %+v", lat.Get)
	}
}

func TestReplace(t *testing.T) {
	e := newTier(t, 4<<20)
	ctx := context.Background()
	k := key(t, 1)
	if err := e.tier.Put(ctx, k, layoutOf(64<<10), data(64<<10, 1)); err != nil {
		t.Fatal(err)
	}
	if err := e.tier.Put(ctx, k, layoutOf(128<<10), data(128<<10, 2)); err != nil {
		t.Fatal(err)
	}
	_, got, err := e.tier.Get(ctx, k, nil)
	if err != nil || !bytes.Equal(got, data(128<<10, 2)) {
		t.Fatalf("Get after replace: %d bytes, %v", len(got), err)
	}
	if st := e.tier.Stats(); st.UsedBytes != 128<<10 || st.ReservedBytes != 128<<10 || st.Blocks != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFull(t *testing.T) {
	e := newTier(t, 4<<20, hbm.WithChunkSize(1<<20))
	ctx := context.Background()
	const n = 256 << 10
	i := 0
	for ; ; i++ {
		err := e.tier.Put(ctx, key(t, i), layoutOf(n), data(n, uint64(i)))
		if errors.Is(err, tiers.ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i > 16 {
			t.Fatal("more blocks fit than the capacity allows")
		}
	}
	if i != 16 {
		t.Fatalf("%d blocks of 256 KiB fit in 4 MiB, want 16", i)
	}
	if st := e.tier.Stats(); st.ReservedBytes != st.CapacityBytes {
		t.Fatalf("full tier reserves %d of %d bytes", st.ReservedBytes, st.CapacityBytes)
	}
	if err := e.tier.Delete(ctx, key(t, 3)); err != nil {
		t.Fatal(err)
	}
	if err := e.tier.Put(ctx, key(t, 100), layoutOf(n), data(n, 100)); err != nil {
		t.Fatalf("put after a delete: %v", err)
	}
	// A different class needs a whole free chunk.
	if err := e.tier.Put(ctx, key(t, 101), layoutOf(64<<10), data(64<<10, 1)); !errors.Is(err, tiers.ErrFull) {
		t.Fatalf("put of another size into a full arena: %v, want ErrFull", err)
	}
	// A block larger than the arena can never fit.
	big := 8 << 20
	if err := e.tier.Put(ctx, key(t, 102), layoutOf(big), make([]byte, big)); !errors.Is(err, tiers.ErrExhausted) {
		t.Fatalf("put larger than the arena: %v, want ErrExhausted", err)
	}
}

func TestInvalid(t *testing.T) {
	e := newTier(t, 4<<20)
	ctx := context.Background()
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"bad key", e.tier.Put(ctx, tiers.Key{Namespace: "x"}, layoutOf(4096), make([]byte, 4096)), tiers.ErrInvalid},
		{"length mismatch", e.tier.Put(ctx, key(t, 1), layoutOf(4096), make([]byte, 4000)), tiers.ErrInvalid},
		{"length mismatch is a codec size error", e.tier.Put(ctx, key(t, 1), layoutOf(4096), make([]byte, 4000)), codec.ErrSize},
		{"bad layout", e.tier.Put(ctx, key(t, 1), tiers.Layout{}, nil), codec.ErrLayout},
		{"canceled put", e.tier.Put(canceled, key(t, 1), layoutOf(4096), make([]byte, 4096)), context.Canceled},
		{"canceled get", func() error { _, _, err := e.tier.Get(canceled, key(t, 1), nil); return err }(), context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !errors.Is(tc.err, tc.want) {
				t.Fatalf("error %v, want %v", tc.err, tc.want)
			}
		})
	}
	if st := e.tier.Stats(); st.Blocks != 0 || st.ReservedBytes != 0 {
		t.Fatalf("failed puts left %+v", st)
	}
}

func TestNewErrors(t *testing.T) {
	f := gputest.BuildFake(t)
	f.SetMemory(8 << 20)
	dev := f.Open(t)
	tests := []struct {
		name     string
		capacity int64
		opts     []hbm.Option
		inject   func()
		want     error
	}{
		{name: "too small", capacity: 4096, want: tiers.ErrInvalid},
		{name: "no streams", capacity: 4 << 20, opts: []hbm.Option{hbm.WithStreams(0)}, want: tiers.ErrInvalid},
		{name: "odd chunk", capacity: 4 << 20, opts: []hbm.Option{hbm.WithChunkSize(5000)}, want: tiers.ErrInvalid},
		{name: "arena larger than the device", capacity: 16 << 20, want: tiers.ErrExhausted},
		{name: "stream creation fails", capacity: 4 << 20, inject: func() { f.Fail("cuStreamCreate", 2, 1, gputest.CodeOutOfMemory) }, want: gpu.ErrOutOfMemory},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.inject != nil {
				tc.inject()
			}
			tier, err := hbm.New(dev, tc.capacity, tc.opts...)
			if err == nil {
				tier.Close()
				t.Fatal("New succeeded")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := hbm.New(nil, 4<<20); !errors.Is(err, tiers.ErrInvalid) {
		t.Fatalf("New(nil): %v", err)
	}
	dev.Close()
	f.CheckNoLeaks(t)
}

func TestCopyFailures(t *testing.T) {
	e := newTier(t, 4<<20)
	ctx := context.Background()
	k := key(t, 1)
	if err := e.tier.Put(ctx, k, layoutOf(64<<10), data(64<<10, 1)); err != nil {
		t.Fatal(err)
	}
	before := e.tier.Stats()

	e.fake.Fail("cuMemcpyHtoDAsync_v2", 0, 1, gputest.CodeIllegalAddress)
	err := e.tier.Put(ctx, key(t, 2), layoutOf(64<<10), data(64<<10, 2))
	if !errors.Is(err, gpu.ErrDriver) {
		t.Fatalf("put with a failing copy: %v, want a driver error", err)
	}
	if st := e.tier.Stats(); st != before {
		t.Fatalf("a failed put changed the stats: %+v, was %+v", st, before)
	}

	e.fake.Fail("cuStreamSynchronize", 0, 1, gputest.CodeIllegalAddress)
	if _, _, err := e.tier.Get(ctx, k, nil); !errors.Is(err, gpu.ErrDriver) {
		t.Fatalf("get with a failing copy: %v, want a driver error", err)
	}
	// The block survives a failed read.
	if _, got, err := e.tier.Get(ctx, k, nil); err != nil || !bytes.Equal(got, data(64<<10, 1)) {
		t.Fatalf("get after a failed get: %v", err)
	}
}

func TestClose(t *testing.T) {
	e := newTier(t, 4<<20)
	ctx := context.Background()
	if err := e.tier.Put(ctx, key(t, 1), layoutOf(4096), make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	if err := e.tier.Close(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"put":    e.tier.Put(ctx, key(t, 1), layoutOf(4096), make([]byte, 4096)),
		"get":    func() error { _, _, err := e.tier.Get(ctx, key(t, 1), nil); return err }(),
		"delete": e.tier.Delete(ctx, key(t, 1)),
		"locate": func() error { _, _, err := e.tier.Locate(key(t, 1)); return err }(),
		"ipc":    func() error { _, err := e.tier.AttachIPC(0); return err }(),
	} {
		if !errors.Is(err, tiers.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if e.fake.Stat("allocs") != 0 || e.fake.Stat("streams") != 0 {
		t.Fatalf("Close left %d allocations and %d streams", e.fake.Stat("allocs"), e.fake.Stat("streams"))
	}
}

// TestIPCExport opens the exported arena as an engine would and reads a
// block at the offset Locate gives. (The fake lets the exporting process
// open its own handle; CUDA does not, see the GPU-tagged test.)
func TestIPCExport(t *testing.T) {
	e := newTier(t, 8<<20)
	ctx := context.Background()
	for i := range 5 {
		if err := e.tier.Put(ctx, key(t, i), layoutOf(96<<10), data(96<<10, uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	lease, err := e.tier.AttachIPC(0)
	if err != nil {
		t.Fatal(err)
	}
	if lease.Size != 8<<20 || lease.Offset != 0 {
		t.Fatalf("exported size %d at offset %d", lease.Size, lease.Offset)
	}
	lease2, _ := e.tier.AttachIPC(0)
	if lease2.Handle != lease.Handle || lease2.ID == lease.ID {
		t.Fatal("the handle changed between leases, or two leases share an id")
	}
	e.tier.DetachIPC(lease2.ID)
	peer, err := e.dev.OpenIPCHandle(lease.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer e.tier.DetachIPC(lease.ID)
	defer e.dev.CloseIPCHandle(peer)
	s, err := e.dev.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	off, n, err := e.tier.Locate(key(t, 3))
	if err != nil || n != 96<<10 {
		t.Fatalf("Locate: %d, %d, %v", off, n, err)
	}
	got := make([]byte, n)
	if _, err := s.CopyD2H(got, peer+gpu.DevPtr(off)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data(96<<10, 3)) {
		t.Fatal("bytes at the located offset of the exported arena differ")
	}
	// Device to device, as an engine in this process would.
	dst, err := e.dev.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	defer e.dev.Free(dst)
	if _, err := s.CopyD2D(dst, e.tier.Base()+gpu.DevPtr(off), n); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.tier.Locate(key(t, 42)); !errors.Is(err, tiers.ErrNotFound) {
		t.Fatalf("Locate of a missing block: %v", err)
	}
}

// TestRegisteredHostArena copies from an mmap'd, registered region (the
// DRAM arena) and checks that the fake saw pinned copies only.
func TestRegisteredHostArena(t *testing.T) {
	e := newTier(t, 8<<20)
	const n = 4 << 20
	arena, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(arena)
	unregister, err := e.dev.RegisterHost(arena)
	if err != nil {
		t.Fatal(err)
	}
	defer unregister()
	copy(arena, data(1<<20, 5))
	ctx := context.Background()
	if err := e.tier.Put(ctx, key(t, 1), layoutOf(1<<20), arena[:1<<20]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.tier.Get(ctx, key(t, 1), arena[1<<20:1<<20]); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(arena[1<<20:2<<20], arena[:1<<20]) {
		t.Fatal("round trip through the registered arena differs")
	}
	if p, q := e.fake.Stat("pinned_copies"), e.fake.Stat("pageable_copies"); p != 2 || q != 0 {
		t.Fatalf("%d pinned and %d pageable copies, want 2 and 0", p, q)
	}
}

func TestConcurrent(t *testing.T) {
	e := newTier(t, 8<<20, hbm.WithChunkSize(1<<20), hbm.WithStreams(2))
	ctx := context.Background()
	const workers, keys, rounds = 6, 12, 60
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range rounds {
				ki := r.IntN(keys)
				k := key(t, ki)
				switch r.IntN(3) {
				case 0:
					// Every version of a key is 64 KiB of one byte,
					// so a torn read shows.
					v := byte(r.Uint32())
					if err := e.tier.Put(ctx, k, layoutOf(64<<10), bytes.Repeat([]byte{v}, 64<<10)); err != nil && !errors.Is(err, tiers.ErrFull) {
						t.Error(err)
						return
					}
				case 1:
					_, got, err := e.tier.Get(ctx, k, nil)
					if errors.Is(err, tiers.ErrNotFound) {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					if len(got) != 64<<10 || !bytes.Equal(got, bytes.Repeat(got[:1], len(got))) {
						t.Errorf("torn read of key %d", ki)
						return
					}
				case 2:
					if err := e.tier.Delete(ctx, k); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	st := e.tier.Stats()
	if st.UsedBytes != st.Blocks*(64<<10) || st.ReservedBytes != st.UsedBytes {
		t.Fatalf("accounting after the run: %+v", st)
	}
}

func TestFractionOfFree(t *testing.T) {
	tests := []struct {
		name     string
		free     int64
		fraction float64
		want     int64
	}{
		{"half", 80 << 30, 0.5, 40 << 30},
		{"rounded to MiB", 3<<20 + 12345, 1, 3 << 20},
		{"fraction above one", 10 << 20, 2, 10 << 20},
		{"zero", 10 << 20, 0, 0},
		{"no free memory", 0, 0.5, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := hbm.FractionOfFree(tc.free, tc.fraction); got != tc.want {
				t.Fatalf("FractionOfFree(%d, %v) = %d, want %d", tc.free, tc.fraction, got, tc.want)
			}
		})
	}
	f := gputest.BuildFake(t)
	dev := f.Open(t)
	c, err := hbm.CapacityFromDevice(dev, 0.25)
	if err != nil || c != gputest.DefaultMemory/4 {
		t.Fatalf("CapacityFromDevice = %d, %v; want a quarter of the fake's %d", c, err, gputest.DefaultMemory)
	}
}

func BenchmarkTier(b *testing.B) {
	f := gputest.BuildFake(b)
	dev := f.Open(b)
	tier, err := hbm.New(dev, 64<<20)
	if err != nil {
		b.Fatal(err)
	}
	defer tier.Close()
	ctx := context.Background()
	for _, n := range []int{64 << 10, 1 << 20, 4 << 20} {
		src := data(n, 1)
		k := key(b, n>>10)
		l := layoutOf(n)
		dst := make([]byte, 0, n)
		b.Run(fmt.Sprintf("op=put/size=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if err := tier.Put(ctx, k, l, src); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("op=get/size=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := tier.Get(ctx, k, dst[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("op=memcpy/size=%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			out := make([]byte, n)
			for b.Loop() {
				copy(out, src)
			}
		})
	}
}
