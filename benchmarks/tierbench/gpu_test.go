package tierbench

import (
	"context"
	"testing"

	"github.com/kvtier/kvtier/benchmarks/gpulink"
	"github.com/kvtier/kvtier/cgo/gpu/gputest"
)

// TestGPURows runs the gpu rows against the fake device library (its
// figures are memmove speeds and mean nothing; the rows' shape is checked).
func TestGPURows(t *testing.T) {
	f := gputest.BuildFake(t)
	dev := f.Open(t)
	cfg := Config{Tiers: []string{TierGPU}, Sizes: []int{64 << 10, 1 << 20}, GPU: dev,
		GPULink: gpulink.Config{LatencyIters: 5, BandwidthBytes: 8 << 20, Warmup: 1}}
	rows, err := Run(context.Background(), cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, r := range rows {
		got[r.Tier]++
		if r.GBps <= 0 || r.P50US <= 0 || r.BlockBytes == 0 || r.Capacity <= 0 {
			t.Errorf("row %+v", r)
		}
		if r.Tier == "hbm" && (r.Ref != "pinned-d2h-copy" || r.Ratio <= 0) {
			t.Errorf("hbm row without its driver-copy reference: %+v", r)
		}
	}
	for _, tier := range []string{"pcie-h2d", "pcie-d2h", "hbm-d2d", "hbm"} {
		if got[tier] != 2 {
			t.Errorf("%s: %d rows, want 2 (%v)", tier, got[tier], got)
		}
	}
}
