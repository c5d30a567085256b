package tiers

import (
	"context"
	"fmt"
	"sync"
)

// memTier is an in-memory Tier and HostTier for the store's tests: a bounded
// store with byte accounting and fault injection. As NVMe or HBM it is keyed
// (Put, Get, Delete); as DRAM it is slot-addressed (Alloc, Seal, Free). The
// real tiers have their own packages and tests; this one lets the store's
// logic be tested alone and checked against its index.
type memTier struct {
	name string
	cap  int64

	mu       sync.Mutex // protects all below
	blocks   map[Key]*memBlock
	reserved map[int64]*memBlock // by slot offset
	sealed   map[int64]*memBlock // by slot offset
	used     int64               // bytes of blocks, sealed slots and reservations
	next     int64
	corrupt  int64
	closed   bool
	// corruptNext makes the next Get of this key fail its checksum.
	corruptNext map[Key]bool
	// putErr, when set, fails every Put (a tier out of disk space).
	putErr error
	// beforeGet, when set, runs at the start of every Get, without mu: a
	// test's way to act while the store reads this tier.
	beforeGet func(k Key)
}

type memBlock struct {
	l    Layout
	data []byte
	slot Slot
}

func newMemTier(name string, capacity int64) *memTier {
	return &memTier{name: name, cap: capacity, blocks: map[Key]*memBlock{}, reserved: map[int64]*memBlock{},
		sealed: map[int64]*memBlock{}, corruptNext: map[Key]bool{}}
}

var (
	_ Tier     = (*memTier)(nil)
	_ HostTier = (*memTier)(nil)
)

func (m *memTier) Put(ctx context.Context, k Key, l Layout, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.putErr != nil {
		return m.putErr
	}
	b, err := m.reserve(l.Size())
	if err != nil {
		return err
	}
	delete(m.reserved, b.slot.Offset)
	copy(b.data, data)
	b.l = l
	if old, ok := m.blocks[k]; ok {
		m.used -= int64(len(old.data))
	}
	m.blocks[k] = b
	return nil
}

func (m *memTier) Alloc(n int64) (Slot, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := m.reserve(n)
	if err != nil {
		return Slot{}, nil, err
	}
	return b.slot, b.data, nil
}

// reserve takes n bytes of room. Caller holds mu.
func (m *memTier) reserve(n int64) (*memBlock, error) {
	if m.closed {
		return nil, ErrClosed
	}
	if m.used+n > m.cap {
		return nil, fmt.Errorf("%s: %w", m.name, ErrFull)
	}
	m.used += n
	m.next++
	b := &memBlock{data: make([]byte, n), slot: Slot{Offset: m.next, Len: n, Gen: uint32(m.next)}}
	m.reserved[b.slot.Offset] = b
	return b, nil
}

func (m *memTier) Seal(s Slot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.reserved[s.Offset]
	if !ok || b.slot != s {
		return fmt.Errorf("%w: slot %d not reserved", ErrInvalid, s.Offset)
	}
	delete(m.reserved, s.Offset)
	m.sealed[s.Offset] = b
	return nil
}

func (m *memTier) Abort(s Slot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.reserved[s.Offset]
	if !ok || b.slot != s {
		return fmt.Errorf("%w: slot %d not reserved", ErrInvalid, s.Offset)
	}
	delete(m.reserved, s.Offset)
	m.used -= int64(len(b.data))
	return nil
}

func (m *memTier) Free(s Slot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.sealed[s.Offset]
	if !ok || b.slot != s {
		return fmt.Errorf("%w: slot %d not sealed", ErrInvalid, s.Offset)
	}
	scribble(b.data)
	delete(m.sealed, s.Offset)
	m.used -= int64(len(b.data))
	return nil
}

func (m *memTier) Bytes(s Slot) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.sealed[s.Offset]; ok && b.slot == s {
		return b.data
	}
	if b, ok := m.reserved[s.Offset]; ok && b.slot == s {
		return b.data
	}
	return nil
}

func (m *memTier) SlotSize(n int64) int64 { return n }

// scribble overwrites freed bytes, so that a view kept past its pin shows up.
func scribble(b []byte) {
	for i := range b {
		b[i] = 0xDD
	}
}

// hasSlot reports whether s is a sealed slot.
func (m *memTier) hasSlot(s Slot) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.sealed[s.Offset]
	return ok && b.slot == s
}

func (m *memTier) Get(ctx context.Context, k Key, dst []byte) (Layout, []byte, error) {
	if m.beforeGet != nil {
		m.beforeGet(k)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Layout{}, dst, ErrClosed
	}
	b, ok := m.blocks[k]
	if !ok {
		return Layout{}, dst, ErrNotFound
	}
	if m.corruptNext[k] {
		delete(m.corruptNext, k)
		delete(m.blocks, k)
		m.used -= int64(len(b.data))
		m.corrupt++
		return Layout{}, dst, fmt.Errorf("%w: %v", ErrCorrupt, k)
	}
	return b.l, append(dst, b.data...), nil
}

func (m *memTier) Delete(ctx context.Context, k Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.blocks[k]; ok {
		scribble(b.data)
		m.used -= int64(len(b.data))
		delete(m.blocks, k)
	}
	return nil
}

func (m *memTier) Stats() TierStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	var used int64
	for _, b := range m.blocks {
		used += int64(len(b.data))
	}
	for _, b := range m.sealed {
		used += int64(len(b.data))
	}
	return TierStats{Name: m.name, CapacityBytes: m.cap, UsedBytes: used, ReservedBytes: m.used,
		Blocks: int64(len(m.blocks) + len(m.sealed)), Corrupt: m.corrupt}
}

func (m *memTier) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

func (m *memTier) has(k Key) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.blocks[k]
	return ok
}

func (m *memTier) Scan(ctx context.Context, fn func(Key, Layout, int64) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, b := range m.blocks {
		if err := fn(k, b.l, int64(len(b.data))); err != nil {
			return err
		}
	}
	return nil
}

func (m *memTier) Sync() error { return nil }

// checkIndex verifies that the store's index agrees with its tiers and that
// the recency lists hold exactly the entries with a copy at their level.
// Call it only while the store is quiescent.
func checkIndex(s *Store, tiersByBit map[uint8]*memTier) error {
	dramBlocks := 0
	for si, sh := range s.shards {
		sh.mu.RLock()
		n := 0
		for fp, head := range sh.idx {
			for i := head; i != nilIdx; i = sh.at(i).nextFP {
				if e := sh.at(i); e.free || sh.fpOf(i) != fp || sh.find(sh.key(i)) != i {
					sh.mu.RUnlock()
					return fmt.Errorf("shard %d: fingerprint %x chain holds entry %d (free %v)", si, fp, i, e.free)
				}
				n++
			}
		}
		if len(sh.staged) != 0 {
			sh.mu.RUnlock()
			return fmt.Errorf("shard %d: %d staging slots left with no reader", si, len(sh.staged))
		}
		pinned := 0
		var logical [numLevels]int64
		for i := int32(0); i < sh.nslab; i++ {
			e := sh.at(i)
			if !e.free && e.userPins > 0 {
				pinned++
			}
			for l, bit := range bitOf {
				if !e.free && e.where&bit != 0 {
					logical[levelOf[l]] += e.layout.Size()
				}
			}
		}
		if logical != sh.ctr.logical {
			sh.mu.RUnlock()
			return fmt.Errorf("shard %d: blocks take %v bytes decoded per level, counters say %v", si, logical, sh.ctr.logical)
		}
		if pinned != sh.pinned {
			sh.mu.RUnlock()
			return fmt.Errorf("shard %d: %d entries pinned, counter says %d", si, pinned, sh.pinned)
		}
		if n != sh.count {
			sh.mu.RUnlock()
			return fmt.Errorf("shard %d: %d entries indexed, count says %d", si, n, sh.count)
		}
		for i := int32(0); i < sh.nslab; i++ {
			if sh.at(i).free {
				continue
			}
			e := sh.at(i)
			k := sh.key(i)
			if top := sh.tops[i/pageEntries][i%pageEntries]; top != e.top() {
				sh.mu.RUnlock()
				return fmt.Errorf("%v: dense top level %v, entry says %v", k, top, e.top())
			}
			if e.where == 0 {
				sh.mu.RUnlock()
				return fmt.Errorf("%v: indexed with no copy", k)
			}
			if e.packed && e.where&inDRAM == 0 {
				sh.mu.RUnlock()
				return fmt.Errorf("%v: marked packed with no DRAM copy", k)
			}
			for l, bit := range bitOf {
				mt := tiersByBit[bit]
				onList := sh.inList(l, i)
				has := e.where&bit != 0
				if has != onList {
					sh.mu.RUnlock()
					return fmt.Errorf("%v: copy bit %b is %v but on list %d is %v", k, bit, has, l, onList)
				}
				if bit == inDRAM && mt != nil {
					if has && !mt.hasSlot(e.dram.slot()) {
						sh.mu.RUnlock()
						return fmt.Errorf("%v: DRAM slot %+v is not sealed in the arena", k, e.dram)
					}
					if has {
						dramBlocks++
					}
					continue
				}
				if mt != nil && has != mt.has(k) {
					sh.mu.RUnlock()
					return fmt.Errorf("%v: index says %s copy %v, tier says %v", k, mt.name, has, !has)
				}
			}
			if pins := e.pins; pins != 0 || e.userPins != 0 {
				sh.mu.RUnlock()
				return fmt.Errorf("%v: %d pins left", k, pins)
			}
		}
		for l := range sh.lru {
			n := 0
			for i := sh.lru[l].head; i != nilIdx; i = sh.at(i).lists[l].next {
				n++
				if n > int(sh.nslab) {
					sh.mu.RUnlock()
					return fmt.Errorf("shard %d list %d: cycle", si, l)
				}
			}
			want := uint64(noAge)
			if t := sh.lru[l].tail; t != nilIdx {
				want = sh.at(t).lastUse
			}
			if got := s.tailAges[l][si].Load(); got != want {
				sh.mu.RUnlock()
				return fmt.Errorf("shard %d list %d: published tail age %d, tail's lastUse %d", si, l, got, want)
			}
		}
		sh.mu.RUnlock()
	}
	if mt := tiersByBit[inDRAM]; mt != nil {
		mt.mu.Lock()
		sealed, reserved := len(mt.sealed), len(mt.reserved)
		mt.mu.Unlock()
		if sealed != dramBlocks || reserved != 0 {
			return fmt.Errorf("dram: %d slots sealed and %d reserved, the index holds %d DRAM copies", sealed, reserved, dramBlocks)
		}
	}
	for _, mt := range tiersByBit {
		if mt == nil {
			continue
		}
		st := mt.Stats()
		if st.UsedBytes > st.CapacityBytes {
			return fmt.Errorf("%s: %d bytes used over capacity %d", mt.name, st.UsedBytes, st.CapacityBytes)
		}
	}
	return nil
}
