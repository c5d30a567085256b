package nvme

import "hash/maphash"

// index is the tier's in-memory view of its blocks: binary key → frame size
// and write sequence number. It keeps no recency: eviction is the Store's
// (it evicts NVMe copies with Delete). It is not safe for concurrent use;
// Tier.mu guards it.
//
// A block is known by a 128-bit fingerprint of its binary key (two keyed
// 64-bit hashes with independent random seeds), not by the key itself: the
// index then holds no pointer and no allocation per block. Two keys share a
// fingerprint with probability about n²/2¹²⁹ (10⁻²⁵ for ten million
// blocks), the same trust the default xxh3 mode puts in a 128-bit digest as
// a block's identity; reads go to Badger by the full key regardless. Where
// the key itself is needed (repairs at Open) it is read back from the
// block's meta key, whose sequence number the entry holds.
//
// Memory per block, 64-bit: a 32-byte entry in a chunked slice (no growth
// slack) and a 4-byte slot in an open-addressing hash table kept between
// 3/8 and 3/4 full (5-11 bytes a block): about 40 bytes; TestIndexMemory
// measures it.
type index struct {
	seeds  [2]maphash.Seed
	slots  []int32 // linear probing; entry index+1, 0 when empty; len a power of two
	chunks [][]entry
	n      int32 // entries ever allocated
	free   int32 // free list through entry.next; nilEntry when empty
	count  int64 // live entries
	used   int64 // sum of live entries' sizes
	narrow bool  // tests: keep 3 bits of each slot hash to force long probe runs
}

const (
	chunkBits = 12
	chunkLen  = 1 << chunkBits
	chunkMask = chunkLen - 1
	nilEntry  = int32(-1)
	minSlots  = 16
)

// fingerprint identifies a binary key; the zero value marks a free entry.
type fingerprint [2]uint64

type entry struct {
	fp   fingerprint // of the binary key (tiers.Key.AppendBinary)
	seq  uint64      // write sequence number: the meta key's middle part
	size uint32      // frame length in bytes
	next int32       // free-list link when free
}

func newIndex() *index {
	return &index{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, free: nilEntry}
}

// fingerprint returns bk's fingerprint, never the zero value.
func (x *index) fingerprint(bk []byte) fingerprint {
	return fingerprint{maphash.Bytes(x.seeds[0], bk), maphash.Bytes(x.seeds[1], bk) | 1}
}

func (x *index) at(i int32) *entry { return &x.chunks[i>>chunkBits][i&chunkMask] }

func (x *index) mask() uint64 { return uint64(len(x.slots) - 1) }

func (x *index) narrowed(h uint64) uint64 {
	if x.narrow {
		return h & 7
	}
	return h
}

// home returns the slot hash of a fingerprint.
func (x *index) home(fp fingerprint) uint64 { return x.narrowed(fp[0]) }

// find returns the entry of binary key bk, or nilEntry.
func (x *index) find(bk []byte) int32 { return x.findFP(x.fingerprint(bk)) }

// findFP is find with the fingerprint already computed.
func (x *index) findFP(fp fingerprint) int32 {
	if len(x.slots) == 0 {
		return nilEntry
	}
	m := x.mask()
	for p := x.home(fp) & m; ; p = (p + 1) & m {
		s := x.slots[p]
		if s == 0 {
			return nilEntry
		}
		if x.at(s-1).fp == fp {
			return s - 1
		}
	}
}

// insert adds binary key bk, which must be absent.
func (x *index) insert(bk []byte, seq uint64, size uint32) int32 {
	return x.insertFP(x.fingerprint(bk), seq, size)
}

// insertFP is insert with the fingerprint already computed.
func (x *index) insertFP(fp fingerprint, seq uint64, size uint32) int32 {
	if 4*(x.count+1) > 3*int64(len(x.slots)) {
		x.grow()
	}
	i := x.alloc()
	*x.at(i) = entry{fp: fp, seq: seq, size: size, next: nilEntry}
	x.place(i)
	x.count++
	x.used += int64(size)
	return i
}

// place puts entry i in the first free slot of its probe sequence.
func (x *index) place(i int32) {
	m := x.mask()
	p := x.home(x.at(i).fp) & m
	for x.slots[p] != 0 {
		p = (p + 1) & m
	}
	x.slots[p] = i + 1
}

func (x *index) grow() {
	x.slots = make([]int32, max(minSlots, 2*len(x.slots)))
	for i := int32(0); i < x.n; i++ {
		if x.at(i).live() {
			x.place(i)
		}
	}
}

// update records a new write of entry i.
func (x *index) update(i int32, seq uint64, size uint32) {
	e := x.at(i)
	x.used += int64(size) - int64(e.size)
	e.seq, e.size = seq, size
}

// remove deletes entry i.
func (x *index) remove(i int32) {
	e := x.at(i)
	m := x.mask()
	p := x.home(e.fp) & m
	for x.slots[p] != i+1 {
		p = (p + 1) & m
	}
	// Backward-shift deletion: pull later members of the probe run into
	// the hole unless that would move them before their home slot.
	x.slots[p] = 0
	for q := (p + 1) & m; x.slots[q] != 0; q = (q + 1) & m {
		home := x.home(x.at(x.slots[q]-1).fp) & m
		if (q-home)&m >= (q-p)&m {
			x.slots[p], x.slots[q] = x.slots[q], 0
			p = q
		}
	}
	x.count--
	x.used -= int64(e.size)
	*e = entry{next: x.free}
	x.free = i
}

// live reports whether the entry holds a block (free entries are zeroed).
func (e *entry) live() bool { return e.fp != fingerprint{} }

func (x *index) alloc() int32 {
	if i := x.free; i != nilEntry {
		x.free = x.at(i).next
		return i
	}
	i := x.n
	if int(i>>chunkBits) == len(x.chunks) {
		x.chunks = append(x.chunks, make([]entry, chunkLen))
	}
	x.n++
	return i
}
