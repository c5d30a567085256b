package hbm

import "math/bits"

// minClass is the smallest slot. Slot sizes step by a quarter of their power
// of two (4, 5, 6, 7, 8, 10, 12, 14, 16 KiB, ...), so a block wastes at most
// 20% of its slot.
const minClass = 4 << 10

// classSize returns the slot size for a block of n bytes.
func classSize(n int64) int64 {
	if n <= minClass {
		return minClass
	}
	step := int64(1) << (bits.Len64(uint64(n-1)) - 3)
	return (n + step - 1) &^ (step - 1)
}

// chunk is one chunkSize piece of the arena: free, carved into slots of one
// class, or part of a span holding one large block.
type chunk struct {
	class   int64   // slot size; 0 when free; -1 inside a span
	span    int     // chunks in the span this chunk heads (large blocks)
	used    int     // slots in use
	free    []int32 // free slot indexes (a stack)
	partial bool    // listed in allocator.partial[class]
}

// allocator hands out offsets of a device arena by size class, like the
// DRAM arena: the arena is cut into equal chunks, a chunk is given to a
// class when that class runs out, and returned when its last slot is freed.
// Blocks larger than half a chunk take a run of whole chunks. It is not
// safe for concurrent use; the Tier's mutex guards it.
type allocator struct {
	chunkSize int64
	chunks    []chunk
	partial   map[int64][]int // class -> chunks with a free slot
	freeHint  int             // lowest chunk index that may be free
}

func newAllocator(capacity, chunkSize int64) *allocator {
	return &allocator{
		chunkSize: chunkSize,
		chunks:    make([]chunk, capacity/chunkSize),
		partial:   make(map[int64][]int),
	}
}

// alloc reserves room for n bytes and returns its offset and the bytes it
// takes (the slot or span size). ok is false when the arena has no room.
func (a *allocator) alloc(n int64) (off, size int64, ok bool) {
	if n <= 0 {
		return 0, 0, false
	}
	c := classSize(n)
	if c > a.chunkSize/2 {
		return a.allocSpan(n)
	}
	list := a.partial[c]
	if len(list) == 0 {
		i, ok := a.freeRun(1)
		if !ok {
			return 0, 0, false
		}
		ch := &a.chunks[i]
		per := int(a.chunkSize / c)
		ch.class, ch.used, ch.partial = c, 0, true
		ch.free = make([]int32, per)
		for s := range per {
			ch.free[s] = int32(per - 1 - s) // pop from the end: low slots first
		}
		list = append(list, i)
		a.partial[c] = list
	}
	i := list[len(list)-1]
	ch := &a.chunks[i]
	s := ch.free[len(ch.free)-1]
	ch.free = ch.free[:len(ch.free)-1]
	ch.used++
	if len(ch.free) == 0 {
		ch.partial = false
		a.partial[c] = list[:len(list)-1]
	}
	return int64(i)*a.chunkSize + int64(s)*c, c, true
}

func (a *allocator) allocSpan(n int64) (off, size int64, ok bool) {
	k := int((n + a.chunkSize - 1) / a.chunkSize)
	i, ok := a.freeRun(k)
	if !ok {
		return 0, 0, false
	}
	a.chunks[i].class, a.chunks[i].span = -1, k
	for j := i + 1; j < i+k; j++ {
		a.chunks[j].class = -1
	}
	return int64(i) * a.chunkSize, int64(k) * a.chunkSize, true
}

// freeRun finds k contiguous free chunks, first fit.
func (a *allocator) freeRun(k int) (int, bool) {
	run := 0
	for i := a.freeHint; i < len(a.chunks); i++ {
		if a.chunks[i].class != 0 {
			run = 0
			continue
		}
		if run++; run == k {
			start := i - k + 1
			if start == a.freeHint {
				a.freeHint = i + 1
			}
			return start, true
		}
	}
	return 0, false
}

// free returns what alloc(n) handed out at off.
func (a *allocator) free(off, size int64) {
	i := int(off / a.chunkSize)
	ch := &a.chunks[i]
	if ch.class == -1 {
		span := ch.span
		for j := i; j < i+span; j++ {
			a.chunks[j] = chunk{}
		}
		a.freeHint = min(a.freeHint, i)
		return
	}
	c := ch.class
	ch.free = append(ch.free, int32((off-int64(i)*a.chunkSize)/c))
	ch.used--
	switch {
	case ch.used == 0:
		if ch.partial {
			a.unlistPartial(c, i)
		}
		*ch = chunk{}
		a.freeHint = min(a.freeHint, i)
	case !ch.partial:
		ch.partial = true
		a.partial[c] = append(a.partial[c], i)
	}
}

func (a *allocator) unlistPartial(c int64, i int) {
	list := a.partial[c]
	for j, v := range list {
		if v == i {
			list[j] = list[len(list)-1]
			a.partial[c] = list[:len(list)-1]
			return
		}
	}
}
