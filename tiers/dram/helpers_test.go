package dram

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
)

// newArena returns an arena, with the tests' key index over it, closed at
// the end of the test.
func newArena(t testing.TB, capacity int64, opts ...Option) *keyed {
	t.Helper()
	a, err := New(capacity, opts...)
	if err != nil {
		t.Fatalf("New(%d): %v", capacity, err)
	}
	k := keyedOf(a)
	t.Cleanup(func() { _ = k.Close() })
	return k
}

// testKey returns a valid key numbered i.
func testKey(ns string, i int, layer int16) tiers.Key {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(i)*0x9e3779b97f4a7c15+1)
	binary.BigEndian.PutUint64(b[8:], uint64(i))
	h, err := tiers.HashFromBytes(b[:])
	if err != nil {
		panic(err)
	}
	return tiers.Key{Namespace: ns, Hash: h, Layer: layer}
}

var layoutCache sync.Map // int64 → tiers.Layout

// layoutFor returns an fp8 layout of exactly n bytes (n even, and n/2 a
// product of factors within the layout limits).
func layoutFor(t testing.TB, n int64) tiers.Layout {
	t.Helper()
	if l, ok := layoutCache.Load(n); ok {
		return l.(tiers.Layout)
	}
	if n <= 0 || n%2 != 0 {
		t.Fatalf("layoutFor(%d): size must be even and positive", n)
	}
	m := n / 2
	take := func(limit int64) int64 {
		for d := min(limit, m); d > 1; d-- {
			if m%d == 0 {
				m /= d
				return d
			}
		}
		return 1
	}
	l := tiers.Layout{DType: codec.FP8, Order: codec.KVSeparate}
	l.Tokens = uint32(take(codec.MaxTokens))
	l.HeadDim = uint16(take(codec.MaxHeadDim))
	l.KVHeads = uint16(take(codec.MaxKVHeads))
	l.Layers = uint16(take(codec.MaxLayers))
	if m != 1 || l.Size() != n {
		t.Fatalf("layoutFor(%d): cannot factor (left %d)", n, m)
	}
	layoutCache.Store(n, l)
	return l
}

// fill writes a pattern for seed into b: the seed, then a repeated word
// derived from it. Blocks of different seeds differ in every word, so a torn
// block fails check.
func fill(b []byte, seed uint64) {
	var w [8]byte
	binary.LittleEndian.PutUint64(w[:], seed)
	n := copy(b, w[:])
	binary.LittleEndian.PutUint64(w[:], seed*0xff51afd7ed558ccd+0x632be59bd9b4e019)
	if n < len(b) {
		n += copy(b[n:], w[:])
	}
	for done := 8; n < len(b); done *= 2 { // double the repeated part
		n += copy(b[n:], b[8:8+done])
	}
}

// check verifies a block written by fill and returns its seed.
func check(b []byte) (uint64, error) {
	if len(b) < 8 {
		return 0, fmt.Errorf("block of %d bytes is too short", len(b))
	}
	seed := binary.LittleEndian.Uint64(b)
	want := make([]byte, len(b))
	fill(want, seed)
	if bytes.Equal(b, want) {
		return seed, nil
	}
	i := 0
	for b[i] == want[i] {
		i++
	}
	return seed, fmt.Errorf("seed %d: byte %d of %d is %#x, want %#x", seed, i, len(b), b[i], want[i])
}

// checkInvariants cross-checks every structure of a quiescent arena: chunk
// pool, spans, slot bitmaps, meta words, the index and the counters.
func checkInvariants(t testing.TB, ka *keyed) {
	a := ka.Arena
	t.Helper()
	for i := range a.classes { // lock order: class, then chunk pool
		a.classes[i].mu.Lock()
		defer a.classes[i].mu.Unlock()
	}
	a.runMu.Lock()
	defer a.runMu.Unlock()
	var reserved int64
	live := map[int64]uint32{} // offset → meta word of every slot the allocator says is taken
	freeChunks := 0
	inPartial := map[int32]int{}
	for ci := range a.classes {
		seen := 0
		for h := a.classes[ci].partial; h != noSpan; h = a.spans[h].next {
			inPartial[h] = ci
			if seen++; seen > a.nChunks {
				t.Fatalf("class %d: partial list has a cycle", ci)
			}
		}
	}
	for c := 0; c < a.nChunks; {
		h := a.chunkHead[c].Load()
		isFree := a.freeChunks[c>>6]>>(c&63)&1 == 1
		if h == noSpan {
			if !isFree {
				t.Fatalf("chunk %d: no span but not in the free pool", c)
			}
			freeChunks++
			c++
			continue
		}
		if int(h) != c || isFree {
			t.Fatalf("chunk %d: head %d, free %v: not the start of a span", c, h, isFree)
		}
		sp := &a.spans[h]
		for i := c; i < c+int(sp.chunks); i++ {
			if a.chunkHead[i].Load() != h || a.freeChunks[i>>6]>>(i&63)&1 == 1 {
				t.Fatalf("chunk %d of span %d: head %d", i, h, a.chunkHead[i].Load())
			}
		}
		base := int64(h) << a.chunkShift
		size := sp.slotSize.Load()
		if cl := sp.class.Load(); cl == classLarge {
			live[base] = a.meta[base>>pageShift].Load()
			reserved += size
			if size != int64(sp.chunks)<<a.chunkShift {
				t.Fatalf("large span %d: slot %d, %d chunks", h, size, sp.chunks)
			}
		} else {
			cls := &a.classes[cl]
			if size != cls.size || sp.chunks != cls.chunks || sp.nSlots != cls.slots {
				t.Fatalf("span %d: geometry differs from class %d", h, cl)
			}
			words := a.slotBits[int(h)*a.wpc : int(h+sp.chunks)*a.wpc]
			nFree := 0
			for i := 0; i < int(sp.nSlots); i++ {
				if words[i>>6]>>(i&63)&1 == 1 {
					nFree++
				} else {
					off := base + int64(i)*size
					live[off] = a.meta[off>>pageShift].Load()
					reserved += size
				}
			}
			if nFree != int(sp.nFree) || nFree == int(sp.nSlots) {
				t.Fatalf("span %d: %d free slots, nFree %d of %d", h, nFree, sp.nFree, sp.nSlots)
			}
			if pc, ok := inPartial[h]; ok != (nFree > 0) || ok && pc != int(cl) {
				t.Fatalf("span %d of class %d: %d free, partial list membership %v (class %d)", h, cl, nFree, ok, pc)
			}
			delete(inPartial, h)
		}
		c += int(sp.chunks)
	}
	if len(inPartial) != 0 {
		t.Fatalf("partial lists hold spans that do not exist: %v", inPartial)
	}
	if freeChunks != a.nFreeChunks {
		t.Fatalf("%d free chunks, counter says %d", freeChunks, a.nFreeChunks)
	}
	for i := 0; i < a.runHint && i < a.nChunks; i++ {
		if a.chunkHead[i].Load() == noSpan {
			t.Fatalf("chunk %d is free below the hint %d", i, a.runHint)
		}
	}
	// Every live meta word belongs to a taken slot, and vice versa.
	for p := range a.meta {
		m := a.meta[p].Load()
		off := int64(p) << pageShift
		w, taken := live[off]
		if m&stateMask != stateFree && !taken {
			t.Fatalf("page %d: meta %#x live but no slot is taken there", p, m)
		}
		if taken && w&stateMask == stateFree {
			t.Fatalf("slot at %d is taken but its meta %#x says free", off, w)
		}
	}
	var used, blocks int64
	sealed := 0
	for _, w := range live {
		if w&stateMask == stateSealed {
			sealed++
		}
	}
	for k, s := range ka.indexed() {
		if w := live[s.Offset]; w != s.Gen<<genShift|stateSealed {
			t.Fatalf("%v: slot %d gen %d has meta %#x", k, s.Offset, s.Gen, w)
		}
		used += s.Len
		blocks++
	}
	if int64(sealed) != blocks {
		t.Fatalf("%d sealed slots, %d indexed blocks", sealed, blocks)
	}
	st := a.Stats()
	if st.UsedBytes != used || st.Blocks != blocks || st.ReservedBytes != reserved {
		t.Fatalf("stats %+v; recount used %d blocks %d reserved %d", st, used, blocks, reserved)
	}
}
