package tiers

import (
	"context"
	"fmt"
	"sync"

	"github.com/kvtier/kvtier/codec"
)

// Compressed DRAM (Codecs.DRAM). A packed block's DRAM slot holds its
// codec frame. A Get decodes the frame into a staging slot: a DRAM
// reservation, never sealed (so the arena counts it as reserved room, not
// as a block), recorded in shard.staged while the block has readers, shared
// by all of them, and aborted when the last one releases it.

// frameBufs holds scratch buffers for encoding frames; *[]byte.
var frameBufs sync.Pool

// frameBuf returns a pooled scratch buffer of at least n bytes' capacity;
// put it back in frameBufs when done.
func frameBuf(n int) *[]byte {
	bp, _ := frameBufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	if cap(*bp) < n {
		*bp = make([]byte, 0, n)
	}
	return bp
}

// codecs returns ns's codec policy.
func (s *Store) codecs(ns string) Codecs {
	if s.cfg.Codecs == nil {
		return DefaultCodecs
	}
	return s.cfg.Codecs(ns)
}

// dramMode returns the codec mode DRAM keeps ns's blocks in.
func (s *Store) dramMode(ns string) codec.Mode { return s.codecs(ns).DRAM }

// frameMode returns the mode frame was encoded in, or false when its header
// cannot be read.
func frameMode(frame []byte) (codec.Mode, bool) {
	h, err := codec.ParseHeader(frame)
	return h.Mode, err == nil
}

// pack encodes raw, a block of layout l, in the DRAM mode of k's namespace
// into a fresh DRAM slot the size of the frame, and reports whether it did.
// It does not when the namespace keeps blocks raw, when the frame's slot
// would not be smaller than the block's, or when the block cannot be encoded
// (it is then kept raw, and logged).
func (s *Store) pack(ctx context.Context, k Key, l Layout, raw []byte) (Slot, bool, error) {
	m := s.dramMode(k.Namespace)
	if m == codec.Raw {
		return Slot{}, false, nil
	}
	bp := frameBuf(codec.MaxFrameLen(l, m))
	defer frameBufs.Put(bp)
	frame, err := codec.Encode((*bp)[:0], l, raw, codec.Options{Mode: m})
	if err != nil {
		s.log.Debug("tiers: block kept raw in DRAM: cannot encode", "key", k.String(), "mode", m.String(), "err", err)
		return Slot{}, false, nil
	}
	if s.dram.SlotSize(int64(len(frame))) >= s.dram.SlotSize(int64(len(raw))) {
		return Slot{}, false, nil // it would save no room: spare the decodes
	}
	slot, view, err := s.reserveDRAM(ctx, int64(len(frame)))
	if err != nil {
		return Slot{}, false, err
	}
	copy(view, frame)
	return slot, true, nil
}

// unpack decodes a packed block's frame into a staging slot and returns the
// block. The caller holds a reader's pin on k, which keeps the frame in place.
func (s *Store) unpack(ctx context.Context, k Key, l Layout, frame []byte, from Level) (Block, error) {
	slot, view, err := s.reserveDRAM(ctx, l.Size())
	if err != nil {
		return Block{}, err
	}
	got, out, err := codec.Decode(view[:0], frame)
	if err == nil && (got != l || len(out) != len(view) || &out[0] != &view[0]) {
		err = fmt.Errorf("%w: frame holds layout %v, %d bytes", codec.ErrCorrupt, got, len(out))
	}
	sh, fp := s.locate(k)
	sh.mu.Lock()
	defer s.unlock(sh)
	i := sh.findFP(k, fp) // pinned, so still present
	if err != nil {
		// DRAM is trusted memory, so this is a bug or a stray write: drop
		// the copy, never serve it.
		_ = s.dram.Abort(slot)
		s.log.Error("tiers: compressed DRAM copy fails to decode; removed", "key", k.String(), "err", err)
		sh.ctr.corrupt++
		sh.ctr.misses++
		if sh.at(i).pins == 1 { // no other reader or I/O holds it
			s.dropCopies(sh, i, inDRAM|inHBM)
		}
		return Block{}, fmt.Errorf("%w: %v (DRAM copy unusable: %v)", ErrNotFound, k, err)
	}
	return s.stage(sh, i, k, slot, from), nil
}

// stage makes the reserved slot raw, which holds entry i's decoded bytes,
// the entry's staging slot and returns the block read from it; when another
// reader staged the entry first, raw is aborted and theirs is shared.
// Caller holds sh.mu and a reader's pin on i.
func (s *Store) stage(sh *shard, i int32, k Key, raw Slot, from Level) Block {
	l := sh.at(i).layout
	if st, ok := sh.staged[i]; ok {
		_ = s.dram.Abort(raw)
		return stagedBlock(k, l, st, s.dram, from)
	}
	r := refOf(raw)
	if sh.staged == nil {
		sh.staged = make(map[int32]slotRef)
	}
	sh.staged[i] = r
	return stagedBlock(k, l, r, s.dram, from)
}

// stagedBlock describes a staging slot as a Block.
func stagedBlock(k Key, l Layout, r slotRef, dram HostTier, from Level) Block {
	slot := r.slot()
	return Block{Key: k, Layout: l, Data: dram.Bytes(slot), Slot: slot, From: from}
}

// unstage frees entry i's staging slot, if it has one. Caller holds sh.mu;
// the entry has no reader left.
func (s *Store) unstage(sh *shard, i int32) {
	if r, ok := sh.staged[i]; ok {
		delete(sh.staged, i)
		if err := s.dram.Abort(r.slot()); err != nil {
			s.log.Warn("tiers: freeing a staging slot", "key", sh.key(i).String(), "err", err)
		}
	}
}

// decodeScratch decodes a packed DRAM copy into a pooled scratch buffer, for
// a tier that takes raw blocks; call put when done with data.
func decodeScratch(frame []byte, l Layout) (data []byte, put func(), err error) {
	bp := frameBuf(int(l.Size()))
	_, data, err = codec.Decode((*bp)[:0], frame)
	return data, func() { frameBufs.Put(bp) }, err
}
