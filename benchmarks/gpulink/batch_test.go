package gpulink_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/kvtier/kvtier/benchmarks/gpulink"
	"github.com/kvtier/kvtier/cgo/gpu/gputest"
)

// TestBandwidthBatchesEnqueues: the bandwidth phase of a cell queues its
// copies in one call into the driver, so the small-block rows measure the
// link rather than a cgo call, a lock and a context bind per copy. Each
// call into the shim binds the context once (cuCtxSetCurrent), so the
// binds counted during Measure are about the latency copies alone.
func TestBandwidthBatchesEnqueues(t *testing.T) {
	f := gputest.BuildFake(t)
	dev := f.Open(t)
	cfg := gpulink.Config{
		Sizes:          []int64{64 << 10},
		Directions:     []gpulink.Direction{gpulink.H2D, gpulink.D2H, gpulink.D2D},
		LatencyIters:   5,
		BandwidthBytes: 2000 * 64 << 10, // 2000 copies per cell
		Warmup:         1,
	}
	before := f.Calls("cuCtxSetCurrent")
	rep, err := gpulink.Measure(context.Background(), dev, gpulink.Link{MaxBytesPerSec: 10e9}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	binds := f.Calls("cuCtxSetCurrent") - before
	copies := 0
	for _, r := range rep.Results {
		copies += r.Copies
		if r.Copies != 2000 {
			t.Errorf("%s: %d copies, want 2000", r.Direction, r.Copies)
		}
		if r.EnqueueNsPerCopy <= 0 || r.EnqueueShare <= 0 {
			t.Errorf("%s: enqueue not measured: %+v", r.Direction, r)
		}
		if r.EnqueueBound != (r.EnqueueShare >= 0.9) {
			t.Errorf("%s: EnqueueBound %v with share %.2f", r.Direction, r.EnqueueBound, r.EnqueueShare)
		}
	}
	if memcpys := f.Calls("cuMemcpyHtoDAsync_v2") + f.Calls("cuMemcpyDtoHAsync_v2") + f.Calls("cuMemcpyDtoDAsync_v2"); memcpys < int64(copies) {
		t.Fatalf("%d copies reached the driver, want at least %d", memcpys, copies)
	}
	if binds > 200 {
		t.Fatalf("%d context binds for %d streamed copies: the copies were queued one call each", binds, copies)
	}
	// The fake runs copies as they are queued, so its rows are
	// enqueue-bound, and the table says so.
	var b bytes.Buffer
	if err := rep.WriteTable(&b, nil); err != nil {
		t.Fatal(err)
	}
	if rep.Results[0].EnqueueBound && !strings.Contains(b.String(), "enqueue-bound*") {
		t.Errorf("an enqueue-bound row is not labelled:\n%s", b.String())
	}
}
