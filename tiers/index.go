package tiers

import (
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
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
// and refer to each other by index, and hold no pointer (the namespace is an
// nsTable id): the index costs no heap allocation per block and nothing for
// the garbage collector to trace. Keep it at 136 bytes or adjust pageEntries
// (TestEntrySize).
type entry struct {
	id       blockID
	parentFP uint64 // fingerprint of the previous block of the chain, 0 when unknown
	layout   Layout
	dram     slotRef // the DRAM copy's slot, when where&inDRAM
	where    uint8   // inHBM | inDRAM | inNVMe
	packed   bool    // the DRAM copy is a codec frame (Codecs.DRAM)
	linked   bool    // parent's children count includes this entry
	saving   bool    // a persist of this block to NVMe is in flight
	pins     int32   // reader pins (Get) plus internal I/O pins
	userPins int32   // the part of pins held by Get callers
	children int32   // cached blocks whose parent is this one (a hint for leaf-first eviction)
	lists    [numLists]links
	lastUse  uint64 // store clock at the last touch: orders eviction across shards
	nextFP   int32  // next entry with the same fingerprint, or nilIdx
	free     bool
}

// blockID is a Key as an entry keeps it: the namespace by its id in the
// store's nsTable.
type blockID struct {
	hash  Hash
	layer int16
	ns    uint32
}

// slotRef is a Slot in 16 bytes: where a block's DRAM copy lives.
type slotRef struct {
	off int64
	len uint32 // block length; reserveDRAM refuses anything longer
	gen uint32
}

func refOf(s Slot) slotRef { return slotRef{off: s.Offset, len: uint32(s.Len), gen: s.Gen} }

func (r slotRef) slot() Slot { return Slot{Offset: r.off, Len: int64(r.len), Gen: r.gen} }

// list is a doubly linked recency list threaded through a shard's slab:
// head is the most recently used, tail the least.
type list struct{ head, tail int32 }

// shard is one lock's worth of the index.
type shard struct {
	seed    maphash.Seed     // shared by all shards of a store; set at creation
	names   *nsTable         // the store's; set at creation
	mu      sync.RWMutex     // protects everything below
	idx     map[uint64]int32 // fingerprint → first entry with it (chained by nextFP)
	count   int
	pages   [][]entry // the slab: fixed-size pages, so growth never copies or over-allocates
	tops    [][]Level // tops[p][j]: the fastest level of pages[p][j], dense for Lookup
	nslab   int32     // entries handed out from the slab so far
	freeIdx []int32
	lru     [numLists]list
	pending []parentRef       // parents whose children count drops once mu is released
	pinned  int               // entries with userPins > 0
	staged  map[int32]slotRef // packed entries with readers → their decoded staging slot
	ctr     counters

	// age[l] is this shard's slot in the store's tailAges[l]: the lastUse
	// of list l's tail, noAge when the list is empty. Written under mu
	// whenever the tail changes; read without it by eviction.
	age [numLists]*atomic.Uint64
}

// noAge is the published age of an empty list: older than nothing.
const noAge = math.MaxUint64

// counters are per-shard so that the hot path updates them under the shard
// lock it already holds; Stats sums them.
type counters struct {
	hits       [numLevels]int64
	misses     int64
	evictions  [numLevels]int64
	promotions [numLevels]int64
	demotions  int64
	corrupt    int64 // NVMe copies whose layout disagreed with the index
	// logical is, per level, the sum of the layout sizes of the blocks the
	// level holds: what they take decoded, whatever their frames take.
	logical [numLevels]int64
}

const numLevels = int(LevelNVMe) + 1

// pageEntries is the number of entries per slab page: 1024 entries of 136
// bytes fill exactly 17 of the allocator's 8 KiB pages, where 256 would be
// rounded up by 18%. TestEntrySize keeps the two in step.
const pageEntries = 1024

// at returns entry i. Caller holds mu.
func (s *shard) at(i int32) *entry { return &s.pages[i/pageEntries][i%pageEntries] }

// newShard returns an empty shard that publishes its lists' tail ages in
// age.
func newShard(seed maphash.Seed, names *nsTable, age [numLists]*atomic.Uint64) *shard {
	s := &shard{seed: seed, names: names, idx: make(map[uint64]int32), age: age}
	for i := range s.lru {
		s.lru[i] = list{nilIdx, nilIdx}
		age[i].Store(noAge)
	}
	return s
}

// The index is keyed by a 64-bit fingerprint of the key, not the key
// itself: a map of small fixed-size keys is several times cheaper to probe
// and to keep than one keyed by a struct holding a string. Fingerprints are
// keyed with a per-store random seed, so clients cannot craft collisions;
// the rare honest collision is chained through entry.nextFP.

// nsHash is the namespace's part of a fingerprint, computed once per call.
func nsHash(seed maphash.Seed, ns string) uint64 { return maphash.String(seed, ns) }

// fingerprint combines the namespace hash, the block hash and the layer:
// the digest's hash xor a part that depends on the namespace and layer
// alone, so that Lookup can hash a chain's digests in place.
func fingerprint(seed maphash.Seed, ns uint64, k Key) uint64 {
	return maphash.Bytes(seed, k.Hash.b[:k.Hash.n]) ^ fingerprintMix(ns, k.Layer)
}

// fingerprintMix is the namespace (hash ns) and layer part of a fingerprint.
func fingerprintMix(ns uint64, layer int16) uint64 {
	return (ns * 0x9E3779B97F4A7C15) ^ (uint64(uint16(layer)) * 0xC2B2AE3D27D4EB4F)
}

// shardIndex maps a fingerprint to one of n shards.
func shardIndex(fp uint64, n int) int { return int((fp >> 32) * uint64(n) >> 32) }

// find returns k's index, or nilIdx. Caller holds mu (read or write).
func (s *shard) find(k Key) int32 {
	return s.findFP(k, fingerprint(s.seed, nsHash(s.seed, k.Namespace), k))
}

// findFP is find with the fingerprint already computed.
func (s *shard) findFP(k Key, fp uint64) int32 {
	i, ok := s.idx[fp]
	if !ok {
		return nilIdx
	}
	for ; i != nilIdx; i = s.at(i).nextFP {
		if e := s.at(i); e.id.hash == k.Hash && e.id.layer == k.Layer && s.names.name(e.id.ns) == k.Namespace {
			return i
		}
	}
	return nilIdx
}

// key returns entry i's key; its Namespace is the store's shared copy.
// Caller holds mu.
func (s *shard) key(i int32) Key {
	e := s.at(i)
	return Key{Namespace: s.names.name(e.id.ns), Hash: e.id.hash, Layer: e.id.layer}
}

// fpOf recomputes entry i's fingerprint. Caller holds mu.
func (s *shard) fpOf(i int32) uint64 {
	k := s.key(i)
	return fingerprint(s.seed, nsHash(s.seed, k.Namespace), k)
}

// each calls fn for every live entry. Caller holds mu.
func (s *shard) each(fn func(i int32)) {
	for i := int32(0); i < s.nslab; i++ {
		if !s.at(i).free {
			fn(i)
		}
	}
}

// addFP inserts a fresh entry for k, whose fingerprint is fp, and returns
// its index. Caller holds mu.
func (s *shard) addFP(k Key, fp uint64) int32 {
	var i int32
	if n := len(s.freeIdx); n > 0 {
		i = s.freeIdx[n-1]
		s.freeIdx = s.freeIdx[:n-1]
	} else {
		if s.nslab%pageEntries == 0 {
			s.pages = append(s.pages, make([]entry, pageEntries))
			s.tops = append(s.tops, make([]Level, pageEntries))
		}
		i = s.nslab
		s.nslab++
	}
	e := s.at(i)
	*e = entry{id: blockID{hash: k.Hash, layer: k.Layer, ns: s.names.add(k.Namespace)}, nextFP: nilIdx}
	for l := range e.lists {
		e.lists[l] = links{nilIdx, nilIdx}
	}
	if head, ok := s.idx[fp]; ok {
		e.nextFP = head
	}
	s.idx[fp] = i
	s.count++
	return i
}

// drop removes entry i from the index and every list. Caller holds mu.
func (s *shard) drop(i int32) {
	e := s.at(i)
	for l := 0; l < numLists; l++ {
		if s.inList(l, i) {
			s.unlink(l, i)
		}
	}
	s.unindex(i)
	s.count--
	*e = entry{free: true}
	s.tops[i/pageEntries][i%pageEntries] = LevelNone
	s.freeIdx = append(s.freeIdx, i)
}

// pinUser takes a reader's pin on entry i. Caller holds mu (write).
func (s *shard) pinUser(i int32) {
	e := s.at(i)
	e.pins++
	e.userPins++
	if e.userPins == 1 {
		s.pinned++
	}
}

// setWhere sets the copies entry i has, keeping its dense top level in
// step. Caller holds mu (write).
//
// It also keeps counters.logical: an entry's layout changes only while it
// holds no copy, so the size a bit was counted with is the size it is
// uncounted with.
func (s *shard) setWhere(i int32, w uint8) {
	e := s.at(i)
	if changed := e.where ^ w; changed != 0 {
		size := e.layout.Size()
		for l, bit := range bitOf {
			switch {
			case changed&bit == 0:
			case w&bit != 0:
				s.ctr.logical[levelOf[l]] += size
			default:
				s.ctr.logical[levelOf[l]] -= size
			}
		}
	}
	e.where = w
	s.tops[i/pageEntries][i%pageEntries] = e.top()
}

// topFP returns the fastest level holding the block with fingerprint fp,
// trusting the fingerprint without comparing keys (see Store.Lookup).
// Caller holds mu (read or write).
func (s *shard) topFP(fp uint64) Level {
	i, ok := s.idx[fp]
	if !ok {
		return LevelNone
	}
	return s.tops[i/pageEntries][i%pageEntries]
}

// unindex removes entry i from its fingerprint chain. Caller holds mu.
func (s *shard) unindex(i int32) {
	e := s.at(i)
	fp := s.fpOf(i)
	head := s.idx[fp]
	if head == i {
		if e.nextFP == nilIdx {
			delete(s.idx, fp)
		} else {
			s.idx[fp] = e.nextFP
		}
		return
	}
	for j := head; j != nilIdx; j = s.at(j).nextFP {
		if s.at(j).nextFP == i {
			s.at(j).nextFP = e.nextFP
			return
		}
	}
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
	e := s.at(i)
	if e.onList(l) || s.lru[l].tail == i {
		s.unlink(l, i)
	}
	old := s.lru[l].head
	e.lists[l] = links{prev: nilIdx, next: old}
	if old != nilIdx {
		s.at(old).lists[l].prev = i
	} else {
		s.lru[l].tail = i
		s.publishTail(l)
	}
	s.lru[l].head = i
}

// unlink removes i from list l. Caller holds mu.
func (s *shard) unlink(l int, i int32) {
	e := s.at(i)
	p, n := e.lists[l].prev, e.lists[l].next
	if p != nilIdx {
		s.at(p).lists[l].next = n
	} else if s.lru[l].head == i {
		s.lru[l].head = n
	}
	if n != nilIdx {
		s.at(n).lists[l].prev = p
	} else if s.lru[l].tail == i {
		s.lru[l].tail = p
		s.publishTail(l)
	}
	e.lists[l] = links{nilIdx, nilIdx}
}

// publishTail publishes the age of list l's tail, for eviction to find the
// shard that holds the oldest copy without locking every shard. Caller
// holds mu. The store-wide ages share cache lines, so it writes only a
// changed age.
func (s *shard) publishTail(l int) {
	a := uint64(noAge)
	if t := s.lru[l].tail; t != nilIdx {
		a = s.at(t).lastUse
	}
	if s.age[l].Load() != a {
		s.age[l].Store(a)
	}
}

// inList reports whether i is on list l, including as its only member.
func (s *shard) inList(l int, i int32) bool {
	return s.at(i).onList(l) || s.lru[l].head == i
}

// touch marks i as just used, at store clock now, on every list it is on.
// Caller holds mu.
func (s *shard) touch(i int32, now uint64) {
	e := s.at(i)
	e.lastUse = now
	for l, bit := range [numLists]uint8{inHBM, inDRAM, inNVMe} {
		if e.where&bit != 0 {
			s.pushFront(l, i)
			if s.lru[l].tail == i { // the only entry: its age just changed
				s.publishTail(l)
			}
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
