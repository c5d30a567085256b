package tiers

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/internal/ntcopy"
)

// Config configures a Store. Zero fields take defaults from EnsureDefaults.
type Config struct {
	// DRAM is the landing tier: every block is written here first and every
	// read is served from here. Required.
	DRAM HostTier
	// NVMe is the persistent tier, a write-behind copy of DRAM. Optional. If
	// it implements Scanner, Open rebuilds the index from it; if it
	// implements Syncer, durable puts wait for it.
	NVMe Tier
	// HBM is the GPU tier, filled on request (GetOptions.Promote). Optional.
	// DRAM is inclusive of HBM, so dropping an HBM copy is free.
	HBM Tier

	// Shards is the number of index shards (locks). Default 64.
	Shards int
	// WriteBehindQueue bounds the blocks waiting to be copied to NVMe; a put
	// that finds it full waits (back-pressure). Default 256.
	WriteBehindQueue int
	// WriteBehindWorkers is the number of goroutines copying DRAM to NVMe. Default 2.
	WriteBehindWorkers int
	// Codecs is the codec policy: how each namespace's blocks are kept in
	// DRAM and on NVMe (see Codecs). Nil means DefaultCodecs for every
	// namespace. It must be safe for concurrent use and give the same
	// answer for a namespace for the store's lifetime.
	Codecs func(ns string) Codecs

	// LeafScan is how many least-recently-used blocks eviction examines
	// looking for a leaf of a prefix chain before it settles for a non-leaf. Default 64.
	LeafScan int
	// Logger receives the store's logs. Default slog.Default().
	Logger *slog.Logger
}

// Codecs is how one namespace's blocks are kept.
type Codecs struct {
	// DRAM is the mode DRAM keeps blocks in; codec.Raw keeps them as they
	// are. A compressed block takes a slot the size of its frame, and every
	// Get decodes it into a staging slot that lives until the block's last
	// reader releases it: capacity bought with decode time on each Get (and,
	// in a quantized mode, with precision: Get returns the decoded values).
	// A block whose frame would take no smaller a slot is kept raw.
	DRAM codec.Mode
	// NVMe is the mode of NVMe copies. The Store encodes them and hands the
	// NVMe tier frames (FrameTier); a DRAM frame already in this mode moves
	// as it is, any other is decoded and encoded in this mode first.
	NVMe codec.Mode
}

// DefaultCodecs is the codec policy of a namespace nothing else names:
// DRAM raw (no decode on Get), NVMe lossless (smaller, bit-exact).
var DefaultCodecs = Codecs{DRAM: codec.Raw, NVMe: codec.Lossless}

// EnsureDefaults fills zero fields with their defaults.
func (c *Config) EnsureDefaults() {
	if c.Shards <= 0 {
		c.Shards = 64
	}
	if c.WriteBehindQueue <= 0 {
		c.WriteBehindQueue = 256
	}
	if c.WriteBehindWorkers <= 0 {
		c.WriteBehindWorkers = 2
	}
	if c.LeafScan <= 0 {
		c.LeafScan = 64
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	if c.DRAM == nil {
		return fmt.Errorf("%w: config: DRAM tier is required", ErrInvalid)
	}
	if c.Shards > 1<<16 {
		return fmt.Errorf("%w: config: %d shards is too many", ErrInvalid, c.Shards)
	}
	return nil
}

// PutOptions modify Put and Commit.
type PutOptions struct {
	// Parent is the hash of the previous block of the chain (same namespace
	// and layer), zero for the first block or when unknown. It lets eviction
	// take leaves first, so every chain's cached part stays a prefix.
	Parent Hash
	// Durable makes the call return only after the block's NVMe copy is on
	// stable storage. Without an NVMe tier it is ErrUnavailable.
	Durable bool
}

// GetOptions modify Get.
type GetOptions struct {
	// Promote: LevelHBM also copies the block into HBM (ErrUnavailable
	// without an HBM tier). Any other value: the block is brought into DRAM,
	// which every Get does.
	Promote Level
}

// Block is a pinned block returned by Get. Data is the block's bytes in
// place in the DRAM arena: valid until Release(Key), never after. Do not
// write to it.
type Block struct {
	Key    Key
	Layout Layout
	Data   []byte
	Slot   Slot  // where Data lives in the DRAM arena's mapping
	From   Level // the fastest level that held the block when Get was called
}

// Reservation is room in the DRAM arena for a block being written in place
// (the shared-memory data plane): fill Data (or the arena mapping at
// Slot.Offset), then Commit or Abort.
type Reservation struct {
	Key    Key
	Layout Layout
	Slot   Slot
	Data   []byte
}

// Store is the tier hierarchy: it owns the index of every cached block, the
// placement of copies across HBM, DRAM and NVMe, eviction, promotion,
// write-behind to NVMe, and pins. It is safe for concurrent use: the index
// is sharded, and no lock is held across NVMe I/O except to delete a copy.
type Store struct {
	cfg    Config
	dram   HostTier
	nvme   Tier // nil without an NVMe tier
	hbm    Tier // nil without an HBM tier
	shards []*shard
	seed   maphash.Seed // keys the index fingerprints
	names  nsTable      // the namespaces indexed, by id
	log    *slog.Logger

	evictCursor [numLists]atomic.Uint32   // round-robin start shard for eviction
	tailAges    [numLists][]atomic.Uint64 // per list, per shard: its tail's lastUse (shard.age)
	clock       atomic.Uint64             // ticks once per touch; orders recency across shards
	dramCap     int64

	victims atomic.Pointer[victimSource] // eviction by importance; nil: LRU only

	wbq    chan Key      // write-behind queue
	done   chan struct{} // closed by Close
	wbWG   sync.WaitGroup
	closed atomic.Bool
}

// Open builds a store over the given tiers. When the NVMe tier is a Scanner
// its blocks are indexed, so a restart finds them. The store takes
// ownership of the tiers: Close closes them.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Store{
		cfg:     cfg,
		dram:    cfg.DRAM,
		nvme:    cfg.NVMe,
		hbm:     cfg.HBM,
		log:     cfg.Logger,
		dramCap: cfg.DRAM.Stats().CapacityBytes,
		wbq:     make(chan Key, cfg.WriteBehindQueue),
		done:    make(chan struct{}),
	}
	s.seed = maphash.MakeSeed()
	s.shards = make([]*shard, cfg.Shards)
	for l := range s.tailAges {
		s.tailAges[l] = make([]atomic.Uint64, cfg.Shards)
	}
	for i := range s.shards {
		var age [numLists]*atomic.Uint64
		for l := range age {
			age[l] = &s.tailAges[l][i]
		}
		s.shards[i] = newShard(s.seed, &s.names, age)
	}
	if sc, ok := s.nvme.(Scanner); ok {
		n := 0
		err := sc.Scan(ctx, func(k Key, l Layout, _ int64) error {
			k.Namespace = s.intern(k.Namespace, true)
			sh, fp := s.locate(k)
			sh.mu.Lock()
			i := sh.findFP(k, fp)
			if i == nilIdx {
				i = sh.addFP(k, fp)
			}
			e := sh.at(i)
			e.layout = l
			sh.setWhere(i, e.where|inNVMe)
			sh.touch(i, s.tick()) // write order: the oldest write is evicted first
			sh.mu.Unlock()
			n++
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("tiers: rebuilding index from NVMe: %w", err)
		}
		s.log.Info("tiers: index rebuilt from NVMe", "blocks", n)
	}
	if s.nvme != nil {
		for range cfg.WriteBehindWorkers {
			s.wbWG.Add(1)
			go s.writeBehind()
		}
	}
	return s, nil
}

// locate returns k's shard and index fingerprint.
func (s *Store) locate(k Key) (*shard, uint64) {
	fp := s.fp(k)
	return s.shards[shardIndex(fp, len(s.shards))], fp
}

// intern returns the store's shared copy of ns (the tiers then hold one
// string per namespace rather than one per block), adding ns to the table
// of namespaces when add (a put) and it is new.
func (s *Store) intern(ns string, add bool) string {
	if add {
		return s.names.name(s.names.add(ns))
	}
	return s.names.intern(ns)
}

// tick advances the store's recency clock.
func (s *Store) tick() uint64 { return s.clock.Add(1) }

func (s *Store) checkOpen() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

func invalidLayout(err error) error { return fmt.Errorf("%w: %w", ErrInvalid, err) }

// Put stores a copy of data, a block with layout l, under k. The block lands
// in DRAM and is copied to NVMe behind the caller (or before return when
// opts.Durable). Blocks are content-addressed: a put of a key already cached
// with the same layout only refreshes its recency. When DRAM is full,
// unpinned blocks are evicted (persisted ones for free, others demoted to
// NVMe first); when everything is pinned the put fails with ErrExhausted.
func (s *Store) Put(ctx context.Context, k Key, l Layout, data []byte, opts PutOptions) error {
	if err := s.checkPut(k, l, len(data), opts); err != nil {
		return err
	}
	k.Namespace = s.intern(k.Namespace, true)
	if done, err := s.putExisting(ctx, k, l, opts); done {
		return err
	}
	if slot, packed, err := s.pack(ctx, k, l, data); err != nil || packed {
		if err != nil {
			return err
		}
		return s.commit(ctx, k, l, slot, true, opts)
	}
	slot, view, err := s.reserveDRAM(ctx, l.Size())
	if err != nil {
		return err
	}
	ntcopy.Copy(view, data) // the block lands in memory, not in this core's cache
	return s.commit(ctx, k, l, slot, false, opts)
}

func (s *Store) checkPut(k Key, l Layout, n int, opts PutOptions) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if err := k.Validate(); err != nil {
		return err
	}
	if err := l.CheckLen(n); err != nil {
		return invalidLayout(err)
	}
	if !opts.Parent.IsZero() && opts.Parent.Len() != 16 && opts.Parent.Len() != 32 {
		return fmt.Errorf("%w: parent hash: %d bytes", ErrInvalid, opts.Parent.Len())
	}
	if opts.Durable && s.nvme == nil {
		return fmt.Errorf("%w: durable put needs an NVMe tier", ErrUnavailable)
	}
	return nil
}

// Refresh is the part of a put that needs no bytes: when k is already in
// DRAM with layout l, it refreshes the block's recency (and, for a durable
// request, makes sure its NVMe copy is synced) and reports true, and the
// caller has nothing to store, since blocks are content-addressed. It lets a
// caller that receives the bytes later (a streamed put) skip reserving DRAM,
// and so evicting, for a block that is already there.
func (s *Store) Refresh(ctx context.Context, k Key, l Layout, opts PutOptions) (bool, error) {
	if err := s.checkPut(k, l, int(l.Size()), opts); err != nil {
		return false, err
	}
	k.Namespace = s.intern(k.Namespace, false)
	return s.putExisting(ctx, k, l, opts)
}

// putExisting handles a put of a block already in DRAM with the same
// layout: it refreshes recency and, for a durable put, persists it.
func (s *Store) putExisting(ctx context.Context, k Key, l Layout, opts PutOptions) (bool, error) {
	sh, fp := s.locate(k)
	sh.mu.Lock()
	i := sh.findFP(k, fp)
	if i == nilIdx {
		sh.mu.Unlock()
		return false, nil
	}
	e := sh.at(i)
	if e.where&inDRAM == 0 || e.layout != l {
		sh.mu.Unlock()
		return false, nil
	}
	sh.touch(i, s.tick())
	persisted := e.where&inNVMe != 0
	sh.mu.Unlock()
	if opts.Durable && !persisted {
		return true, s.persistSync(ctx, k)
	}
	return true, nil
}

// Reserve makes room in DRAM for a block of layout l that the caller will
// write in place (the shared-memory data plane). Finish with Commit or Abort.
func (s *Store) Reserve(ctx context.Context, k Key, l Layout) (Reservation, error) {
	if err := s.checkPut(k, l, int(l.Size()), PutOptions{}); err != nil {
		return Reservation{}, err
	}
	slot, view, err := s.reserveDRAM(ctx, l.Size())
	if err != nil {
		return Reservation{}, err
	}
	k.Namespace = s.intern(k.Namespace, false) // Commit adds a new namespace: an aborted reservation leaves none
	return Reservation{Key: k, Layout: l, Slot: slot, Data: view}, nil
}

// Commit makes a reservation's block visible, as Put does with its copy.
// A reservation is committed or aborted exactly once.
func (s *Store) Commit(ctx context.Context, r Reservation, opts PutOptions) error {
	if err := s.checkPut(r.Key, r.Layout, int(r.Layout.Size()), opts); err != nil {
		if !errors.Is(err, ErrClosed) {
			_ = s.dram.Abort(r.Slot)
		}
		return err
	}
	slot, packed, err := s.pack(ctx, r.Key, r.Layout, r.Data)
	if err != nil {
		_ = s.dram.Abort(r.Slot)
		return err
	}
	if packed {
		_ = s.dram.Abort(r.Slot)
		return s.commit(ctx, r.Key, r.Layout, slot, true, opts)
	}
	return s.commit(ctx, r.Key, r.Layout, r.Slot, false, opts)
}

// Abort frees a reservation that will not be committed.
func (s *Store) Abort(r Reservation) error { return s.dram.Abort(r.Slot) }

// reserveDRAM allocates a DRAM slot of n bytes, evicting until one is free.
func (s *Store) reserveDRAM(ctx context.Context, n int64) (Slot, []byte, error) {
	if n > s.dramCap || n > math.MaxUint32 {
		return Slot{}, nil, fmt.Errorf("%w: block of %d bytes is larger than the DRAM tier can hold (%d bytes)", ErrExhausted, n, min(s.dramCap, math.MaxUint32))
	}
	for {
		slot, view, err := s.dram.Alloc(n)
		if err == nil {
			return slot, view, nil
		}
		if !errors.Is(err, ErrFull) {
			return Slot{}, nil, err
		}
		if err := s.makeRoom(ctx, listDRAM); err != nil {
			return Slot{}, nil, fmt.Errorf("%w: DRAM tier is full and nothing in it can be evicted", err)
		}
	}
}

// commit publishes a filled DRAM slot as k: the block's bytes, or its
// frame when packed.
func (s *Store) commit(ctx context.Context, k Key, l Layout, slot Slot, packed bool, opts PutOptions) error {
	p, hasParent := s.parentRef(k, opts.Parent)
	linked := hasParent && s.adjustChildren(p, +1) // k counts as its parent's child
	sh, fp := s.locate(k)
	sh.mu.Lock()
	i := sh.findFP(k, fp)
	if i != nilIdx {
		e := sh.at(i)
		switch {
		case e.where&inDRAM != 0 && e.layout == l:
			// Another put of the same content won the race.
			sh.touch(i, s.tick())
			sh.mu.Unlock()
			_ = s.dram.Abort(slot)
			s.unlinkParent(p, linked)
			return s.afterCommit(ctx, k, opts, false)
		case e.pins > 0 && e.layout != l:
			sh.mu.Unlock()
			_ = s.dram.Abort(slot)
			s.unlinkParent(p, linked)
			return fmt.Errorf("%w: %v is held with layout %v; cannot replace it with %v", ErrPinned, k, e.layout, l)
		case e.layout != l:
			// Every copy of the old layout is stale; this put starts afresh.
			s.dropCopies(sh, i, e.where)
			i = sh.findFP(k, fp)
		}
	}
	if err := s.dram.Seal(slot); err != nil {
		s.unlock(sh)
		_ = s.dram.Abort(slot)
		s.unlinkParent(p, linked)
		return err
	}
	if i == nilIdx {
		i = sh.addFP(k, fp)
		e := sh.at(i)
		e.parentFP, e.linked = p.fp, linked // p.fp is 0 without a parent
		linked = false                      // now owned by the entry
	}
	e := sh.at(i)
	e.layout = l
	e.dram, e.packed = refOf(slot), packed
	sh.setWhere(i, e.where|inDRAM)
	sh.touch(i, s.tick())
	persisted := e.where&inNVMe != 0
	s.unlock(sh)
	s.unlinkParent(p, linked)
	return s.afterCommit(ctx, k, opts, !persisted)
}

// afterCommit schedules or performs the NVMe copy.
func (s *Store) afterCommit(ctx context.Context, k Key, opts PutOptions, needPersist bool) error {
	if s.nvme == nil {
		return nil
	}
	if opts.Durable {
		return s.persistSync(ctx, k)
	}
	if !needPersist {
		return nil
	}
	select {
	case s.wbq <- k:
	case <-ctx.Done():
		// The block is stored; it will be demoted to NVMe when DRAM evicts
		// it, or flushed at Close.
	case <-s.done:
	}
	return nil
}

// parentRef names a block's parent by fingerprint, as its entry keeps it.
type parentRef struct {
	fp    uint64
	ns    string
	layer int16
}

// parentKey returns the key of k's parent block, if the put named one.
func parentKey(k Key, parent Hash) (Key, bool) {
	if parent.IsZero() {
		return Key{}, false
	}
	return Key{Namespace: k.Namespace, Hash: parent, Layer: k.Layer}, true
}

// fp returns k's index fingerprint.
func (s *Store) fp(k Key) uint64 { return fingerprint(s.seed, nsHash(s.seed, k.Namespace), k) }

// adjustChildren changes the children count of the parent p by delta and
// reports whether it is cached. Caller holds no shard lock. Parents are
// found by fingerprint (and namespace and layer): in the vanishingly rare
// case of two such blocks, the count of the first is adjusted; the count
// is a hint for eviction order, never a correctness matter.
func (s *Store) adjustChildren(p parentRef, delta int32) bool {
	sh := s.shards[shardIndex(p.fp, len(s.shards))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := sh.idx[p.fp]
	for ok && i != nilIdx {
		if e := sh.at(i); sh.names.name(e.id.ns) == p.ns && e.id.layer == p.layer {
			e.children += delta
			if e.children < 0 {
				e.children = 0 // the parent was deleted and re-added meanwhile
			}
			return true
		}
		i = sh.at(i).nextFP
	}
	return false
}

func (s *Store) parentRef(k Key, parent Hash) (parentRef, bool) {
	pk, ok := parentKey(k, parent)
	if !ok {
		return parentRef{}, false
	}
	return parentRef{fp: s.fp(pk), ns: k.Namespace, layer: k.Layer}, true
}

// unlinkParent undoes the count of a block as its parent p's child, when
// commit took it (linked) and no entry came to own it.
func (s *Store) unlinkParent(p parentRef, linked bool) {
	if linked {
		s.adjustChildren(p, -1)
	}
}

// unlock releases sh.mu, then applies the parent updates that dropCopies
// queued while it was held (a shard lock is never held while taking another).
func (s *Store) unlock(sh *shard) {
	var buf [8]parentRef
	n := copy(buf[:], sh.pending)
	if n > 0 {
		copy(sh.pending, sh.pending[n:])
		sh.pending = sh.pending[:len(sh.pending)-n]
	}
	sh.mu.Unlock()
	for _, pk := range buf[:n] {
		s.adjustChildren(pk, -1)
	}
}

// Get pins k and returns its bytes in place in DRAM, promoting the block from
// NVMe when DRAM lacks it. The caller must Release(k) when done with Data.
// A block that is not cached, or whose only copy fails its checksum (it is
// then removed and counted), is ErrNotFound.
func (s *Store) Get(ctx context.Context, k Key, opts GetOptions) (Block, error) {
	if err := s.checkOpen(); err != nil {
		return Block{}, err
	}
	if err := k.Validate(); err != nil {
		return Block{}, err
	}
	if opts.Promote == LevelHBM && s.hbm == nil {
		return Block{}, fmt.Errorf("%w: no HBM tier", ErrUnavailable)
	}
	k.Namespace = s.intern(k.Namespace, false)
	b, err := s.getDRAM(ctx, k)
	if err != nil {
		return Block{}, err
	}
	if opts.Promote == LevelHBM && b.From != LevelHBM {
		if err := s.promoteHBM(ctx, k, b); err != nil {
			_ = s.Release(k)
			return Block{}, err
		}
	}
	return b, nil
}

func (s *Store) getDRAM(ctx context.Context, k Key) (Block, error) {
	sh, fp := s.locate(k)
	sh.mu.Lock()
	i := sh.findFP(k, fp)
	if i == nilIdx {
		sh.ctr.misses++
		sh.mu.Unlock()
		return Block{}, fmt.Errorf("%w: %v", ErrNotFound, k)
	}
	e := sh.at(i)
	from := e.top()
	// Pin first, so that eviction leaves the block alone while it is read.
	sh.pinUser(i)
	l := e.layout
	if e.where&inDRAM != 0 {
		sh.touch(i, s.tick())
		sh.ctr.hits[from]++
		return s.readDRAM(ctx, sh, i, k, from)
	}
	// Only on NVMe: promote.
	sh.mu.Unlock()
	b, err := s.promoteDRAM(ctx, k, l)
	if errors.Is(err, ErrNotFound) {
		// The NVMe copy was unusable; a put may have landed a DRAM copy
		// while it was read. Serve that one.
		sh.mu.Lock()
		if i := sh.findFP(k, fp); i != nilIdx && sh.at(i).where&inDRAM != 0 {
			return s.readDRAM(ctx, sh, i, k, LevelDRAM)
		}
		sh.mu.Unlock()
	}
	if err != nil {
		s.unpin(k, true)
		return Block{}, err
	}
	return b, nil
}

// readDRAM returns entry i's DRAM copy to a reader that holds a pin on it,
// decoding it into a staging slot if DRAM keeps it compressed. Caller holds
// sh.mu; readDRAM releases it. On error the reader's pin is dropped.
func (s *Store) readDRAM(ctx context.Context, sh *shard, i int32, k Key, from Level) (Block, error) {
	e := sh.at(i)
	if !e.packed {
		b := s.dramBlock(k, e, from)
		sh.mu.Unlock()
		return b, nil
	}
	l := e.layout
	if st, ok := sh.staged[i]; ok {
		b := stagedBlock(k, l, st, s.dram, from)
		sh.mu.Unlock()
		return b, nil
	}
	frame := s.dram.Bytes(e.dram.slot()) // stays put while pinned
	sh.mu.Unlock()
	b, err := s.unpack(ctx, k, l, frame, from)
	if err != nil {
		s.unpin(k, true)
		return Block{}, err
	}
	return b, nil
}

// promoteDRAM reads k from NVMe into DRAM. k is pinned by the caller.
func (s *Store) promoteDRAM(ctx context.Context, k Key, l Layout) (Block, error) {
	var (
		p   promotion
		err error
	)
	if ft, ok := s.nvme.(FrameTier); ok && s.dramMode(k.Namespace) != codec.Raw {
		p, err = s.readFrame(ctx, ft, k, l)
	} else {
		p, err = s.readBlock(ctx, k, l)
	}
	if err != nil {
		return Block{}, err
	}
	return s.land(k, l, p)
}

// promotion is a block read from NVMe into DRAM, not yet in the index: its
// decoded bytes in the reserved slot raw, and, when packed, its frame in the
// reserved slot frame.
type promotion struct {
	raw    Slot
	view   []byte
	frame  Slot
	packed bool
}

func (p promotion) abort(d HostTier) {
	_ = d.Abort(p.raw)
	if p.packed {
		_ = d.Abort(p.frame)
	}
}

// readBlock reads k's decoded bytes from NVMe into a fresh DRAM slot, and
// packs them when k's namespace keeps DRAM compressed.
func (s *Store) readBlock(ctx context.Context, k Key, l Layout) (promotion, error) {
	slot, view, err := s.reserveDRAM(ctx, l.Size())
	if err != nil {
		return promotion{}, err
	}
	got, data, err := s.nvme.Get(ctx, k, view[:0])
	mismatch := err == nil && (got != l || len(data) != len(view) || (len(data) > 0 && &data[0] != &view[0]))
	if mismatch {
		err = fmt.Errorf("%w: NVMe copy of %v has layout %v, index says %v", ErrCorrupt, k, got, l)
	}
	if err != nil {
		_ = s.dram.Abort(slot)
		return promotion{}, s.nvmeReadFailed(k, err, mismatch)
	}
	p := promotion{raw: slot, view: view}
	if p.frame, p.packed, err = s.pack(ctx, k, l, view); err != nil {
		_ = s.dram.Abort(slot)
		return promotion{}, err
	}
	return p, nil
}

// readFrame reads k's frame from NVMe as it is and decodes it into a fresh
// DRAM slot; the frame itself is kept as the DRAM copy when it is in DRAM's
// mode and its slot is smaller, so a block's values do not drift through
// repeated encoding. A frame in another mode is packed in DRAM's mode.
func (s *Store) readFrame(ctx context.Context, ft FrameTier, k Key, l Layout) (promotion, error) {
	bp := frameBuf(0)
	defer frameBufs.Put(bp)
	got, frame, err := ft.GetFrame(ctx, k, (*bp)[:0])
	*bp = frame[:0]
	mismatch := err == nil && got != l
	if mismatch {
		err = fmt.Errorf("%w: NVMe copy of %v has layout %v, index says %v", ErrCorrupt, k, got, l)
	}
	if err != nil {
		return promotion{}, s.nvmeReadFailed(k, err, mismatch)
	}
	slot, view, err := s.reserveDRAM(ctx, l.Size())
	if err != nil {
		return promotion{}, err
	}
	if _, out, err := codec.Decode(view[:0], frame); err != nil || len(out) != len(view) || &out[0] != &view[0] {
		_ = s.dram.Abort(slot)
		if err == nil {
			err = fmt.Errorf("%w: frame of %v decodes to %d bytes", ErrCorrupt, k, len(out))
		}
		return promotion{}, s.nvmeReadFailed(k, fmt.Errorf("%w: %w", ErrCorrupt, err), true)
	}
	p := promotion{raw: slot, view: view}
	if m, ok := frameMode(frame); !ok || m != s.dramMode(k.Namespace) {
		// Another mode than DRAM's: DRAM's mode holds, so encode again.
		if p.frame, p.packed, err = s.pack(ctx, k, l, view); err != nil {
			_ = s.dram.Abort(slot)
			return promotion{}, err
		}
		return p, nil
	}
	if s.dram.SlotSize(int64(len(frame))) < s.dram.SlotSize(l.Size()) {
		fs, fview, err := s.reserveDRAM(ctx, int64(len(frame)))
		if err != nil {
			_ = s.dram.Abort(slot)
			return promotion{}, err
		}
		copy(fview, frame)
		p.frame, p.packed = fs, true
	}
	return p, nil
}

// nvmeReadFailed handles a failed read of k's NVMe copy: a missing or
// damaged copy is dropped from the index (counted as corrupt when the tier
// did not count it: mismatch) and reported as ErrNotFound.
func (s *Store) nvmeReadFailed(k Key, err error, mismatch bool) error {
	if !errors.Is(err, ErrNotFound) && !IsCorrupt(err) {
		return err
	}
	sh, fp := s.locate(k)
	sh.mu.Lock()
	if i := sh.findFP(k, fp); i != nilIdx {
		if mismatch {
			sh.ctr.corrupt++ // the tier counts the checksum failures it finds
		}
		if IsCorrupt(err) {
			s.log.Warn("tiers: corrupt NVMe copy removed", "key", k.String(), "err", err)
		}
		sh.ctr.misses++
		s.dropCopies(sh, i, inNVMe)
	}
	s.unlock(sh)
	return fmt.Errorf("%w: %v (NVMe copy unusable: %v)", ErrNotFound, k, err)
}

// land makes a promotion k's DRAM copy and returns the block: the frame,
// with the decoded bytes as this reader's staging slot, when packed; the
// decoded bytes otherwise. k is pinned by the caller.
func (s *Store) land(k Key, l Layout, p promotion) (Block, error) {
	sh, fp := s.locate(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i := sh.findFP(k, fp) // pinned, so still present
	e := sh.at(i)
	if e.where&inDRAM != 0 {
		// A concurrent Get or Put landed a DRAM copy first.
		if p.packed {
			_ = s.dram.Abort(p.frame)
		}
		if !e.packed {
			_ = s.dram.Abort(p.raw)
			return s.dramBlock(k, e, LevelNVMe), nil
		}
		return s.stage(sh, i, k, p.raw, LevelNVMe), nil
	}
	dst := p.raw
	if p.packed {
		dst = p.frame
	}
	if err := s.dram.Seal(dst); err != nil {
		p.abort(s.dram)
		return Block{}, err
	}
	e.dram, e.packed = refOf(dst), p.packed
	sh.setWhere(i, e.where|inDRAM)
	sh.touch(i, s.tick())
	sh.ctr.hits[LevelNVMe]++
	sh.ctr.promotions[LevelDRAM]++
	if p.packed {
		return s.stage(sh, i, k, p.raw, LevelNVMe), nil
	}
	return Block{Key: k, Layout: l, Data: p.view, Slot: p.raw, From: LevelNVMe}, nil
}

// dramBlock describes entry e's DRAM copy as a Block. Caller holds the
// shard lock and a pin on e.
func (s *Store) dramBlock(k Key, e *entry, from Level) Block {
	slot := e.dram.slot()
	return Block{Key: k, Layout: e.layout, Data: s.dram.Bytes(slot), Slot: slot, From: from}
}

// promoteHBM copies a pinned DRAM block into HBM, evicting HBM copies as needed.
func (s *Store) promoteHBM(ctx context.Context, k Key, b Block) error {
	for {
		err := s.hbm.Put(ctx, k, b.Layout, b.Data)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrFull) {
			return err
		}
		if err := s.makeRoom(ctx, listHBM); err != nil {
			return fmt.Errorf("%w: HBM tier is full of pinned blocks", err)
		}
	}
	sh, fp := s.locate(k)
	sh.mu.Lock()
	i := sh.findFP(k, fp)
	e := sh.at(i)
	sh.setWhere(i, e.where|inHBM)
	sh.pushFront(listHBM, i)
	sh.ctr.promotions[LevelHBM]++
	sh.mu.Unlock()
	return nil
}

// Release drops one pin that Get took on k.
func (s *Store) Release(k Key) error {
	if err := k.Validate(); err != nil {
		return err
	}
	return s.unpin(k, true)
}

func (s *Store) unpin(k Key, user bool) error {
	sh, fp := s.locate(k)
	sh.mu.Lock()
	defer s.unlock(sh)
	i := sh.findFP(k, fp)
	if i == nilIdx || (user && sh.at(i).userPins == 0) || sh.at(i).pins == 0 {
		return fmt.Errorf("%w: %v", ErrNotPinned, k)
	}
	e := sh.at(i)
	e.pins--
	if user {
		e.userPins--
		if e.userPins == 0 {
			sh.pinned--
			s.unstage(sh, i)
		}
	}
	if e.pins == 0 && e.where == 0 {
		s.dropCopies(sh, i, e.where)
	}
	return nil
}

// Delete removes every copy of k. Deleting a block that is not cached is
// not an error; deleting one a reader holds is ErrPinned. A block being
// copied to NVMe is deleted once the copy finishes.
func (s *Store) Delete(ctx context.Context, k Key) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if err := k.Validate(); err != nil {
		return err
	}
	sh, fp := s.locate(k)
	for {
		sh.mu.Lock()
		i := sh.findFP(k, fp)
		if i == nilIdx {
			sh.mu.Unlock()
			return nil
		}
		e := sh.at(i)
		if e.userPins > 0 {
			n := e.userPins
			sh.mu.Unlock()
			return fmt.Errorf("%w: %v has %d readers", ErrPinned, k, n)
		}
		if e.pins == 0 {
			s.dropCopies(sh, i, e.where)
			s.unlock(sh)
			return nil
		}
		// Only the store's own write-behind holds it; it lets go shortly.
		sh.mu.Unlock()
		if err := sleepCtx(ctx, busyWait); err != nil {
			return err
		}
	}
}

// dropCopies deletes the copies in bits from their tiers and, when no copy
// is left, the entry. Caller holds sh.mu; the deletes happen under it so a
// concurrent put of the same key cannot be undone by a late delete.
func (s *Store) dropCopies(sh *shard, i int32, bits uint8) {
	e := sh.at(i)
	k := sh.key(i)
	ctx := context.Background()
	if bits&inHBM != 0 && e.where&inHBM != 0 {
		if err := s.hbm.Delete(ctx, k); err != nil {
			s.log.Warn("tiers: deleting HBM copy", "key", k.String(), "err", err)
		}
		sh.setWhere(i, e.where&^inHBM)
		sh.unlink(listHBM, i)
	}
	if bits&inDRAM != 0 && e.where&inDRAM != 0 {
		if err := s.dram.Free(e.dram.slot()); err != nil {
			s.log.Warn("tiers: freeing DRAM copy", "key", k.String(), "err", err)
		}
		e.dram, e.packed = slotRef{}, false
		sh.setWhere(i, e.where&^inDRAM)
		sh.unlink(listDRAM, i)
	}
	if bits&inNVMe != 0 && e.where&inNVMe != 0 {
		if err := s.nvme.Delete(ctx, k); err != nil {
			s.log.Warn("tiers: deleting NVMe copy", "key", k.String(), "err", err)
		}
		sh.setWhere(i, e.where&^inNVMe)
		sh.unlink(listNVMe, i)
	}
	if e.where == 0 && e.pins == 0 {
		if e.linked {
			// The parent may live in this very shard, whose lock we hold:
			// the caller adjusts it in unlock.
			sh.pending = append(sh.pending, parentRef{fp: e.parentFP, ns: k.Namespace, layer: k.Layer})
		}
		sh.drop(i)
	}
}
