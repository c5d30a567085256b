package nvme

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
)

// selfBlock builds a block whose first 16 bytes say which key and version
// it is and whose rest derives from them, so a reader can check it.
func selfBlock(id, ver int) (codec.Layout, []byte) {
	l := testLayout(uint32(1 + (id+ver)%12))
	d := block(l, uint64(id)<<32|uint64(ver))
	binary.LittleEndian.PutUint64(d[0:], uint64(id))
	binary.LittleEndian.PutUint64(d[8:], uint64(ver))
	return l, d
}

func checkSelfBlock(l codec.Layout, d []byte, id int) error {
	if len(d) < 16 {
		return fmt.Errorf("block of %d bytes", len(d))
	}
	gotID, ver := int(binary.LittleEndian.Uint64(d)), int(binary.LittleEndian.Uint64(d[8:]))
	if gotID != id {
		return fmt.Errorf("block of key %d served for key %d", gotID, id)
	}
	wl, want := selfBlock(id, ver)
	if l != wl || string(d) != string(want) {
		return fmt.Errorf("key %d version %d: block differs from what was put", id, ver)
	}
	return nil
}

func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	const keys = 48
	// Room for about half the keys at their average size.
	capacity := int64(keys/2) * frameLen(testLayout(7))
	dir := t.TempDir()
	f := &faultStore{}
	tr := openTest(t, dir, capacity, withFaults(f), WithGCAfterBytes(64<<10))
	key := func(id int) tiers.Key { return testKey("conc", id) }

	var (
		wg     sync.WaitGroup
		errMu  sync.Mutex
		errs   []error
		stop   = make(chan struct{})
		ops    = 250
		puts   sync.Map
		report = func(err error) {
			errMu.Lock()
			errs = append(errs, err)
			errMu.Unlock()
		}
	)
	worker := func(seed uint64, fn func(r *rand.Rand, i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 1))
			for i := 0; i < ops; i++ {
				fn(r, i)
			}
		}()
	}
	for w := range 4 {
		worker(uint64(w), func(r *rand.Rand, i int) {
			id := r.IntN(keys)
			l, d := selfBlock(id, w<<20|i)
			err := tr.Put(ctx, key(id), l, d)
			switch {
			case err == nil:
				puts.Store(id, true)
			case errors.Is(err, tiers.ErrFull):
				// Make room as the Store does: delete another block.
				if err := tr.Delete(ctx, key(r.IntN(keys))); err != nil {
					report(fmt.Errorf("Delete: %w", err))
				}
			default:
				report(fmt.Errorf("Put: %w", err))
			}
		})
	}
	for w := range 3 {
		worker(uint64(10+w), func(r *rand.Rand, _ int) {
			id := r.IntN(keys)
			buf := make([]byte, 0, 8<<10)
			l, d, err := tr.Get(ctx, key(id), buf)
			switch {
			case err == nil:
				if err := checkSelfBlock(l, d, id); err != nil {
					report(err)
				}
			case errors.Is(err, tiers.ErrNotFound):
			default:
				report(fmt.Errorf("Get: %w", err))
			}
		})
	}
	worker(20, func(r *rand.Rand, _ int) {
		if err := tr.Delete(ctx, key(r.IntN(keys))); err != nil {
			report(fmt.Errorf("Delete: %w", err))
		}
	})
	worker(21, func(r *rand.Rand, i int) {
		if s := tr.Stats(); s.UsedBytes > s.CapacityBytes {
			report(fmt.Errorf("used %d > capacity %d", s.UsedBytes, s.CapacityBytes))
		}
	})
	// Background: collections, scans and syncs while the others run.
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if err := tr.CollectGarbage(ctx); err != nil {
				report(fmt.Errorf("CollectGarbage: %w", err))
			}
			if err := tr.Sync(); err != nil {
				report(fmt.Errorf("Sync: %w", err))
			}
			err := tr.Scan(ctx, func(k tiers.Key, l tiers.Layout, size int64) error {
				if size != frameLen(l) {
					return fmt.Errorf("scan: %v size %d for %v", k, size, l)
				}
				return nil
			})
			if err != nil {
				report(err)
			}
		}
	}()
	wg.Wait()
	close(stop)
	bg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	// The index, Badger and the data agree.
	check := func(tr *Tier) {
		t.Helper()
		var n, used int64
		err := tr.Scan(ctx, func(k tiers.Key, l tiers.Layout, size int64) error {
			n++
			used += size
			id := int(k.Hash.EventID()) // testKey puts the id in the hash's last 8 bytes
			gl, d, err := tr.Get(ctx, k, nil)
			if err != nil {
				return err
			}
			if gl != l {
				return fmt.Errorf("%v: scan layout %v, get layout %v", k, l, gl)
			}
			return checkSelfBlock(gl, d, id)
		})
		if err != nil {
			t.Fatal(err)
		}
		s := tr.Stats()
		if s.Blocks != n || s.UsedBytes != used || s.UsedBytes > s.CapacityBytes || s.Corrupt != 0 {
			t.Fatalf("stats %+v; scan found %d blocks, %d bytes", s, n, used)
		}
	}
	check(tr)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	check(openTest(t, dir, capacity))
}
