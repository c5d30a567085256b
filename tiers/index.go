package tiers

import (
	"encoding/binary"
	"sync"
)

// Copies a block may have; entry.where is a bitmask of them.
const (
	inHBM uint8 = 1 << iota
	inDRAM
	inNVMe
)

// lists an entry can be on: one recency list per level, so eviction from a
// level walks only blocks that level holds.
const (
	listHBM = iota
	listDRAM
	listNVMe
	numLists
)

const nilIdx = -1

// links are the intrusive prev/next indices of an entry on one list.
type links struct{ prev, next int32 }

// entry is the store's record of one block. Entries live in a per-shard slab
// and refer to each other by index, so the index costs no heap allocation per
// block and little for the garbage collector to trace.
type entry struct {
	key      Key
	parent   Hash // previous block of the chain, zero when unknown
	layout   Layout
	where    uint8 // inHBM | inDRAM | inNVMe
	linked   bool  // parent's children count includes this entry
	doomed   bool  // deleted while an internal I/O pin was held; removed at last unpin
	saving   bool  // a persist of this block to NVMe is in flight
	pins     int32 // reader pins (Get) plus internal I/O pins
	userPins int32 // the part of pins held by Get callers
	children int32 // cached blocks whose parent is this one (a hint for leaf-first eviction)
	lists    [numLists]links
	free     bool
}

// list is a doubly linked recency list threaded through a shard's slab:
// head is the most recently used, tail the least.
type list struct{ head, tail int32 }

// shard is one lock's worth of the index.
type shard struct {
	mu      sync.RWMutex // protects everything below
	idx     map[Key]int32
	slab    []entry
	freeIdx []int32
	lru     [numLists]list
	pending []Key // parents whose children count drops once mu is released
	ctr     counters
}

// counters are per-shard so that the hot path updates them under the shard
// lock it already holds; Stats sums them.
type counters struct {
	hits       [numLevels]int64
	misses     int64
	evictions  [numLevels]int64
	promotions [numLevels]int64
	demotions  int64
	corrupt    int64
}

const numLevels = int(LevelNVMe) + 1

func newShard() *shard {
	s := &shard{idx: make(map[Key]int32)}
	for i := range s.lru {
		s.lru[i] = list{nilIdx, nilIdx}
	}
	return s
}

// shardOf picks k's shard. Hashes are uniformly distributed already; the
// layer is mixed in so the layers of one block spread out.
func shardOf(k Key, n int) int {
	x := binary.LittleEndian.Uint64(k.Hash.b[:8]) ^ uint64(uint16(k.Layer))*0x9E3779B97F4A7C15
	x ^= x >> 29
	return int(x % uint64(n))
}

// find returns k's index, or nilIdx. Caller holds mu (read or write).
func (s *shard) find(k Key) int32 {
	if i, ok := s.idx[k]; ok {
		return i
	}
	return nilIdx
}

// add inserts a fresh entry for k and returns its index. Caller holds mu.
func (s *shard) add(k Key) int32 {
	var i int32
	if n := len(s.freeIdx); n > 0 {
		i = s.freeIdx[n-1]
		s.freeIdx = s.freeIdx[:n-1]
	} else {
		s.slab = append(s.slab, entry{})
		i = int32(len(s.slab) - 1)
	}
	e := &s.slab[i]
	*e = entry{key: k}
	for l := range e.lists {
		e.lists[l] = links{nilIdx, nilIdx}
	}
	s.idx[k] = i
	return i
}

// drop removes entry i from the index and every list. Caller holds mu.
func (s *shard) drop(i int32) {
	e := &s.slab[i]
	for l := 0; l < numLists; l++ {
		if s.inList(l, i) {
			s.unlink(l, i)
		}
	}
	delete(s.idx, e.key)
	*e = entry{free: true}
	s.freeIdx = append(s.freeIdx, i)
}

func (e *entry) onList(l int) bool {
	return e.lists[l].prev != nilIdx || e.lists[l].next != nilIdx
}

// pushFront puts i at the head of list l (most recent), unlinking it first
// if it is already there. Caller holds mu.
func (s *shard) pushFront(l int, i int32) {
	if s.lru[l].head == i {
		return
	}
	e := &s.slab[i]
	if e.onList(l) || s.lru[l].tail == i {
		s.unlink(l, i)
	}
	old := s.lru[l].head
	e.lists[l] = links{prev: nilIdx, next: old}
	if old != nilIdx {
		s.slab[old].lists[l].prev = i
	} else {
		s.lru[l].tail = i
	}
	s.lru[l].head = i
}

// unlink removes i from list l. Caller holds mu.
func (s *shard) unlink(l int, i int32) {
	e := &s.slab[i]
	p, n := e.lists[l].prev, e.lists[l].next
	if p != nilIdx {
		s.slab[p].lists[l].next = n
	} else if s.lru[l].head == i {
		s.lru[l].head = n
	}
	if n != nilIdx {
		s.slab[n].lists[l].prev = p
	} else if s.lru[l].tail == i {
		s.lru[l].tail = p
	}
	e.lists[l] = links{nilIdx, nilIdx}
}

// inList reports whether i is on list l, including as its only member.
func (s *shard) inList(l int, i int32) bool {
	return s.slab[i].onList(l) || s.lru[l].head == i
}

// touch marks i as just used on every list it is on. Caller holds mu.
func (s *shard) touch(i int32) {
	e := &s.slab[i]
	for l, bit := range [numLists]uint8{inHBM, inDRAM, inNVMe} {
		if e.where&bit != 0 {
			s.pushFront(l, i)
		}
	}
}

// top returns the fastest level that holds a copy.
func (e *entry) top() Level {
	switch {
	case e.where&inHBM != 0:
		return LevelHBM
	case e.where&inDRAM != 0:
		return LevelDRAM
	case e.where&inNVMe != 0:
		return LevelNVMe
	}
	return LevelNone
}
