package hbm

import (
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestClassSize(t *testing.T) {
	tests := []struct {
		name string
		n    int64
		want int64
	}{
		{"one byte", 1, 4 << 10},
		{"min class", 4 << 10, 4 << 10},
		{"just above min", 4<<10 + 1, 5 << 10},
		{"5000", 5000, 5 << 10},
		{"64 KiB", 64 << 10, 64 << 10},
		{"64 KiB + 1", 64<<10 + 1, 80 << 10},
		{"1 MiB", 1 << 20, 1 << 20},
		{"1 MiB + 1", 1<<20 + 1, 1280 << 10},
		{"1.5 MiB", 3 << 19, 3 << 19},
		{"5 MiB", 5 << 20, 5 << 20},
		{"9 MiB", 9 << 20, 10 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := classSize(tc.n)
			if got != tc.want {
				t.Fatalf("classSize(%d) = %d, want %d", tc.n, got, tc.want)
			}
			if waste := float64(got-tc.n) / float64(got); tc.n > minClass && waste > 0.2 {
				t.Fatalf("classSize(%d) wastes %.0f%%", tc.n, waste*100)
			}
		})
	}
}

func TestAllocatorFillAndDrain(t *testing.T) {
	tests := []struct {
		name             string
		capacity, chunk  int64
		block            int64
		wantSlots        int
		wantSlotSize     int64
		wantFullChunks   bool
		wantSpanOfChunks int64
	}{
		{name: "small blocks", capacity: 4 << 20, chunk: 1 << 20, block: 64 << 10, wantSlots: 64, wantSlotSize: 64 << 10},
		{name: "odd blocks", capacity: 4 << 20, chunk: 1 << 20, block: 100 << 10, wantSlots: 4 * 9, wantSlotSize: 112 << 10},
		{name: "half chunk", capacity: 4 << 20, chunk: 1 << 20, block: 512 << 10, wantSlots: 8, wantSlotSize: 512 << 10},
		{name: "large blocks", capacity: 8 << 20, chunk: 1 << 20, block: 1<<20 + 1, wantSlots: 4, wantSlotSize: 2 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newAllocator(tc.capacity, tc.chunk)
			type slot struct{ off, size int64 }
			var got []slot
			for {
				off, size, ok := a.alloc(tc.block)
				if !ok {
					break
				}
				if size != tc.wantSlotSize {
					t.Fatalf("slot size %d, want %d", size, tc.wantSlotSize)
				}
				got = append(got, slot{off, size})
			}
			if len(got) != tc.wantSlots {
				t.Fatalf("%d slots, want %d", len(got), tc.wantSlots)
			}
			checkDisjoint(t, tc.capacity, func(yield func(off, size int64) bool) {
				for _, s := range got {
					if !yield(s.off, s.size) {
						return
					}
				}
			})
			for _, s := range got {
				a.free(s.off, s.size)
			}
			for i, ch := range a.chunks {
				if ch.class != 0 {
					t.Fatalf("chunk %d not free after draining: %+v", i, ch)
				}
			}
			for c, l := range a.partial {
				if len(l) != 0 {
					t.Fatalf("class %d still lists partial chunks %v", c, l)
				}
			}
			// Everything can be allocated again, in another class.
			n := 0
			for {
				if _, _, ok := a.alloc(tc.chunk); !ok {
					break
				}
				n++
			}
			if int64(n) != tc.capacity/tc.chunk {
				t.Fatalf("%d whole chunks after draining, want %d", n, tc.capacity/tc.chunk)
			}
		})
	}
}

func checkDisjoint(t *testing.T, capacity int64, each func(yield func(off, size int64) bool)) {
	t.Helper()
	type r struct{ off, end int64 }
	var rs []r
	for off, size := range each {
		if off < 0 || off+size > capacity {
			t.Fatalf("slot [%d,%d) outside the %d-byte arena", off, off+size, capacity)
		}
		rs = append(rs, r{off, off + size})
	}
	slices.SortFunc(rs, func(a, b r) int { return int(a.off - b.off) })
	for i := 1; i < len(rs); i++ {
		if rs[i].off < rs[i-1].end {
			t.Fatalf("slots overlap: [%d,%d) and [%d,%d)", rs[i-1].off, rs[i-1].end, rs[i].off, rs[i].end)
		}
	}
}

// runAllocator applies a sequence of operations decoded from ops to an
// allocator and checks its invariants: live slots are disjoint, inside the
// arena and at least as large as asked, and an empty allocator has every
// chunk free.
func runAllocator(t *testing.T, ops []byte) {
	const capacity, chunk = 16 << 20, 2 << 20
	a := newAllocator(capacity, chunk)
	type live struct{ off, size int64 }
	var lives []live
	for len(ops) >= 3 {
		op, arg := ops[0], binary.LittleEndian.Uint16(ops[1:3])
		ops = ops[3:]
		if op%3 != 0 || len(lives) == 0 {
			n := int64(arg)*97 + 1 // up to ~6 MiB: every class and spans
			off, size, ok := a.alloc(n)
			if ok {
				if size < n {
					t.Fatalf("alloc(%d) gave %d bytes", n, size)
				}
				lives = append(lives, live{off, size})
			}
			continue
		}
		i := int(arg) % len(lives)
		a.free(lives[i].off, lives[i].size)
		lives = slices.Delete(lives, i, i+1)
	}
	checkDisjoint(t, capacity, func(yield func(off, size int64) bool) {
		for _, l := range lives {
			if !yield(l.off, l.size) {
				return
			}
		}
	})
	for _, l := range lives {
		a.free(l.off, l.size)
	}
	for i, ch := range a.chunks {
		if ch.class != 0 || ch.used != 0 {
			t.Fatalf("chunk %d not free at the end: %+v", i, ch)
		}
	}
}

func TestAllocatorRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		ops := make([]byte, 3*500)
		for i := range ops {
			ops[i] = byte(r.Uint32())
		}
		runAllocator(t, ops)
	}
}

func FuzzAllocator(f *testing.F) {
	f.Add([]byte{1, 0, 1, 1, 0, 2, 0, 0, 0})
	f.Add([]byte{1, 0xff, 0xff, 2, 0xff, 0xff, 3, 1, 0, 1, 0x10, 0})
	f.Fuzz(runAllocator)
}

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for _, ns := range []uint64{0, 1, 15, 16, 17, 31, 32, 33, 1000, 1 << 20, 1<<40 + 12345, 1<<63 - 1} {
		b := bucketOf(ns)
		if b < prev || b >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d after %d", ns, b, prev)
		}
		prev = b
		mid := bucketMid(b)
		if ns >= 16 && (float64(mid) < float64(ns)*0.93 || float64(mid) > float64(ns)*1.07) {
			t.Fatalf("bucket of %d has middle %d", ns, mid)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Count() != 0 {
		t.Fatal("empty histogram reports values")
	}
	// 1..1000 µs, each once.
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	h.Record(-time.Second) // counted as zero
	p := h.Percentiles()
	if p.Count != 1001 {
		t.Fatalf("count %d", p.Count)
	}
	for _, c := range []struct {
		got, want time.Duration
	}{{p.P50, 500 * time.Microsecond}, {p.P99, 990 * time.Microsecond}} {
		if float64(c.got) < float64(c.want)*0.93 || float64(c.got) > float64(c.want)*1.07 {
			t.Errorf("quantile %v, want about %v", c.got, c.want)
		}
	}
}
