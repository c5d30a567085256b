package gpulink_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kvtier/kvtier/benchmarks/gpulink"
	"github.com/kvtier/kvtier/cgo/gpu"
	"github.com/kvtier/kvtier/cgo/gpu/gputest"
	"github.com/kvtier/kvtier/cgo/nvmlinfo"
)

// small keeps the measurement short on the fake device, whose numbers
// are memmove speeds: only the code path is under test.
var small = gpulink.Config{
	Sizes:          []int64{64 << 10, 1 << 20},
	LatencyIters:   5,
	BandwidthBytes: 2 << 20,
	Warmup:         1,
}

func TestMeasure(t *testing.T) {
	tests := []struct {
		host         gpulink.HostMode
		wantPinned   bool // host copies run from registered or pinned memory
		wantPageable bool
	}{
		{gpulink.Pinned, true, false},
		{gpulink.Registered, true, false},
		{gpulink.Pageable, false, true},
	}
	for _, tc := range tests {
		t.Run(string(tc.host), func(t *testing.T) {
			f := gputest.BuildFake(t)
			dev := f.Open(t)
			cfg := small
			cfg.Host = tc.host
			link := gpulink.Link{Source: "test", MaxBytesPerSec: 10e9}
			rep, err := gpulink.Measure(context.Background(), dev, link, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Results) != 6 || rep.Device.Name == "" || rep.Link != link {
				t.Fatalf("report %+v", rep)
			}
			for _, r := range rep.Results {
				if r.BytesPerSec <= 0 || r.P50 <= 0 || r.P99 < r.P50 || r.Copies < 8 || r.Host != tc.host {
					t.Errorf("result %+v", r)
				}
				if (r.Direction == gpulink.D2D) != (r.LinkRatio == 0) {
					t.Errorf("%s: link ratio %v", r.Direction, r.LinkRatio)
				}
			}
			pinned, pageable := f.Stat("pinned_copies"), f.Stat("pageable_copies")
			if (pinned > 0) != tc.wantPinned || (pageable > 0) != tc.wantPageable {
				t.Errorf("%d pinned and %d pageable copies", pinned, pageable)
			}
			dev.Close()
			f.CheckNoLeaks(t)
		})
	}
}

func TestMeasureErrors(t *testing.T) {
	f := gputest.BuildFake(t)
	dev := f.Open(t)
	ctx := context.Background()
	for name, cfg := range map[string]gpulink.Config{
		"bad size":      {Sizes: []int64{-1}},
		"bad direction": {Directions: []gpulink.Direction{"up"}},
		"bad host":      {Host: "swap"},
	} {
		if _, err := gpulink.Measure(ctx, dev, gpulink.Link{}, cfg); err == nil {
			t.Errorf("%s: Measure succeeded", name)
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := gpulink.Measure(canceled, dev, gpulink.Link{}, small); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}
	f.Fail("cuMemcpyDtoHAsync_v2", 3, 1, gputest.CodeIllegalAddress)
	cfg := small
	cfg.Directions = []gpulink.Direction{gpulink.D2H}
	if _, err := gpulink.Measure(ctx, dev, gpulink.Link{}, cfg); !errors.Is(err, gpu.ErrDriver) {
		t.Errorf("copy failure: %v", err)
	}
	dev.Close()
	f.CheckNoLeaks(t)
}

func TestCheck(t *testing.T) {
	full := func(ratio float64) gpulink.Report {
		r := gpulink.Report{Link: gpulink.Link{MaxBytesPerSec: 50e9}}
		for _, d := range []gpulink.Direction{gpulink.H2D, gpulink.D2H, gpulink.D2D} {
			for _, s := range gpulink.DefaultSizes {
				r.Results = append(r.Results, gpulink.Result{Direction: d, Size: s, BytesPerSec: ratio * 50e9, LinkRatio: ratio})
			}
		}
		return r
	}
	tests := []struct {
		name     string
		rep      gpulink.Report
		wantPass int
		reason   string
	}{
		{"all pass", full(0.85), 4, "0.85×"},
		{"all fail", full(0.5), 0, "0.50×"},
		{"unknown link", func() gpulink.Report { r := full(0.9); r.Link.MaxBytesPerSec = 0; return r }(), 0, "unknown"},
		{"not measured", gpulink.Report{Link: gpulink.Link{MaxBytesPerSec: 1}}, 0, "not measured"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vs := tc.rep.Check(0.8)
			if len(vs) != 4 {
				t.Fatalf("%d verdicts, want 4 (h2d, d2h × 1 MiB, 4 MiB)", len(vs))
			}
			pass := 0
			for _, v := range vs {
				if v.Pass {
					pass++
				}
				if !strings.Contains(v.Reason, tc.reason) {
					t.Errorf("reason %q lacks %q", v.Reason, tc.reason)
				}
			}
			if pass != tc.wantPass {
				t.Fatalf("%d passed, want %d", pass, tc.wantPass)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name    string
		samples []time.Duration
		q       float64
		want    time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		{"median of odd", ms(5, 1, 3), 0.5, 3 * time.Millisecond},
		{"median of even", ms(4, 1, 3, 2), 0.5, 2 * time.Millisecond},
		{"p99 of 100", append(ms(make([]int, 98)...), ms(50, 100)...), 0.99, 50 * time.Millisecond},
		{"max", ms(1, 2, 3), 1, 3 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := gpulink.Percentile(tc.samples, tc.q); got != tc.want {
				t.Fatalf("Percentile = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSizes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		out  string
	}{
		{"64KiB", 64 << 10, "64KiB"}, {"1MiB", 1 << 20, "1MiB"}, {"4M", 4 << 20, "4MiB"},
		{" 2GiB", 2 << 30, "2GiB"}, {"1000", 1000, "1000B"}, {"3KB", 3 << 10, "3KiB"},
	} {
		got, err := gpulink.ParseSize(tc.in)
		if err != nil || got != tc.want || gpulink.FormatSize(got) != tc.out {
			t.Errorf("ParseSize(%q) = %d, %v; FormatSize = %q", tc.in, got, err, gpulink.FormatSize(got))
		}
	}
	for _, bad := range []string{"", "KiB", "-1MiB", "0", "1TiB", "9999999999G"} {
		if _, err := gpulink.ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) succeeded", bad)
		}
	}
}

func TestLayoutFor(t *testing.T) {
	for _, tc := range []struct {
		size int64
		ok   bool
	}{{512, true}, {64 << 10, true}, {1 << 20, true}, {64 << 20, true}, {100, false}, {0, false}} {
		l, err := gpulink.LayoutFor(tc.size)
		if (err == nil) != tc.ok || (tc.ok && l.Size() != tc.size) {
			t.Errorf("LayoutFor(%d) = %v (%d bytes), %v", tc.size, l, l.Size(), err)
		}
	}
}

func TestMeasureTierGet(t *testing.T) {
	f := gputest.BuildFake(t)
	dev := f.Open(t)
	r, err := gpulink.MeasureTierGet(context.Background(), dev, 256<<10, 40)
	if err != nil {
		t.Fatal(err)
	}
	if r.Gets != 40 || r.P50 <= 0 || r.P99 < r.P50 || r.CopyP50 <= 0 || r.BytesPerSec <= 0 {
		t.Fatalf("result %+v", r)
	}
	if _, err := gpulink.MeasureTierGet(context.Background(), dev, 1000, 1); err == nil {
		t.Fatal("a size without a layout was accepted")
	}
	dev.Close()
	f.CheckNoLeaks(t)
}

func TestLinkForNVML(t *testing.T) {
	src, err := os.ReadFile("../../cgo/nvmlinfo/testdata/fakenvml.c")
	if err != nil {
		t.Fatal(err)
	}
	f := gputest.BuildFake(t)
	dev := f.Open(t) // bus 0000:10:00.0, as the fake NVML's first device
	nvml := gputest.CompileC(t, "libnvidia-ml.so.1", src)
	l := gpulink.LinkFor(dev, nvmlinfo.WithLibraryPath(nvml))
	if l.Source != "nvml" || l.MaxGen != 5 || l.MaxWidth != 16 || l.MaxBytesPerSec != nvmlinfo.LinkBandwidth(5, 16) || l.Name == "" {
		t.Fatalf("link %+v", l)
	}
	rep := gpulink.Report{Device: dev.Info(), Link: l, Results: []gpulink.Result{{Direction: gpulink.H2D, Size: 1 << 20, Host: gpulink.Pinned, BytesPerSec: 55e9, LinkRatio: 55e9 / l.MaxBytesPerSec, P50: 20 * time.Microsecond, P99: 30 * time.Microsecond}}}
	rep.Tier = &gpulink.TierResult{Size: 1 << 20, Gets: 10, P50: time.Microsecond, P99: 2 * time.Microsecond}
	var buf bytes.Buffer
	if err := rep.WriteTable(&buf, rep.Check(0.8)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"Fake GPU 0", "gen5 x16", "63.0 GB/s", "h2d", "1MiB", "0.87", "20.0µs", "hbm tier get 1MiB", "PASS h2d 1MiB", "FAIL d2h 4MiB: not measured"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestLinkForNoTelemetry(t *testing.T) {
	f := gputest.BuildFake(t, gputest.NoOptional) // no bus id: no sysfs lookup
	dev := f.Open(t)
	l := gpulink.LinkFor(dev, nvmlinfo.WithLibraryPath(t.TempDir()+"/none.so"))
	if l.MaxBytesPerSec != 0 || l.Source != "" || l.UtilGPU != -1 {
		t.Fatalf("link %+v", l)
	}
}
