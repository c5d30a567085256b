package hbm_test

import (
	"errors"
	"testing"
	"time"

	"github.com/kvtier/kvtier/cgo/gpu"
	"github.com/kvtier/kvtier/cgo/gpu/gputest"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/hbm"
)

// openTier is newTier without the cleanup's Close: these tests close the
// tier themselves.
func openTier(t *testing.T, capacity int64) (*gputest.Fake, gpu.Device, *hbm.Tier) {
	t.Helper()
	return openTierWith(t, capacity)
}

func openTierWith(t *testing.T, capacity int64, opts ...hbm.Option) (*gputest.Fake, gpu.Device, *hbm.Tier) {
	t.Helper()
	f := gputest.BuildFake(t)
	dev := f.Open(t)
	tier, err := hbm.New(dev, capacity, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return f, dev, tier
}

// closeAsync starts Close and returns a channel that receives its result.
func closeAsync(tier *hbm.Tier) <-chan error {
	done := make(chan error, 1)
	go func() { done <- tier.Close() }()
	return done
}

// TestCloseWaitsForImporters: an importer has the arena mapped through its
// IPC handle. Close must tell it (Closing) and must not free the arena
// until it detaches; the fake counts frees of an allocation whose export
// is still open (undefined behaviour on a real GPU).
func TestCloseWaitsForImporters(t *testing.T) {
	f, dev, tier := openTier(t, 4<<20)
	lease, err := tier.AttachIPC(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := dev.OpenIPCHandle(lease.Handle)
	if err != nil {
		t.Fatal(err)
	}
	done := closeAsync(tier)
	select {
	case <-tier.Closing():
	case <-time.After(5 * time.Second):
		t.Fatal("Closing was not signalled")
	}
	select {
	case err := <-done:
		t.Fatalf("Close returned (%v) while an importer still maps the arena", err)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := tier.AttachIPC(0); !errors.Is(err, tiers.ErrClosed) {
		t.Errorf("AttachIPC while closing: %v, want ErrClosed", err)
	}
	// The importer may renew while it finishes, then closes and detaches.
	if _, err := tier.RenewIPC(lease.ID, time.Minute); err != nil {
		t.Errorf("RenewIPC while closing: %v", err)
	}
	if err := dev.CloseIPCHandle(peer); err != nil {
		t.Fatal(err)
	}
	if err := tier.DetachIPC(lease.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after the importer detached")
	}
	if n := f.Stat("freed_imported"); n != 0 {
		t.Fatalf("the arena was freed %d times while an importer mapped it", n)
	}
	if f.Stat("allocs") != 0 {
		t.Fatalf("Close left %d allocations", f.Stat("allocs"))
	}
}

// TestCloseAfterLeaseExpiry: an importer that neither detaches nor renews
// holds Close only until its lease lapses.
func TestCloseAfterLeaseExpiry(t *testing.T) {
	f, _, tier := openTier(t, 4<<20)
	const ttl = 300 * time.Millisecond
	lease, err := tier.AttachIPC(ttl)
	if err != nil {
		t.Fatal(err)
	}
	if n := tier.Importers(); n != 1 {
		t.Fatalf("Importers = %d, want 1", n)
	}
	start := time.Now()
	if err := tier.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < ttl-50*time.Millisecond {
		t.Fatalf("Close returned after %v, before the %v lease lapsed", took, ttl)
	}
	if _, err := tier.RenewIPC(lease.ID, time.Second); !errors.Is(err, tiers.ErrNotFound) {
		t.Fatalf("RenewIPC of a lapsed lease: %v, want ErrNotFound", err)
	}
	if f.Stat("allocs") != 0 {
		t.Fatalf("Close left %d allocations", f.Stat("allocs"))
	}
}

func TestIPCLeaseValidation(t *testing.T) {
	_, _, tier := openTier(t, 4<<20)
	defer tier.Close()
	if _, err := tier.AttachIPC(-time.Second); !errors.Is(err, tiers.ErrInvalid) {
		t.Errorf("negative lease: %v, want ErrInvalid", err)
	}
	l, err := tier.AttachIPC(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(l.Expires); d > hbm.MaxIPCLease {
		t.Errorf("lease of %v granted, above MaxIPCLease", d)
	}
	if _, err := tier.RenewIPC(l.ID+100, 0); !errors.Is(err, tiers.ErrNotFound) {
		t.Errorf("renewing an unknown lease: %v, want ErrNotFound", err)
	}
	tier.DetachIPC(l.ID)
	tier.DetachIPC(l.ID) // twice is fine
	if n := tier.Importers(); n != 0 {
		t.Errorf("Importers = %d after detach", n)
	}
}

// TestArenaIsItsOwnAllocation: the arena's allocation is whole 2 MiB
// granules, so a driver never carves it out of a larger block that an
// IPC export would expose whole.
func TestArenaIsItsOwnAllocation(t *testing.T) {
	for _, c := range []int64{1 << 20, 3 << 20, 4 << 20} {
		f, _, tier := openTier(t, c)
		used := f.Stat("used0")
		tier.Close()
		if used%(2<<20) != 0 || used < c {
			t.Errorf("capacity %d: device allocation of %d bytes, want whole 2 MiB granules", c, used)
		}
	}
}
