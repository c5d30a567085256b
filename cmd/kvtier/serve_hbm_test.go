//go:build linux && cgo

package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/kvtier/kvtier/cgo/gpu"
	"github.com/kvtier/kvtier/cgo/gpu/gputest"
	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/dram"
)

// TestOpenHBMPinsLazily: serve used to page-lock the whole DRAM arena when
// the HBM tier opened (committing and pinning every page at start). Now
// nothing is pinned at start and the arena is pinned a chunk at a time as
// the tier copies from it.
func TestOpenHBMPinsLazily(t *testing.T) {
	fake := gputest.BuildFake(t)
	arena, err := dram.New(192<<20, dram.WithHugePages(false))
	if err != nil {
		t.Fatal(err)
	}
	defer arena.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := openHBM(arena, 8<<20, 0, log, gpu.WithLibraryPath(fake.Path))
	if err != nil || h == nil {
		t.Fatalf("openHBM on the fake device: %v, %v", h, err)
	}
	defer h.closeDevice()
	if n := fake.Stat("registered_bytes"); n != 0 {
		t.Fatalf("%d bytes of the DRAM arena page-locked at start, want 0", n)
	}
	hash, err := tiers.HashFromBytes(make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}
	k := tiers.Key{Namespace: "m", Hash: hash, Layer: tiers.AllLayers}
	l := tiers.Layout{DType: codec.FP16, KVHeads: 1, HeadDim: 128, Tokens: 64}
	src := arena.Base()[100<<20 : 100<<20+l.Size()]
	if err := h.tier.Put(context.Background(), k, l, src); err != nil {
		t.Fatal(err)
	}
	if n := fake.Stat("registered_bytes"); n != hostPinChunk {
		t.Fatalf("%d bytes page-locked after one put, want one %d-byte chunk", n, int64(hostPinChunk))
	}
	// The daemon's view of the tier's IPC leases.
	exp := hbmArena{h.tier}
	ex, err := exp.AttachIPC(time.Second)
	if err != nil || ex.Size != 8<<20 || ex.Offset != 0 || ex.Handle == [64]byte{} {
		t.Fatalf("AttachIPC through the adapter = %+v, %v", ex, err)
	}
	if err := exp.RenewIPC(ex.ID, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := exp.DetachIPC(ex.ID); err != nil || h.tier.Importers() != 0 {
		t.Fatalf("DetachIPC: %v, %d importers left", err, h.tier.Importers())
	}
	h.release()
	if err := h.tier.Close(); err != nil {
		t.Fatal(err)
	}
	if n := fake.Stat("registered_bytes"); n != 0 {
		t.Fatalf("%d bytes still page-locked after release", n)
	}
}
