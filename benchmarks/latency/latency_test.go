package latency

import (
	"math"
	"testing"
	"time"
)

func TestQuantiles(t *testing.T) {
	for _, tc := range []struct {
		name    string
		values  []time.Duration
		q, want float64 // want in µs
	}{
		{"empty", nil, 0.5, 0},
		{"one", []time.Duration{50 * time.Microsecond}, 0.99, 50},
		{"median", []time.Duration{10 * time.Microsecond, 20 * time.Microsecond, 30 * time.Microsecond}, 0.5, 20},
		{"p99 of 100", ramp(100), 0.99, 99},
		{"clamped high", []time.Duration{time.Hour}, 0.5, 600e6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := New(), New()
			for i, v := range tc.values {
				if i%2 == 0 {
					a.Record(v)
				} else {
					b.Record(v)
				}
			}
			a.Merge(b)
			if a.Count() != int64(len(tc.values)) {
				t.Fatalf("count %d, want %d", a.Count(), len(tc.values))
			}
			if got := a.QuantileUS(tc.q); math.Abs(got-tc.want) > tc.want*0.002+1e-9 {
				t.Fatalf("q%.2f = %.3f µs, want %.3f", tc.q, got, tc.want)
			}
		})
	}
}

func ramp(n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(i+1) * time.Microsecond
	}
	return out
}

func TestRecordDoesNotAllocate(t *testing.T) {
	h := New()
	if n := testing.AllocsPerRun(100, func() { h.Record(123 * time.Microsecond) }); n != 0 {
		t.Fatalf("%v allocations per Record", n)
	}
}
