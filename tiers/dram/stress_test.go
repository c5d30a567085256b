package dram

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kvtier/kvtier/tiers"
)

// TestConcurrentStress runs goroutines that put, get, view, delete, reserve,
// commit and abort over shared and private keys in an arena small enough to
// fill, verifying every block's bytes. Run it with -race.
func TestConcurrentStress(t *testing.T) {
	const (
		chunk      = 64 * KiB
		workers    = 8
		sharedKeys = 48
		ownKeys    = 4
	)
	ops := 1500
	if testing.Short() || raceEnabled {
		ops = 500
	}
	a := newArena(t, 96*chunk, WithChunkSize(chunk))
	sizes := []int64{4 * KiB, 8 * KiB, 20 * KiB, 64 * KiB, 100 * KiB, 136 * KiB, 600 * KiB}
	layouts := make([]tiers.Layout, len(sizes))
	for i, n := range sizes {
		layouts[i] = layoutFor(t, n)
	}
	shared := make([]tiers.Key, sharedKeys)
	for i := range shared {
		shared[i] = testKey("shared", i, int16(i%4)-1)
	}
	var wg sync.WaitGroup
	var puts, fulls atomic.Int64
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			errs <- stressWorker(a, w, ops, shared, ownKeys, sizes, layouts, &puts, &fulls)
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d puts, %d gave up on ErrFull", puts.Load(), fulls.Load())
	if fulls.Load() > puts.Load()/4 {
		t.Fatalf("%d of %d puts found no room: the arena does not free space", fulls.Load(), puts.Load())
	}
	checkInvariants(t, a)
	for _, k := range shared {
		if err := a.Delete(bg, k); err != nil {
			t.Fatal(err)
		}
	}
	for w := 0; w < workers; w++ {
		for i := 0; i < ownKeys; i++ {
			if err := a.Delete(bg, testKey(fmt.Sprintf("own-%d", w), i, 0)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if st := a.Stats(); st.UsedBytes != 0 || st.ReservedBytes != 0 || st.Blocks != 0 || a.nFreeChunks != a.nChunks {
		t.Fatalf("after deleting everything: %+v, %d of %d chunks free", st, a.nFreeChunks, a.nChunks)
	}
	checkInvariants(t, a)
}

func stressWorker(a *keyed, w, ops int, shared []tiers.Key, ownKeys int, sizes []int64, layouts []tiers.Layout, puts, fulls *atomic.Int64) error {
	rng := rand.New(rand.NewPCG(uint64(w), 99))
	buf := make([]byte, 0, sizes[len(sizes)-1])
	data := make([]byte, sizes[len(sizes)-1])
	own := make([]tiers.Key, ownKeys)
	ownSeed := make([]uint64, ownKeys) // 0: absent
	for i := range own {
		own[i] = testKey(fmt.Sprintf("own-%d", w), i, 0)
	}
	seq := uint64(w) << 32
	// put writes a fresh block under k; ErrFull makes room by deleting.
	put := func(k tiers.Key) (uint64, error) {
		si := rng.IntN(len(sizes) - 1)
		if rng.IntN(16) == 0 { // the largest size (a dedicated run) is rare
			si = len(sizes) - 1
		}
		seq++
		d := data[:sizes[si]]
		fill(d, seq)
		for try := 0; ; try++ {
			var err error
			if rng.IntN(2) == 0 {
				err = a.Put(bg, k, layouts[si], d)
			} else {
				var s tiers.Slot
				var view []byte
				if s, view, err = a.Reserve(layouts[si]); err == nil {
					copy(view, d)
					err = a.Commit(k, layouts[si], s)
				}
			}
			if err == nil {
				puts.Add(1)
				return seq, nil
			}
			if !errors.Is(err, tiers.ErrFull) {
				return 0, fmt.Errorf("worker %d: put %v (%d bytes): %w", w, k, len(d), err)
			}
			if try == 20 {
				fulls.Add(1)
				// Other workers' blocks and reservations (or spans of other
				// classes) hold the room: a real store would evict more.
				return 0, err
			}
			_ = a.Delete(bg, shared[rng.IntN(len(shared))])
		}
	}
	for op := 0; op < ops; op++ {
		switch r := rng.IntN(100); {
		case r < 30: // put a shared key
			if _, err := put(shared[rng.IntN(len(shared))]); err != nil && !errors.Is(err, tiers.ErrFull) {
				return err
			}
		case r < 60: // get a shared key: whatever is there must be one whole block
			_, got, err := a.Get(bg, shared[rng.IntN(len(shared))], buf[:0])
			if errors.Is(err, tiers.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if _, err := check(got); err != nil {
				return fmt.Errorf("worker %d: torn or wrong shared block: %w", w, err)
			}
		case r < 70:
			if err := a.Delete(bg, shared[rng.IntN(len(shared))]); err != nil {
				return err
			}
		case r < 85: // own keys: put, then view in place (nobody else deletes them)
			i := rng.IntN(ownKeys)
			seed, err := put(own[i])
			if errors.Is(err, tiers.ErrFull) {
				continue // the old copy, if any, is still there
			}
			if err != nil {
				return err
			}
			ownSeed[i] = seed
			_, slot, view, err := a.View(own[i])
			if err != nil {
				return err
			}
			if got, err := check(view); err != nil || got != seed {
				return fmt.Errorf("worker %d: own block seed %d, want %d: %v", w, got, seed, err)
			}
			if !a.Validate(slot) || !bytes.Equal(a.Base()[slot.Offset:slot.Offset+slot.Len], view) {
				return fmt.Errorf("worker %d: own slot %+v not valid", w, slot)
			}
		case r < 92:
			i := rng.IntN(ownKeys)
			_, got, err := a.Get(bg, own[i], buf[:0])
			switch {
			case ownSeed[i] == 0 && !errors.Is(err, tiers.ErrNotFound):
				return fmt.Errorf("worker %d: deleted own key: %v", w, err)
			case ownSeed[i] != 0:
				if seed, cerr := check(got); err != nil || cerr != nil || seed != ownSeed[i] {
					return fmt.Errorf("worker %d: own key seed %d want %d: %v %v", w, seed, ownSeed[i], err, cerr)
				}
			}
			if rng.IntN(2) == 0 {
				if err := a.Delete(bg, own[i]); err != nil {
					return err
				}
				ownSeed[i] = 0
			}
		default: // a reservation that is abandoned, and stale slots that must be refused
			si := rng.IntN(len(sizes))
			s, view, err := a.Reserve(layouts[si])
			if errors.Is(err, tiers.ErrFull) {
				continue
			}
			if err != nil {
				return err
			}
			fill(view, 1)
			if err := a.Abort(s); err != nil {
				return fmt.Errorf("worker %d: abort: %w", w, err)
			}
			if err := a.Abort(s); !errors.Is(err, ErrNotReserved) {
				return fmt.Errorf("worker %d: second abort: %v", w, err)
			}
			if err := a.Commit(shared[0], layouts[si], s); !errors.Is(err, ErrNotReserved) {
				return fmt.Errorf("worker %d: commit after abort: %v", w, err)
			}
		}
	}
	return nil
}

// TestCloseConcurrent closes the arena under running puts and gets: they
// finish or fail with ErrClosed, and nothing touches the unmapped arena.
func TestCloseConcurrent(t *testing.T) {
	arena, err := New(8 * MiB)
	if err != nil {
		t.Fatal(err)
	}
	a := keyedOf(arena)
	const n = 256 * KiB
	l := layoutFor(t, n)
	var wg sync.WaitGroup
	started := make(chan struct{}, 4)
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			data := make([]byte, n)
			buf := make([]byte, 0, n)
			k := testKey("closing", w, 0)
			for i := 0; ; i++ {
				if i == 10 {
					started <- struct{}{}
				}
				err := a.Put(bg, k, l, data)
				if err == nil {
					_, _, err = a.Get(bg, k, buf[:0])
				}
				if errors.Is(err, tiers.ErrClosed) {
					errs <- nil
					return
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	for range 4 {
		<-started
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
