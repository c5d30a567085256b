package hbm_test

import (
	"bytes"
	"context"
	"syscall"
	"testing"

	"github.com/kvtier/kvtier/tiers/hbm"
)

// TestHostRegionPinnedLazily: nothing of the host region is page-locked at
// New; each chunk is registered once, when a copy first touches it; the
// copies from registered chunks are pinned; Close unregisters everything.
func TestHostRegionPinnedLazily(t *testing.T) {
	const regionBytes, chunk = 64 << 20, 4 << 20
	region, err := syscall.Mmap(-1, 0, regionBytes, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(region)
	f, _, tier := openTierWith(t, 8<<20, hbm.WithHostRegion(region, chunk))
	if n := f.Stat("registered_bytes"); n != 0 {
		t.Fatalf("%d host bytes page-locked at New, want 0", n)
	}
	ctx := context.Background()
	const n = 64 << 10
	src := region[5*chunk+4096 : 5*chunk+4096+n] // chunk 5
	copy(src, data(n, 1))
	for i := range 3 {
		if err := tier.Put(ctx, key(t, i), layoutOf(n), src); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.Stat("registered_bytes"); got != chunk {
		t.Fatalf("after puts from one chunk: %d bytes registered, want %d", got, chunk)
	}
	if c := f.Calls("cuMemHostRegister_v2"); c != 1 {
		t.Fatalf("%d registrations for one chunk, want 1", c)
	}
	// A Get into chunk 9, and one straddling chunks 11 and 12.
	dst := region[9*chunk : 9*chunk : 10*chunk]
	_, got, err := tier.Get(ctx, key(t, 1), dst)
	if err != nil || !bytes.Equal(got, data(n, 1)) {
		t.Fatalf("Get into the region: %v", err)
	}
	straddle := region[12*chunk-n/2 : 12*chunk-n/2 : 13*chunk]
	if _, _, err := tier.Get(ctx, key(t, 2), straddle); err != nil {
		t.Fatal(err)
	}
	if got := f.Stat("registered_bytes"); got != 4*chunk {
		t.Fatalf("%d bytes registered, want 4 chunks (5, 9, 11, 12)", got)
	}
	if pinned, err := tier.HostPinned(); pinned != 4*chunk || err != nil {
		t.Fatalf("HostPinned = %d, %v; want %d", pinned, err, 4*chunk)
	}
	// Memory outside the region (the Go heap) is left alone.
	if err := tier.Put(ctx, key(t, 9), layoutOf(n), data(n, 9)); err != nil {
		t.Fatal(err)
	}
	// Three puts and the Get within chunk 9 ran pinned; the Get spanning
	// two registrations is staged, as a driver does with a copy across
	// two registered ranges; the put from the heap is pageable.
	if pinned, pageable := f.Stat("pinned_copies"), f.Stat("pageable_copies"); pinned != 4 || pageable != 2 {
		t.Fatalf("%d copies pinned and %d pageable, want 4 and 2", pinned, pageable)
	}
	if err := tier.Close(); err != nil {
		t.Fatal(err)
	}
	if got := f.Stat("registered_bytes"); got != 0 {
		t.Fatalf("Close left %d bytes registered", got)
	}
}

// TestHostRegionRegistrationFails: a chunk that cannot be page-locked is
// reported, and copies from it still work (staged).
func TestHostRegionRegistrationFails(t *testing.T) {
	region, err := syscall.Mmap(-1, 0, 8<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(region)
	f, _, tier := openTierWith(t, 4<<20, hbm.WithHostRegion(region, 1<<20))
	defer tier.Close()
	f.Fail("cuMemHostRegister_v2", 0, 1, 2 /* out of memory */)
	src := region[:4096]
	if err := tier.Put(context.Background(), key(t, 1), layoutOf(4096), src); err != nil {
		t.Fatalf("a put from a chunk that could not be pinned: %v", err)
	}
	if pinned, err := tier.HostPinned(); pinned != 0 || err == nil {
		t.Fatalf("HostPinned = %d, %v; want 0 and the registration error", pinned, err)
	}
}
