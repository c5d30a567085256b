package tierbench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

func TestRunPair(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		pair    Pair
		wantErr error
		wantOps int64 // per side; 0: at least one round
		flushes int
		cancel  bool
	}{
		{"iterations", Pair{Bytes: 1 << 20, Iterations: 10, Batch: 2}, nil, 10, 0, false},
		{"parallel", Pair{Bytes: 1 << 20, Iterations: 12, Batch: 1, Parallel: 3}, nil, 12, 0, false},
		{"duration", Pair{Bytes: 64 << 10, Duration: 20 * time.Millisecond}, nil, 0, 0, false},
		{"flush per batch", Pair{Bytes: 4096, Iterations: 8, Batch: 4, Ref: Side{Flush: func(int) error { return nil }}}, nil, 8, 2, false},
		{"tier error", Pair{Bytes: 4096, Iterations: 8, Tier: Side{Op: func(int, int) error { return boom }}}, boom, 0, 0, false},
		{"no bytes", Pair{Iterations: 8}, ErrInvalid, 0, 0, false},
		{"no budget", Pair{Bytes: 4096}, ErrInvalid, 0, 0, false},
		{"cancelled", Pair{Bytes: 4096, Duration: time.Hour}, context.Canceled, 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.pair
			var mu sync.Mutex // protects seen
			var seen [2]map[[2]int]bool
			for s := range seen {
				seen[s] = map[[2]int]bool{}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ops := func(side int) func(w, i int) error {
				return func(w, i int) error {
					mu.Lock()
					seen[side][[2]int{w, i}] = true
					mu.Unlock()
					if tc.cancel && i == 3 {
						cancel()
					}
					time.Sleep(10 * time.Microsecond)
					return nil
				}
			}
			if p.Tier.Op == nil {
				p.Tier.Op = ops(0)
			}
			if p.Ref.Op == nil {
				p.Ref.Op = ops(1)
			}
			flushes := 0
			if p.Ref.Flush != nil {
				p.Ref.Flush = func(int) error { flushes++; return nil }
			}
			tier, ref, err := RunPair(ctx, p, nil)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				if tc.cancel && (tier.Ops == 0 || tier.Latency.Count() != tier.Ops) {
					t.Fatalf("cancelled run lost what it measured: %+v", tier)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantOps > 0 && (tier.Ops != tc.wantOps || ref.Ops != tc.wantOps) {
				t.Fatalf("ops tier %d ref %d, want %d", tier.Ops, ref.Ops, tc.wantOps)
			}
			if tier.Ops == 0 || tier.Ops != ref.Ops || tier.Latency.Count() != tier.Ops || tier.Bytes != tier.Ops*int64(p.Bytes) {
				t.Fatalf("tier %+v ref %+v", tier, ref)
			}
			if tier.GBps() <= 0 || ref.GBps() <= 0 || tier.Latency.QuantileUS(0.5) < 10 {
				t.Fatalf("implausible: %.3f GB/s, %.3f GB/s, p50 %.1f µs", tier.GBps(), ref.GBps(), tier.Latency.QuantileUS(0.5))
			}
			if tc.flushes > 0 && flushes != tc.flushes {
				t.Fatalf("%d flushes, want %d", flushes, tc.flushes)
			}
			if len(seen[0]) > 0 && fmt.Sprint(seen[0]) != fmt.Sprint(seen[1]) {
				t.Fatal("the sides visited different operations")
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{Dir: "/tmp"}, true},
		{"nvme without dir", Config{Tiers: []string{TierNVMe}}, false},
		{"dram without dir", Config{Tiers: []string{TierDRAM}}, true},
		{"unknown tier", Config{Tiers: []string{"tape"}}, false},
		{"odd size", Config{Tiers: []string{TierDRAM}, Sizes: []int{5000}}, false},
		{"size beyond arena", Config{Tiers: []string{TierDRAM}, Sizes: []int{64 << 20}, DRAMBytes: 256 << 20}, false},
		{"unknown codec", Config{Tiers: []string{TierDRAM}, Codecs: []string{"int9"}}, false},
		{"promote without dir", Config{Tiers: []string{TierPromote}}, false},
		{"unknown op", Config{Tiers: []string{TierDRAM}, Ops: []string{"erase"}}, false},
		{"unknown order", Config{Tiers: []string{TierDRAM}, Orders: []string{"zigzag"}}, false},
		{"parallel too high", Config{Tiers: []string{TierDRAM}, Parallel: 1000}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.EnsureDefaults()
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("Validate: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestRun runs every CPU tier at one small size and checks the rows'
// shape: every cell present, references measured, O_DIRECT said.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and reads a disk data set")
	}
	cfg := Config{Tiers: []string{TierDRAM, TierNVMe, TierPromote, TierGPU}, Codecs: []string{"lossless", "int8"},
		Sizes: []int{64 << 10}, Parallel: 2, Iterations: 32,
		Dir: t.TempDir(), DRAMBytes: 8 << 20, NVMeSetBytes: 4 << 20}
	var last float64
	rows, err := Run(context.Background(), cfg, func(f float64, _ string) {
		if f < last-1e-9 || f > 1+1e-9 {
			t.Errorf("progress went from %v to %v", last, f)
		}
		last = f
	}, nil)
	if errors.Is(err, ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	// Per tier: reads seq/random × p1/p2, writes seq × p1/p2.
	// Promotion: reads only, per codec.
	want := map[string]int{TierDRAM: 6, TierNVMe: 6, "promote-lossless": 4, "promote-int8": 4}
	got := map[string]int{}
	for _, r := range rows {
		got[r.Tier]++
		if _, ok := want[r.Tier]; !ok {
			continue // GPU rows, where a GPU is found
		}
		if r.GBps <= 0 || r.RefGBps <= 0 || r.Ratio <= 0 || r.P50US <= 0 || r.P99US < r.P50US || r.Ref == "" || r.Capacity <= 0 {
			t.Errorf("implausible row %+v", r)
		}
		if r.Tier == TierNVMe && r.DirectIO != (r.Op == OpRead) {
			t.Errorf("nvme %s: direct_io %v", r.Op, r.DirectIO)
		}
	}
	for tier, n := range want {
		if got[tier] != n {
			t.Errorf("%s: %d rows, want %d", tier, got[tier], n)
		}
	}
	if last < 1-1e-9 {
		t.Errorf("progress ended at %v", last)
	}
	if err := Plot(t.TempDir()+"/t.svg", rows, "test"); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkTiers runs the command's measurement (Run) with b.N operations
// per side and cell at 64 KiB and 1 MiB, and reports each row's ratio to
// its reference (ns/op includes the setup: the metrics are the figures;
// the GB/s metrics are bytes over each side's measured time). Directory: $KVTIER_BENCH_DIR, else a temporary one.
//
//	go test -run '^$' -bench Tiers -benchtime 200x ./benchmarks/tierbench
func BenchmarkTiers(b *testing.B) {
	dir := os.Getenv("KVTIER_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	for _, tier := range []string{TierDRAM, TierNVMe} {
		for _, n := range []int{64 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("tier=%s/size=%d", tier, n), func(b *testing.B) {
				cfg := Config{Tiers: []string{tier}, Sizes: []int{n}, Parallel: 1, Orders: []string{Seq}, Iterations: b.N,
					Dir: dir, DRAMBytes: 64 << 20, NVMeSetBytes: 256 << 20}
				rows, err := Run(context.Background(), cfg, nil, nil)
				if errors.Is(err, ErrUnsupported) {
					b.Skip(err)
				}
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range rows {
					b.ReportMetric(r.Ratio, r.Op+"/ref")
					b.ReportMetric(r.GBps, r.Op+"-GB/s")
					b.ReportMetric(r.RefGBps, r.Op+"-ref-GB/s")
				}
			})
		}
	}
}
