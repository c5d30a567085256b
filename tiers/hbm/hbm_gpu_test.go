//go:build gpu

package hbm_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvtier/kvtier/cgo/gpu"
	"github.com/kvtier/kvtier/tiers/hbm"
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

func realTier(t *testing.T, capacity int64) (gpu.Device, *hbm.Tier) {
	t.Helper()
	dev, err := gpu.Open()
	if err != nil {
		t.Fatalf("the gpu-tagged tests need a GPU and its driver: %v", err)
	}
	tier, err := hbm.New(dev, capacity)
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tier.Close(); err != nil {
			t.Error(err)
		}
		dev.Close()
	})
	return dev, tier
}

func TestGPUTier(t *testing.T) {
	dev, tier := realTier(t, 256<<20)
	ctx := context.Background()
	// The blocks come from a registered mmap'd region, as from the DRAM arena.
	const arenaSize = 32 << 20
	arena, err := syscall.Mmap(-1, 0, arenaSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(arena)
	unregister, err := dev.RegisterHost(arena)
	if err != nil {
		t.Fatal(err)
	}
	defer unregister()
	sizes := []int{64 << 10, 1 << 20, 4 << 20}
	off := 0
	for i, n := range sizes {
		copy(arena[off:], data(n, uint64(i)))
		if err := tier.Put(ctx, key(t, i), layoutOf(n), arena[off:off+n]); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	for round := range 50 {
		for i, n := range sizes {
			_, got, err := tier.Get(ctx, key(t, i), arena[16<<20:16<<20])
			if err != nil {
				t.Fatal(err)
			}
			if round == 0 && !bytes.Equal(got, data(n, uint64(i))) {
				t.Fatalf("block %d differs after a round trip through HBM", i)
			}
		}
	}
	lat := tier.Latency()
	t.Logf("HBM tier latency: get p50 %v p99 %v (copy p50 %v p99 %v); put p50 %v p99 %v",
		lat.Get.P50, lat.Get.P99, lat.GetCopy.P50, lat.GetCopy.P99, lat.Put.P50, lat.Put.P99)
	if lat.GetCopy.P50 <= 0 || lat.Get.Count != uint64(50*len(sizes)) {
		t.Fatalf("latency %+v", lat)
	}
}

const tierChildEnv = "KVTIER_HBM_IPC_CHILD"

// TestGPUTierIPC has a child process open the exported arena, as an engine
// would, and read a block at the offset Locate gives.
func TestGPUTierIPC(t *testing.T) {
	_, tier := realTier(t, 64<<20)
	ctx := context.Background()
	for i := range 4 {
		if err := tier.Put(ctx, key(t, i), layoutOf(1<<20), data(1<<20, uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	lease, err := tier.AttachIPC(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// The child closes its mapping before it exits.
	defer tier.DetachIPC(lease.ID)
	h := lease.Handle
	off, n, err := tier.Locate(key(t, 2))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestGPUTierIPCChild$", "-test.v")
	cmd.Env = append(os.Environ(), tierChildEnv+"="+hex.EncodeToString(h[:])+","+strconv.FormatInt(off, 10)+","+strconv.FormatInt(n, 10))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "engine ok") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func TestGPUTierIPCChild(t *testing.T) {
	env := os.Getenv(tierChildEnv)
	if env == "" {
		t.Skip("run by TestGPUTierIPC")
	}
	parts := strings.Split(env, ",")
	raw, _ := hex.DecodeString(parts[0])
	off, _ := strconv.ParseInt(parts[1], 10, 64)
	n, _ := strconv.ParseInt(parts[2], 10, 64)
	var h gpu.IPCHandle
	copy(h[:], raw)
	dev, err := gpu.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	base, err := dev.OpenIPCHandle(h)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.CloseIPCHandle(base)
	dst, err := dev.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Free(dst)
	s, err := dev.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CopyD2D(dst, base+gpu.DevPtr(off), n); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, n)
	if _, err := s.CopyD2H(got, dst); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data(int(n), 2)) {
		t.Fatal("block read through the exported arena differs")
	}
	t.Log("engine ok")
}
