package dram

import (
	"errors"
	"sync"
	"testing"

	"github.com/kvtier/kvtier/tiers"
)

// TestSlotLifecycle walks sealed slots through Alloc → Seal → Free and
// checks the accounting and the bytes at each step.
func TestSlotLifecycle(t *testing.T) {
	a := newArena(t, 8<<20, WithChunkSize(1<<20))
	sizes := []int64{1, 4096, 5000, 64 << 10, 3 << 20}
	var slots []tiers.Slot
	var used int64
	for i, n := range sizes {
		s, view, err := a.Alloc(n)
		if err != nil {
			t.Fatalf("Alloc(%d): %v", n, err)
		}
		if int64(len(view)) != n || s.Len != n || !a.Validate(s) {
			t.Fatalf("Alloc(%d): view %d bytes, slot %+v, valid %v", n, len(view), s, a.Validate(s))
		}
		for j := range view {
			view[j] = byte(i + j)
		}
		if st := a.Stats(); st.Blocks != int64(i) || st.UsedBytes != used {
			t.Fatalf("a reservation is not a block: %+v", st)
		}
		if err := a.Seal(s); err != nil {
			t.Fatalf("Seal: %v", err)
		}
		used += n
		if st := a.Stats(); st.Blocks != int64(i+1) || st.UsedBytes != used {
			t.Fatalf("after sealing %d blocks: %+v, want %d used", i+1, st, used)
		}
		slots = append(slots, s)
	}
	for i, s := range slots {
		b := a.Bytes(s)
		for j := range b {
			if b[j] != byte(i+j) {
				t.Fatalf("slot %d byte %d = %d, want %d", i, j, b[j], byte(i+j))
			}
		}
	}
	for i, s := range slots {
		if err := a.Free(s); err != nil {
			t.Fatalf("Free: %v", err)
		}
		if a.Validate(s) {
			t.Fatalf("freed slot %+v still valid", s)
		}
		used -= s.Len
		if st := a.Stats(); st.Blocks != int64(len(slots)-i-1) || st.UsedBytes != used {
			t.Fatalf("after freeing %d: %+v", i+1, st)
		}
	}
	if st := a.Stats(); st.ReservedBytes != 0 {
		t.Fatalf("empty arena reserves %d bytes", st.ReservedBytes)
	}
}

// TestSlotStateErrors: every call on a slot in the wrong state fails with
// its sentinel and changes nothing.
func TestSlotStateErrors(t *testing.T) {
	a := newArena(t, 4<<20, WithChunkSize(1<<20)).Arena // the slot API alone
	reserved, _, err := a.Alloc(4096)
	if err != nil {
		t.Fatal(err)
	}
	sealed, _, err := a.Alloc(4096)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Seal(sealed); err != nil {
		t.Fatal(err)
	}
	stale := sealed
	stale.Gen++
	cases := []struct {
		name string
		call func() error
		want error
	}{
		{"alloc zero", func() error { _, _, err := a.Alloc(0); return err }, tiers.ErrInvalid},
		{"alloc negative", func() error { _, _, err := a.Alloc(-1); return err }, tiers.ErrInvalid},
		{"alloc too large", func() error { _, _, err := a.Alloc(8 << 20); return err }, ErrTooLarge},
		{"seal twice", func() error { return a.Seal(sealed) }, ErrNotReserved},
		{"seal stale gen", func() error { return a.Seal(stale) }, ErrNotReserved},
		{"seal longer than slot", func() error { s := reserved; s.Len = 8192; return a.Seal(s) }, tiers.ErrInvalid},
		{"free reservation", func() error { return a.Free(reserved) }, ErrNotSealed},
		{"free stale gen", func() error { return a.Free(stale) }, ErrNotSealed},
		{"free misaligned", func() error { return a.Free(tiers.Slot{Offset: 100, Len: 1, Gen: 1}) }, ErrNotSealed},
		{"abort sealed", func() error { return a.Abort(sealed) }, ErrNotReserved},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := a.Stats()
			if err := c.call(); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if after := a.Stats(); after != before {
				t.Fatalf("a failed call changed the accounting: %+v → %+v", before, after)
			}
		})
	}
	if !a.Validate(sealed) || a.Validate(stale) {
		t.Fatal("Validate: the sealed slot must be live, its stale generation not")
	}
	if a.Bytes(tiers.Slot{Offset: a.Size(), Len: 1}) != nil || a.Bytes(tiers.Slot{Offset: -1, Len: 1}) != nil {
		t.Fatal("Bytes of a slot outside the mapping must be nil")
	}
	if err := a.Free(sealed); err != nil {
		t.Fatal(err)
	}
	if err := a.Abort(reserved); err != nil {
		t.Fatal(err)
	}
	if st := a.Stats(); st.Blocks != 0 || st.UsedBytes != 0 || st.ReservedBytes != 0 {
		t.Fatalf("arena not empty: %+v", st)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Alloc(1); !errors.Is(err, tiers.ErrClosed) {
		t.Fatalf("Alloc after Close: %v", err)
	}
}

// TestSlotsConcurrent fills and frees sealed slots from several goroutines
// and checks that no slot is handed out twice and no bytes are crossed.
func TestSlotsConcurrent(t *testing.T) {
	a := newArena(t, 16<<20, WithChunkSize(1<<20))
	const workers, rounds = 4, 300
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var held []tiers.Slot
			for r := range rounds {
				n := int64(4096 * (1 + (w+r)%9))
				s, view, err := a.Alloc(n)
				if err != nil {
					errs <- err
					return
				}
				view[0], view[len(view)-1] = byte(w), byte(r)
				if err := a.Seal(s); err != nil {
					errs <- err
					return
				}
				held = append(held, s)
				if len(held) > 8 {
					old := held[0]
					held = held[1:]
					b := a.Bytes(old)
					if b[0] != byte(w) {
						errs <- errors.New("bytes of a held slot were overwritten")
						return
					}
					if err := a.Free(old); err != nil {
						errs <- err
						return
					}
				}
			}
			for _, s := range held {
				if err := a.Free(s); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st := a.Stats(); st.Blocks != 0 || st.ReservedBytes != 0 {
		t.Fatalf("arena not empty: %+v", st)
	}
}
