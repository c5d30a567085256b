package nvme

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Value-log garbage collection.
//
// Badger keeps frames in its value log; deleting or replacing a block only
// writes a tombstone into the LSM tree. A value log file can be rewritten
// (its live frames copied forward, the file deleted) only once Badger knows
// how much of it is garbage, and it learns that from compactions that bring
// a tombstone together with the value pointer it shadows. With our tiny LSM
// entries (a key, a value pointer, an 18-byte meta) memtables fill and
// compactions run rarely, so waiting for them would leave gigabytes of dead
// frames on disk. A collection therefore:
//
//  1. flushes the memtables to level 0 (Badger has no flush call:
//     store.flush writes and drops a sentinel prefix, which flushes; writers
//     wait on the tier's gate meanwhile) and
//  2. flattens the LSM tree into one level, so every tombstone has met its
//     value and the discard statistics are complete, then
//  3. calls RunValueLogGC(discardRatio) until it stops finding a file with
//     at least that share of garbage (ErrNoRewrite), the context ends, or
//     maxGCRounds files were rewritten. Writers wait on the gate while each
//     file is rewritten (a Badger data race: see the loop below), not between
//     files.
//
// Measured (TestGCReclaimsSpace, 1 MiB value log files, 90% of 12 MiB
// deleted): without step 1 neither Flatten nor RunValueLogGC reclaims
// anything (12.4 MiB stays); with steps 1-3 the directory drops to 1.0 MiB.
//
// Steps 1 and 2 run only when frames were deleted or replaced since the
// last collection; they rewrite the LSM tree, which is small (about 100
// bytes per block). A collection starts on a timer (WithGCInterval) and as
// soon as WithGCAfterBytes of frames became garbage. Between collections
// the directory can hold up to about capacity/(1-discardRatio) bytes of
// value log, plus the garbage of one trigger period.
const maxGCRounds = 1 << 10

// CollectGarbage runs one collection now (see above) and returns when it is
// done. The background goroutine calls it; tests and tools may too.
func (t *Tier) CollectGarbage(ctx context.Context) error {
	if err := t.enter(); err != nil {
		return err
	}
	defer t.opsMu.RUnlock()
	if t.poisoned.Load() {
		return fmt.Errorf("%w: value log GC stopped after a fault in the storage engine", ErrStore)
	}
	t.gcMu.Lock()
	defer t.gcMu.Unlock()

	if err := t.space.gcRoom(t.cfg); err != nil {
		return err
	}
	if g := t.garbage.Swap(0); g > 0 {
		t.gate.Lock()
		err := t.st.flush()
		t.gate.Unlock()
		if err == nil {
			err = t.st.flatten()
		}
		if err != nil {
			t.garbage.Add(g)
			if errors.Is(err, errFault) {
				t.poison(err)
			}
			return err
		}
	}
	for range maxGCRounds {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := t.space.gcRoom(t.cfg); err != nil {
			return err
		}
		// Writers wait while a file is rewritten: Badger 4.9.6's rewrite
		// reads the active memtable's max version (DB.MaxVersion) without
		// the synchronisation its writer uses, a data race (flagged by -race)
		// with any concurrent commit. The gate is released between files.
		t.gate.Lock()
		rewrote, err := t.st.gcOnce(t.cfg.discardRatio)
		t.gate.Unlock()
		if err != nil {
			if errors.Is(err, errFault) {
				t.poison(err)
			}
			return err
		}
		if !rewrote {
			break
		}
	}
	t.gcRuns.Add(1)
	t.refreshUsage()
	return nil
}

// addGarbage records n frame bytes deleted or replaced and wakes the GC
// goroutine once enough accumulated.
func (t *Tier) addGarbage(n int64) {
	if n <= 0 {
		return
	}
	g := t.garbage.Add(n)
	if t.cfg.gcAfterBytes > 0 && g >= t.cfg.gcAfterBytes {
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
}

// gcLoop is the GC goroutine: it owns nothing but its tickers and runs
// CollectGarbage on the timer and on kicks until Close cancels gcCtx; for a
// store opened read-only it also tries to reopen it for writing.
func (t *Tier) gcLoop() {
	defer close(t.gcDone)
	var tick, retry <-chan time.Time
	if t.cfg.gcInterval > 0 {
		tk := time.NewTicker(t.cfg.gcInterval)
		defer tk.Stop()
		tick = tk.C
	}
	if t.space.readOnly.Load() {
		rt := time.NewTicker(t.cfg.spaceRetry)
		defer rt.Stop()
		retry = rt.C
	}
	for {
		select {
		case <-t.gcCtx.Done():
			return
		case <-retry:
			t.reopenWritable()
			if !t.space.readOnly.Load() {
				retry = nil
			}
			continue
		case <-tick:
		case <-t.kick:
		}
		err := t.CollectGarbage(t.gcCtx)
		if err != nil && !errors.Is(err, context.Canceled) && t.cfg.logger != nil {
			t.cfg.logger.LogAttrs(context.Background(), slog.LevelWarn, "nvme: value log GC failed",
				slog.String("dir", t.dir), slog.Any("err", err))
		}
	}
}
