package dram

import (
	"math/bits"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/cpu"
)

// Allocator geometry. See doc.go for the design.
const (
	pageSize  = 4096 // slot granule and alignment
	pageShift = 12

	classSteps     = 8  // size classes per octave: internal waste ≤ 1/8
	maxClassChunks = 8  // classes stop at 8 chunks; larger blocks take a dedicated run
	maxSpanChunks  = 16 // a span of a class is at most this many chunks…
	maxTailWaste   = 16 // …chosen so that at most 1/16 of it is left over at its tail

	classLarge = -1 // span.class of a dedicated run holding one large block
	noSpan     = -1
)

// A page's meta word describes the slot that starts on that page:
// gen<<genShift | state. Only slot-start pages ever leave stateFree.
const (
	stateFree     uint32 = 0
	stateReserved uint32 = 1
	stateSealed   uint32 = 3 // a block (Seal); the Store's index names it
	stateMask     uint32 = 3
	genShift             = 2
	maxGen               = 1<<(32-genShift) - 1
)

func nextGen(g uint32) uint32 {
	if g >= maxGen {
		return 1 // 0 is never handed out, so the zero Slot is never live
	}
	return g + 1
}

// class is one slot size. Its spans (runs of chunks carved into equal slots)
// that still have a free slot form a doubly linked list.
type class struct {
	mu       sync.Mutex   // protects partial, and nFree/prev/next and the slot bits of every span of this class
	partial  int32        // first span with a free slot, noSpan when none
	reserved atomic.Int64 // bytes of this class's taken slots; written under mu, read by Stats
	size     int64        // slot size; immutable
	chunks   int32        // chunks per span; immutable
	slots    int32        // slots per span; immutable
	_        cpu.CacheLinePad
}

// span is a run of chunks owned by one class (or by one large block). It is
// indexed by its first chunk. class, slotSize and chunks are written when the
// span is carved and read without a lock by whoever holds a live slot in it
// (the span cannot be released under them); the rest belongs to the class lock.
type span struct {
	class    atomic.Int32 // class index, or classLarge
	slotSize atomic.Int64
	chunks   int32
	nSlots   int32 // protected by the class lock
	nFree    int32 // protected by the class lock
	prev     int32 // partial-list links, protected by the class lock
	next     int32
}

// buildClasses returns the slot sizes for an arena of nChunks chunks:
// 1/8-octave steps from 4 KiB, rounded up to 4 KiB, up to maxClassChunks
// chunks (or the arena, if smaller), each with the span length that wastes
// least at the span's tail.
func buildClasses(chunk int64, nChunks int) []class {
	limit := maxClassChunks * chunk
	var cs []class
	for e := pageShift; int64(1)<<e <= limit; e++ {
		base := int64(1) << e
		for j := int64(0); j < classSteps; j++ {
			s := roundUp(base+j*base/classSteps, pageSize)
			if s > limit {
				break
			}
			if len(cs) > 0 && s <= cs[len(cs)-1].size {
				continue
			}
			k := spanChunks(s, chunk, nChunks)
			if k == 0 {
				return cs // this and every larger size only fits a dedicated run
			}
			cs = append(cs, class{partial: noSpan, size: s, chunks: int32(k), slots: int32(int64(k) * chunk / s)})
		}
	}
	return cs
}

// spanChunks picks how many chunks a span of slot size s takes: the fewest
// that leave at most 1/maxTailWaste unused, else the least wasteful up to
// maxSpanChunks; 0 when s does not fit in the arena.
func spanChunks(s, chunk int64, nChunks int) int {
	kmin := int((s + chunk - 1) / chunk)
	if kmin > nChunks {
		return 0
	}
	kmax := min(max(kmin, maxSpanChunks), nChunks)
	best, bestWaste := kmin, 1.0
	for k := kmin; k <= kmax; k++ {
		b := int64(k) * chunk
		waste := float64(b%s) / float64(b)
		if b%s*maxTailWaste <= b {
			return k
		}
		if waste < bestWaste {
			best, bestWaste = k, waste
		}
	}
	return best
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// classFor returns the smallest class whose slots hold n bytes, or -1 when
// n needs a dedicated run of chunks.
func (a *Arena) classFor(n int64) int {
	lo, hi := 0, len(a.classes)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if a.classes[m].size < n {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(a.classes) {
		return -1
	}
	return lo
}

// slotSizeFor returns the bytes a block of n bytes consumes, 0 when it can
// never fit.
func (a *Arena) slotSizeFor(n int64) int64 {
	if n <= 0 || n > a.size {
		return 0
	}
	if c := a.classFor(n); c >= 0 {
		return a.classes[c].size
	}
	return roundUp(n, a.chunkSize)
}

// alloc hands out a slot of at least n bytes (0 < n ≤ a.size), marks it
// reserved with a fresh generation, and returns its offset, slot size and
// generation. ok is false when there is no room.
func (a *Arena) alloc(n int64) (off, size int64, gen uint32, ok bool) {
	if c := a.classFor(n); c >= 0 {
		cl := &a.classes[c]
		cl.mu.Lock()
		h := cl.partial
		if h == noSpan {
			if h = a.carve(int32(c), cl); h == noSpan {
				cl.mu.Unlock()
				return 0, cl.size, 0, false
			}
		}
		sp := &a.spans[h]
		words := a.slotBits[int(h)*a.wpc : int(h+cl.chunks)*a.wpc]
		i := nextSet(words, 0, int(sp.nSlots))
		words[i>>6] &^= 1 << (i & 63)
		sp.nFree--
		if sp.nFree == 0 {
			a.unlinkPartial(cl, h)
		}
		cl.reserved.Add(cl.size)
		cl.mu.Unlock()
		off, size = int64(h)<<a.chunkShift+int64(i)*cl.size, cl.size
	} else {
		k := int((n + a.chunkSize - 1) >> a.chunkShift)
		h := a.claimRun(k)
		if h == noSpan {
			return 0, int64(k) << a.chunkShift, 0, false
		}
		sp := &a.spans[h]
		size = int64(k) << a.chunkShift
		sp.chunks = int32(k)
		sp.class.Store(classLarge)
		sp.slotSize.Store(size)
		off = int64(h) << a.chunkShift
		a.largeReserved.Add(size)
	}
	// The slot is ours: nobody else writes its meta word until we free it
	// (CAS attempts by stale holders fail, the word says free or another gen).
	p := &a.meta[off>>pageShift]
	gen = nextGen(p.Load() >> genShift)
	p.Store(gen<<genShift | stateReserved)
	return off, size, gen, true
}

// carve claims a run of chunks for class c and links it as a partial span.
// Called with cl.mu held.
func (a *Arena) carve(c int32, cl *class) int32 {
	h := a.claimRun(int(cl.chunks))
	if h == noSpan {
		return noSpan
	}
	sp := &a.spans[h]
	sp.chunks = cl.chunks
	sp.nSlots = cl.slots
	sp.nFree = cl.slots
	sp.class.Store(c)
	sp.slotSize.Store(cl.size)
	words := a.slotBits[int(h)*a.wpc : int(h+cl.chunks)*a.wpc]
	setRange(words, int(cl.slots))
	sp.prev, sp.next = noSpan, cl.partial
	if cl.partial != noSpan {
		a.spans[cl.partial].prev = h
	}
	cl.partial = h
	return h
}

func (a *Arena) unlinkPartial(cl *class, h int32) {
	sp := &a.spans[h]
	if sp.prev != noSpan {
		a.spans[sp.prev].next = sp.next
	} else {
		cl.partial = sp.next
	}
	if sp.next != noSpan {
		a.spans[sp.next].prev = sp.prev
	}
	sp.prev, sp.next = noSpan, noSpan
}

// release frees the slot at off if its meta word is gen in state from, and
// returns its slot size. ok is false (and nothing changes) otherwise.
func (a *Arena) release(off int64, gen, from uint32) (size int64, ok bool) {
	p := &a.meta[off>>pageShift]
	if !p.CompareAndSwap(gen<<genShift|from, gen<<genShift|stateFree) {
		return 0, false
	}
	h := a.chunkHead[off>>a.chunkShift].Load()
	sp := &a.spans[h]
	size = sp.slotSize.Load()
	c := sp.class.Load()
	if c == classLarge {
		a.largeReserved.Add(-size)
		a.releaseRun(h, int(sp.chunks))
	} else {
		cl := &a.classes[c]
		i := int((off - int64(h)<<a.chunkShift) / size)
		cl.mu.Lock()
		words := a.slotBits[int(h)*a.wpc : int(h+sp.chunks)*a.wpc]
		words[i>>6] |= 1 << (i & 63)
		cl.reserved.Add(-size)
		linked := sp.nFree > 0
		sp.nFree++
		switch {
		case sp.nFree == sp.nSlots:
			// Empty: give the chunks back so any class can use them.
			if linked {
				a.unlinkPartial(cl, h)
			}
			a.releaseRun(h, int(sp.chunks))
		case !linked:
			sp.prev, sp.next = noSpan, cl.partial
			if cl.partial != noSpan {
				a.spans[cl.partial].prev = h
			}
			cl.partial = h
		}
		cl.mu.Unlock()
	}
	return size, true
}

// claimRun takes the first run of k free chunks and returns its first chunk,
// or noSpan.
func (a *Arena) claimRun(k int) int32 {
	a.runMu.Lock()
	defer a.runMu.Unlock()
	if k > a.nFreeChunks {
		return noSpan
	}
	n := a.nChunks
	i := nextSet(a.freeChunks, a.runHint, n)
	a.runHint = i // every chunk below the first free one is in use
	for i+k <= n {
		if j := nextClear(a.freeChunks, i, i+k); j-i < k {
			i = nextSet(a.freeChunks, j+1, n) // chunk j is in use
			continue
		}
		for c := i; c < i+k; c++ {
			a.freeChunks[c>>6] &^= 1 << (c & 63)
			a.chunkHead[c].Store(int32(i))
		}
		a.nFreeChunks -= k
		if i == a.runHint {
			a.runHint = i + k
		}
		return int32(i)
	}
	return noSpan
}

func (a *Arena) releaseRun(h int32, k int) {
	a.runMu.Lock()
	for c := int(h); c < int(h)+k; c++ {
		a.chunkHead[c].Store(noSpan)
		a.freeChunks[c>>6] |= 1 << (c & 63)
	}
	a.nFreeChunks += k
	a.runHint = min(a.runHint, int(h))
	a.runMu.Unlock()
}

// nextSet returns the first set bit of bm in [i, lim), or lim.
func nextSet(bm []uint64, i, lim int) int {
	for i < lim {
		if w := bm[i>>6] >> (i & 63); w != 0 {
			return min(i+bits.TrailingZeros64(w), lim)
		}
		i = (i | 63) + 1
	}
	return lim
}

// nextClear returns the first clear bit of bm in [i, lim), or lim.
func nextClear(bm []uint64, i, lim int) int {
	for i < lim {
		if w := ^bm[i>>6] >> (i & 63); w != 0 {
			return min(i+bits.TrailingZeros64(w), lim)
		}
		i = (i | 63) + 1
	}
	return lim
}

// setRange sets bits [0, n) of bm and clears the rest.
func setRange(bm []uint64, n int) {
	for w := range bm {
		switch {
		case n >= 64:
			bm[w] = ^uint64(0)
			n -= 64
		case n > 0:
			bm[w] = 1<<n - 1
			n = 0
		default:
			bm[w] = 0
		}
	}
}
