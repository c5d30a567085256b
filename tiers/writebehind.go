package tiers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/kvtier/kvtier/codec"
)

// writeBehind copies queued DRAM blocks to NVMe until Close. A fixed pool of
// these goroutines serves the whole store; none is started per block.
func (s *Store) writeBehind() {
	defer s.wbWG.Done()
	ctx := context.Background()
	for {
		select {
		case k := <-s.wbq:
			s.persistLogged(ctx, k)
		case <-s.done:
			for {
				select {
				case k := <-s.wbq:
					s.persistLogged(ctx, k)
				default:
					return
				}
			}
		}
	}
}

func (s *Store) persistLogged(ctx context.Context, k Key) {
	if err := s.persist(ctx, k); err != nil {
		lv := slog.LevelWarn
		if errors.Is(err, ErrNoSpace) {
			lv = slog.LevelDebug // the NVMe tier logs running out of space once
		}
		s.log.Log(ctx, lv, "tiers: write-behind to NVMe failed; the block stays in DRAM only", "key", k.String(), "err", err)
	}
}

// persistSync persists k and waits until NVMe has it on stable storage.
func (s *Store) persistSync(ctx context.Context, k Key) error {
	if err := s.persist(ctx, k); err != nil {
		return err
	}
	if sy, ok := s.nvme.(Syncer); ok {
		if err := sy.Sync(); err != nil {
			return fmt.Errorf("tiers: syncing NVMe: %w", err)
		}
	}
	return nil
}

// persist copies k's DRAM copy to NVMe if NVMe lacks it. The block holds an
// I/O pin meanwhile, so its DRAM slot cannot be freed under the copy. Only
// one persist of a block runs at a time; a second caller waits for it.
func (s *Store) persist(ctx context.Context, k Key) error {
	sh, fp := s.locate(k)
	var i int32
	for {
		sh.mu.Lock()
		i = sh.findFP(k, fp)
		if i == nilIdx {
			sh.mu.Unlock()
			return nil // deleted or evicted before its turn
		}
		e := sh.at(i)
		if e.where&inDRAM == 0 || e.where&inNVMe != 0 {
			sh.mu.Unlock()
			return nil
		}
		if !e.saving {
			break // with sh.mu held
		}
		sh.mu.Unlock()
		if err := sleepCtx(ctx, busyWait); err != nil {
			return err
		}
	}
	e := sh.at(i)
	l, view, packed := e.layout, s.dram.Bytes(e.dram.slot()), e.packed
	e.pins++
	e.saving = true
	sh.mu.Unlock()

	err := s.putNVMe(ctx, k, l, view, packed)

	sh.mu.Lock()
	i = sh.findFP(k, fp)
	e = sh.at(i)
	e.pins--
	e.saving = false
	if err == nil {
		sh.setWhere(i, e.where|inNVMe)
		sh.pushFront(listNVMe, i)
		sh.ctr.demotions++
	}
	if e.pins == 0 && e.where == 0 {
		s.dropCopies(sh, i, e.where)
	}
	s.unlock(sh)
	return err
}

// putNVMe writes a block to NVMe, evicting NVMe copies until it fits. When
// packed, data is the block's frame. A FrameTier gets a frame in the
// namespace's NVMe mode: a packed block's own frame when it is in that mode,
// else one encoded here. Any other tier gets the raw block.
func (s *Store) putNVMe(ctx context.Context, k Key, l Layout, data []byte, packed bool) error {
	ft, frames := s.nvme.(FrameTier)
	want := s.codecs(k.Namespace).NVMe
	var put func() error
	if m, ok := frameMode(data); packed && frames && ok && m == want {
		put = func() error { return ft.PutFrame(ctx, k, data) }
	} else {
		raw := data
		if packed {
			dec, done, err := decodeScratch(data, l)
			defer done()
			if err != nil {
				return fmt.Errorf("%w: compressed DRAM copy of %v: %w", ErrCorrupt, k, err)
			}
			raw = dec
		}
		put = func() error { return s.nvme.Put(ctx, k, l, raw) }
		if frames {
			bp := frameBuf(codec.MaxFrameLen(l, want))
			defer frameBufs.Put(bp)
			frame, err := codec.Encode((*bp)[:0], l, raw, codec.Options{Mode: want})
			if err != nil {
				return fmt.Errorf("%w: encode %v for NVMe: %w", ErrInvalid, k, err)
			}
			*bp = frame[:0]
			put = func() error { return ft.PutFrame(ctx, k, frame) }
		}
	}
	for {
		err := put()
		if err == nil || !errors.Is(err, ErrFull) || errors.Is(err, ErrExhausted) {
			return err // ErrExhausted: larger than the tier; no eviction helps
		}
		if err := s.makeRoom(ctx, listNVMe); err != nil {
			return fmt.Errorf("%w: NVMe tier cannot make room for %v", err, k)
		}
	}
}
