package nvme

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// liveKeys lists the index's keys, sorted, checking them against count;
// names maps the fingerprints of the keys inserted back to them.
func liveKeys(t *testing.T, x *index, names map[fingerprint]string) []string {
	t.Helper()
	var ks []string
	for i := int32(0); i < x.n; i++ {
		if e := x.at(i); e.live() {
			if x.findFP(e.fp) != i {
				t.Fatalf("entry %d not found by its fingerprint", i)
			}
			ks = append(ks, names[e.fp])
		}
	}
	if int64(len(ks)) != x.count {
		t.Fatalf("%d entries live, count %d", len(ks), x.count)
	}
	slices.Sort(ks)
	return ks
}

func TestIndex(t *testing.T) {
	for _, narrow := range []bool{false, true} {
		t.Run(fmt.Sprintf("collisions=%v", narrow), func(t *testing.T) {
			x := newIndex()
			x.narrow = narrow // 8 hash values: long collision chains
			const n = 100
			key := func(i int) string { return fmt.Sprintf("key-%03d", i) }
			names := map[fingerprint]string{}
			for i := range n {
				if x.find([]byte(key(i))) != nilEntry {
					t.Fatalf("%s found before insert", key(i))
				}
				x.insert([]byte(key(i)), uint64(i+1), uint32(i))
				names[x.fingerprint([]byte(key(i)))] = key(i)
			}
			var want []string
			for i := range n {
				want = append(want, key(i))
			}
			if got := liveKeys(t, x, names); !slices.Equal(got, want) {
				t.Fatalf("keys %v", got)
			}
			// Update and remove from the middle, both ends and chains.
			x.update(x.find([]byte(key(50))), 500, 7)
			for _, i := range []int{99, 1, 25, 26, 73} {
				x.remove(x.find([]byte(key(i))))
			}
			want = slices.DeleteFunc(want, func(k string) bool {
				return slices.Contains([]string{key(99), key(1), key(25), key(26), key(73)}, k)
			})
			if got := liveKeys(t, x, names); !slices.Equal(got, want) {
				t.Fatalf("keys after changes %v\nwant %v", got, want)
			}
			if e := x.at(x.find([]byte(key(50)))); e.seq != 500 || e.size != 7 {
				t.Fatalf("updated entry %+v, want seq 500 size 7", *e)
			}
			var used int64
			for _, k := range want {
				i := x.find([]byte(k))
				if i == nilEntry || x.at(i).fp != x.fingerprint([]byte(k)) {
					t.Fatalf("%s not found", k)
				}
				used += int64(x.at(i).size)
			}
			if used != x.used {
				t.Fatalf("used %d, entries sum to %d", x.used, used)
			}
			for _, i := range []int{99, 1, 25} {
				if x.find([]byte(key(i))) != nilEntry {
					t.Fatalf("removed %s still found", key(i))
				}
			}
			// Freed entries are reused.
			n0 := x.n
			x.insert([]byte("new-1"), 1000, 1)
			x.insert([]byte("new-2"), 1001, 1)
			if x.n != n0 {
				t.Fatalf("insert after remove grew the entries from %d to %d", n0, x.n)
			}
			for len(want) > 0 {
				x.remove(x.find([]byte(want[0])))
				want = want[1:]
			}
			x.remove(x.find([]byte("new-1")))
			x.remove(x.find([]byte("new-2")))
			if x.count != 0 || x.used != 0 || slices.ContainsFunc(x.slots, func(s int32) bool { return s != 0 }) {
				t.Fatalf("index not empty: count %d used %d", x.count, x.used)
			}
		})
	}
}

// TestIndexChurn checks the hash table against a map through many random
// inserts and removes (backward-shift deletion, growth, collisions).
func TestIndexChurn(t *testing.T) {
	for _, narrow := range []bool{false, true} {
		t.Run(fmt.Sprintf("collisions=%v", narrow), func(t *testing.T) {
			x := newIndex()
			x.narrow = narrow
			ref := map[string]int32{}
			r := rand.New(rand.NewPCG(1, 2))
			for step := range 20000 {
				k := fmt.Sprintf("k%d", r.IntN(500))
				i := x.find([]byte(k))
				if _, ok := ref[k]; ok != (i != nilEntry) {
					t.Fatalf("step %d: find(%s) = %d, reference has it: %v", step, k, i, ok)
				}
				if i == nilEntry {
					ref[k] = x.insert([]byte(k), uint64(step+1), 1)
				} else {
					if ref[k] != i {
						t.Fatalf("step %d: %s at entry %d, want %d", step, k, i, ref[k])
					}
					x.remove(i)
					delete(ref, k)
				}
			}
			if x.count != int64(len(ref)) {
				t.Fatalf("count %d, reference %d", x.count, len(ref))
			}
			for k, i := range ref {
				if x.find([]byte(k)) != i {
					t.Fatalf("%s lost", k)
				}
			}
		})
	}
}

// TestIndexMemory measures the Go heap the index takes per block, with a
// realistic binary key (12-byte namespace, 16-byte hash). The process
// budget is ~200 bytes per block; the Store's index takes about 180 of
// them, so this tier's share must stay small.
func TestIndexMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates ~40 MB")
	}
	const n = 300_000
	var k [32]byte
	keys := make([][]byte, n)
	for i := range keys {
		k := testKey("llama-3.1-8b", i).AppendBinary(k[:0])
		keys[i] = append([]byte(nil), k...)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	x := newIndex()
	for i, k := range keys {
		x.insert(k, uint64(i+1), 1<<20)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("index: %.1f bytes of heap per block (%d-byte keys)", per, len(keys[0]))
	if per > 64 {
		t.Errorf("index takes %.1f bytes per block, budget 64", per)
	}
	runtime.KeepAlive(x)
}
