package dram

import (
	"fmt"
	"testing"
	"time"

	"github.com/kvtier/kvtier/tiers"
)

var benchSizes = []int64{64 * KiB, 256 * KiB, MiB, 4 * MiB}

// benchWindow is the footprint the benchmarks cycle through: larger than
// the CPU caches, so puts write and gets read memory, not cache, as they do
// in a cache of many blocks. The references cycle through the same footprint.
const benchWindow = 64 * MiB

// benchArena returns an arena of 2×benchWindow, closed when the benchmark
// ends, and a benchWindow buffer for the memcpy references, both faulted in
// before timing (WithPrefault maps the arena, but some hypervisors still
// fault on the first write to a page).
func benchArena(b *testing.B) (*keyed, []byte) {
	a := newArena(b, 2*benchWindow, WithPrefault(true))
	prefault(a.Base())
	window := make([]byte, benchWindow)
	fill(window, 2)
	return a, window
}

// BenchmarkPutGet measures Put and Get over benchWindow/size keys, next to
// memcpy of the same bytes measured in the same run:
//   - ref=copyin: from one buffer into a rotating slot of a benchWindow
//     buffer, which is what a Put does with the bytes; compare op=put;
//   - ref=copyout: from a rotating slot of a benchWindow buffer into one
//     buffer, which is what a Get does; compare op=get.
func BenchmarkPutGet(b *testing.B) {
	a, window := benchArena(b)
	for _, n := range benchSizes {
		l := layoutFor(b, n)
		m := int(benchWindow / n)
		one := make([]byte, n)
		fill(one, 1)
		keys := make([]tiers.Key, m)
		for i := range keys {
			keys[i] = testKey("bench", i, 0)
		}
		slot := func(i int) []byte { return window[int64(i%m)*n : int64(i%m+1)*n] }
		b.Run(fmt.Sprintf("ref=copyin/size=%d", n), func(b *testing.B) {
			b.SetBytes(n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				copy(slot(i), one)
				i++
			}
		})
		b.Run(fmt.Sprintf("op=put/size=%d", n), func(b *testing.B) {
			b.SetBytes(n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := a.Put(bg, keys[i%m], l, one); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(fmt.Sprintf("ref=copyout/size=%d", n), func(b *testing.B) {
			b.SetBytes(n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				copy(one, slot(i))
				i++
			}
		})
		b.Run(fmt.Sprintf("op=get/size=%d", n), func(b *testing.B) {
			for _, k := range keys {
				if err := a.Put(bg, k, l, one); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, _, err := a.Get(bg, keys[i%m], one[:0]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		for _, k := range keys {
			if err := a.Delete(bg, k); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkPutGetPaired measures the same operations as BenchmarkPutGet,
// but alternates small batches of the operation and of its memcpy reference
// inside one loop, so that a machine whose speed drifts (shared cores, other
// tenants) slows both alike. It reports each side's GB/s and their ratio
// (put/copyin, get/copyout); ns/op covers a batch pair.
func BenchmarkPutGetPaired(b *testing.B) {
	a, window := benchArena(b)
	const batch = 4
	for _, n := range benchSizes {
		l := layoutFor(b, n)
		m := int(benchWindow / n)
		one := make([]byte, n)
		fill(one, 1)
		keys := make([]tiers.Key, m)
		for i, k := range keys {
			k = testKey("paired", i, 0)
			keys[i] = k
			if err := a.Put(bg, k, l, one); err != nil {
				b.Fatal(err)
			}
		}
		slot := func(i int) []byte { return window[int64(i%m)*n : int64(i%m+1)*n] }
		for _, op := range []string{"put", "get"} {
			b.Run(fmt.Sprintf("op=%s/size=%d", op, n), func(b *testing.B) {
				var tOp, tRef time.Duration
				ops := 0
				i, j := 0, 0
				b.ReportAllocs()
				ref := func() {
					for range batch {
						if op == "put" {
							copy(slot(i), one)
						} else {
							copy(one, slot(i))
						}
						i++
					}
				}
				run := func() {
					for range batch {
						var err error
						if op == "put" {
							err = a.Put(bg, keys[j%m], l, one)
						} else {
							_, _, err = a.Get(bg, keys[j%m], one[:0])
						}
						if err != nil {
							b.Fatal(err)
						}
						j++
					}
				}
				for b.Loop() {
					// Alternate which side goes first, so neither always
					// follows the other.
					first, second := ref, run
					if ops%(2*batch) != 0 {
						first, second = run, ref
					}
					t0 := time.Now()
					first()
					t1 := time.Now()
					second()
					t2 := time.Now()
					if ops%(2*batch) == 0 {
						tRef, tOp = tRef+t1.Sub(t0), tOp+t2.Sub(t1)
					} else {
						tOp, tRef = tOp+t1.Sub(t0), tRef+t2.Sub(t1)
					}
					ops += batch
				}
				gb := func(d time.Duration) float64 { return float64(int64(ops)*n) / d.Seconds() / 1e9 }
				b.ReportMetric(gb(tRef), "ref-GB/s")
				b.ReportMetric(gb(tOp), op+"-GB/s")
				b.ReportMetric(float64(tRef)/float64(tOp), op+"/ref")
			})
		}
		for _, k := range keys {
			if err := a.Delete(bg, k); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkReserveCommit measures the shared-memory data plane's control
// path, which copies nothing: reserve, then commit over the key's previous
// copy, which is freed.
func BenchmarkReserveCommit(b *testing.B) {
	a := newArena(b, 64*MiB)
	for _, n := range benchSizes {
		l := layoutFor(b, n)
		k := testKey("bench-rc", int(n), 0)
		b.Run(fmt.Sprintf("size=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s, _, err := a.Reserve(l)
				if err != nil {
					b.Fatal(err)
				}
				if err := a.Commit(k, l, s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
