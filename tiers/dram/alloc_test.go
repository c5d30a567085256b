package dram

import (
	"fmt"
	"testing"
)

func TestClassTable(t *testing.T) {
	tests := []struct {
		name    string
		chunk   int64
		nChunks int
	}{
		{"2MiB chunks, big arena", 2 * MiB, 4096},
		{"2MiB chunks, 4 chunks", 2 * MiB, 4},
		{"64KiB chunks", 64 * KiB, 1024},
		{"1GiB chunks", 1 << 30, 64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := buildClasses(tc.chunk, tc.nChunks)
			if len(cs) == 0 || cs[0].size != pageSize {
				t.Fatalf("first class %v, want %d", cs[:min(1, len(cs))], pageSize)
			}
			for i := range cs {
				c := &cs[i]
				if c.size%pageSize != 0 || i > 0 && c.size <= cs[i-1].size {
					t.Fatalf("class %d: size %d not a growing multiple of 4 KiB", i, c.size)
				}
				if c.size > maxClassChunks*tc.chunk || int(c.chunks) > tc.nChunks || c.slots < 1 {
					t.Fatalf("class %d (%d bytes): %d chunks, %d slots", i, c.size, c.chunks, c.slots)
				}
				span := int64(c.chunks) * tc.chunk
				if int64(c.slots) != span/c.size {
					t.Fatalf("class %d: %d slots in %d bytes of %d", i, c.slots, span, c.size)
				}
				// Tail waste within bound unless no allowed span length does better.
				if waste := span - int64(c.slots)*c.size; waste*maxTailWaste > span && c.chunks < maxSpanChunks && int(c.chunks) < tc.nChunks {
					k := spanChunks(c.size, tc.chunk, tc.nChunks)
					if k != int(c.chunks) {
						t.Fatalf("class %d: span of %d chunks wastes %d of %d bytes", i, c.chunks, waste, span)
					}
				}
				if i > 0 && c.size > 32*KiB && float64(c.size) > float64(cs[i-1].size)*1.126 {
					t.Fatalf("classes %d and %d (%d, %d) more than 1/8 apart", i-1, i, cs[i-1].size, c.size)
				}
			}
		})
	}
}

// TestSlotSizeWaste sweeps block sizes and checks the slot each gets.
func TestSlotSizeWaste(t *testing.T) {
	for _, chunk := range []int64{64 * KiB, 2 * MiB} {
		a := &Arena{chunkSize: chunk, chunkShift: uint(log2(chunk)), nChunks: 512, size: 512 * chunk}
		a.classes = buildClasses(chunk, a.nChunks)
		for n := int64(1); n <= a.size; n += n/97 + 1 {
			s := a.slotSizeFor(n)
			if s < n || s%pageSize != 0 {
				t.Fatalf("chunk %d: SlotSize(%d) = %d", chunk, n, s)
			}
			if waste := s - n; waste >= pageSize && waste*8 > n {
				t.Fatalf("chunk %d: SlotSize(%d) = %d wastes more than 1/8", chunk, n, s)
			}
		}
		if a.slotSizeFor(0) != 0 || a.slotSizeFor(a.size+1) != 0 || a.slotSizeFor(a.size) != a.size {
			t.Fatalf("chunk %d: SlotSize at the edges", chunk)
		}
	}
}

func TestSpanChunks(t *testing.T) {
	const chunk = 2 * MiB
	tests := []struct {
		size    int64
		nChunks int
		want    int
	}{
		{4 * KiB, 100, 1},
		{2 * MiB, 100, 1},
		{4 * MiB, 100, 2},
		{5 * MiB, 100, 5},       // two slots in 10 MiB, no waste
		{9 * MiB / 8, 100, 3},   // 5 slots in 6 MiB: 1/16 waste
		{1536 * KiB, 100, 3},    // 4 slots in 6 MiB
		{15 * MiB, 100, 8},      // 1/16 waste
		{3*MiB + 4*KiB, 100, 8}, // 5 slots in 16 MiB: 6.1% waste
		{3*MiB + 4*KiB, 6, 5},   // best the arena allows: 3 slots in 10 MiB
		{5 * MiB, 2, 0},         // does not fit
		{20 * MiB, 100, 10},     // one slot, no waste
		{33 * MiB, 100, 17},     // beyond maxSpanChunks: the minimum
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("size=%d/chunks=%d", tc.size, tc.nChunks), func(t *testing.T) {
			got := spanChunks(tc.size, chunk, tc.nChunks)
			if got != tc.want {
				t.Fatalf("spanChunks = %d, want %d", got, tc.want)
			}
			if got > 0 {
				span := int64(got) * chunk
				if got > tc.nChunks || span < tc.size {
					t.Fatalf("span of %d chunks for %d bytes", got, tc.size)
				}
			}
		})
	}
}

func TestBitHelpers(t *testing.T) {
	bm := make([]uint64, 3)
	setRange(bm, 130)
	if bm[0] != ^uint64(0) || bm[1] != ^uint64(0) || bm[2] != 3 {
		t.Fatalf("setRange(130) = %x", bm)
	}
	tests := []struct {
		name      string
		set       []int
		i, lim    int
		wantSet   int
		wantClear int
	}{
		{"empty", nil, 0, 192, 192, 0},
		{"first bit", []int{0}, 0, 192, 0, 1},
		{"second word", []int{70, 71}, 0, 192, 70, 0},
		{"from inside a run", []int{70, 71, 72}, 71, 192, 71, 73},
		{"limit before the bit", []int{100}, 0, 90, 90, 0},
		{"last bit", []int{191}, 150, 192, 191, 150},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bm := make([]uint64, 3)
			for _, b := range tc.set {
				bm[b>>6] |= 1 << (b & 63)
			}
			if got := nextSet(bm, tc.i, tc.lim); got != tc.wantSet {
				t.Errorf("nextSet = %d, want %d", got, tc.wantSet)
			}
			if got := nextClear(bm, tc.i, tc.lim); got != tc.wantClear {
				t.Errorf("nextClear = %d, want %d", got, tc.wantClear)
			}
		})
	}
}
