package dram

import (
	"errors"
	"testing"

	"github.com/kvtier/kvtier/tiers"
)

// FuzzArenaOps interprets the input as a sequence of operations on a small
// arena, checks every result against a model, and checks the arena's
// internal invariants at the end.
func FuzzArenaOps(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0, 2, 0})
	f.Add([]byte{3, 5, 3, 6, 4, 0, 0, 0x31, 5, 1, 1, 0})
	f.Add([]byte{0, 0x28, 0, 0x29, 0, 0x2a, 2, 0x28, 0, 0x30, 3, 0x30, 4, 7, 1, 7})
	f.Add([]byte{3, 0x30, 3, 0x31, 5, 0, 5, 0, 0, 0x30, 0, 0x31, 0, 0x32})
	const chunk = 64 * KiB
	sizes := []int64{2, 4096, 8194, 64 * KiB, 200 * KiB, 600 * KiB, 16 * chunk}
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 400 {
			ops = ops[:400]
		}
		a := newArena(t, 16*chunk, WithChunkSize(chunk), WithHugePages(false))
		type block struct {
			seed uint64
			n    int64
		}
		model := map[int]block{}
		type res struct {
			s    tiers.Slot
			seed uint64
		}
		var pending []res
		key := func(i int) tiers.Key { return testKey("fuzz", i, 0) }
		var seq uint64
		for len(ops) >= 2 {
			op, arg := ops[0], int(ops[1])
			ops = ops[2:]
			k := arg % 8
			n := sizes[(arg>>3)%len(sizes)]
			switch op % 6 {
			case 0:
				seq++
				data := make([]byte, n)
				fill8(data, seq)
				err := a.Put(bg, key(k), layoutFor(t, n), data)
				switch {
				case err == nil:
					model[k] = block{seq, n}
				case !errors.Is(err, tiers.ErrFull):
					t.Fatalf("Put: %v", err)
				}
			case 1:
				_, got, err := a.Get(bg, key(k), nil)
				want, ok := model[k]
				if !ok {
					if !errors.Is(err, tiers.ErrNotFound) {
						t.Fatalf("Get of an absent key: %v", err)
					}
					continue
				}
				if err != nil || int64(len(got)) != want.n || seed8(got) != want.seed {
					t.Fatalf("Get %d: %v, %d bytes, want %d bytes of seed %d", k, err, len(got), want.n, want.seed)
				}
			case 2:
				if err := a.Delete(bg, key(k)); err != nil {
					t.Fatal(err)
				}
				delete(model, k)
			case 3:
				s, view, err := a.Reserve(layoutFor(t, n))
				if errors.Is(err, tiers.ErrFull) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				seq++
				fill8(view, seq)
				pending = append(pending, res{s, seq})
			case 4, 5:
				if len(pending) == 0 {
					continue
				}
				i := arg % len(pending)
				r := pending[i]
				pending = append(pending[:i], pending[i+1:]...)
				if op%6 == 4 {
					if err := a.Commit(key(k), layoutFor(t, r.s.Len), r.s); err != nil {
						t.Fatalf("Commit: %v", err)
					}
					model[k] = block{r.seed, r.s.Len}
				} else if err := a.Abort(r.s); err != nil {
					t.Fatalf("Abort: %v", err)
				}
				if err := a.Abort(r.s); !errors.Is(err, ErrNotReserved) {
					t.Fatalf("second Abort: %v", err)
				}
			}
		}
		checkInvariants(t, a)
		for k := range model {
			if err := a.Delete(bg, key(k)); err != nil {
				t.Fatal(err)
			}
		}
		for _, r := range pending {
			if err := a.Abort(r.s); err != nil {
				t.Fatal(err)
			}
		}
		if st := a.Stats(); st.ReservedBytes != 0 || st.UsedBytes != 0 || st.Blocks != 0 || a.nFreeChunks != a.nChunks {
			t.Fatalf("not empty after deleting everything: %+v", st)
		}
	})
}

// fill8 and seed8 tag blocks of any length (fill needs at least 8 bytes).
func fill8(b []byte, seed uint64) {
	if len(b) >= 8 {
		fill(b, seed)
		return
	}
	for i := range b {
		b[i] = byte(seed >> (8 * i))
	}
}

func seed8(b []byte) uint64 {
	if len(b) >= 8 {
		s, err := check(b)
		if err != nil {
			return ^uint64(0)
		}
		return s
	}
	var s uint64
	for i := range b {
		s |= uint64(b[i]) << (8 * i)
	}
	return s
}
