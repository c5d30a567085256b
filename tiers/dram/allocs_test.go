package dram

import (
	"testing"

	"github.com/kvtier/kvtier/tiers"
)

// TestNoAllocs checks that the hot path allocates nothing on the Go heap once
// the index maps have grown: put, get into a buffer, view, delete, reserve,
// commit, abort, including replacing puts and misses.
func TestNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	const n = 64 * KiB
	a := newArena(t, 32*MiB)
	l := layoutFor(t, n)
	data := make([]byte, n)
	buf := make([]byte, 0, n)
	keys := make([]tiers.Key, 256)
	for i := range keys {
		keys[i] = testKey("allocs", i, int16(i%8))
	}
	i := 0
	step := func() {
		k, k2 := keys[i%len(keys)], keys[(i+len(keys)/2)%len(keys)]
		i++
		if err := a.Put(bg, k, l, data); err != nil {
			t.Fatal(err)
		}
		if err := a.Put(bg, k, l, data); err != nil { // replace
			t.Fatal(err)
		}
		if _, _, err := a.Get(bg, k, buf[:0]); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := a.View(k); err != nil {
			t.Fatal(err)
		}
		s, view, err := a.Reserve(l)
		if err != nil {
			t.Fatal(err)
		}
		copy(view, data)
		if err := a.Commit(k2, l, s); err != nil {
			t.Fatal(err)
		}
		if !a.Validate(s) {
			t.Fatal("committed slot not valid")
		}
		s, _, err = a.Reserve(l)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Abort(s); err != nil {
			t.Fatal(err)
		}
		if err := a.Delete(bg, k); err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.Get(bg, k, buf[:0]); err == nil { // a miss
			t.Fatal("deleted key found")
		}
		if err := a.Delete(bg, k2); err != nil {
			t.Fatal(err)
		}
		_ = a.Stats()
	}
	for range 4 * len(keys) { // grow the maps
		step()
	}
	if got := testing.AllocsPerRun(500, step); got != 0 {
		t.Fatalf("%v allocations per put/get/view/reserve/commit/abort/delete round, want 0", got)
	}
	checkInvariants(t, a)
}
