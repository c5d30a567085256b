package tiers

import (
	"fmt"
	"sync"
	"testing"
	"unsafe"
)

// TestNamespaceTable: ids are dense, stable and shared under concurrent
// additions and lookups; unknown names are not added by lookups.
func TestNamespaceTable(t *testing.T) {
	var tab nsTable
	if _, ok := tab.lookup("none"); ok {
		t.Fatal("empty table finds a name")
	}
	if got := tab.intern("none"); got != "none" {
		t.Fatalf("intern of an unknown name = %q", got)
	}
	const workers, names = 8, 200
	ids := make([][]uint32, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range names {
				n := fmt.Sprintf("ns-%d", (i*7+w)%names)
				id := tab.add(n)
				if tab.name(id) != n {
					t.Errorf("name(%d) = %q, want %q", id, tab.name(id), n)
					return
				}
				ids[w] = append(ids[w], id)
			}
		}()
	}
	wg.Wait()
	seen := map[uint32]string{}
	for i := range names {
		n := fmt.Sprintf("ns-%d", i)
		id, ok := tab.lookup(n)
		if !ok || id >= names {
			t.Fatalf("%s: id %d, %v; want one of the first %d", n, id, ok, names)
		}
		if other, dup := seen[id]; dup {
			t.Fatalf("%s and %s share id %d", n, other, id)
		}
		seen[id] = n
		if s := tab.intern(n); s != n {
			t.Fatalf("intern(%s) = %q", n, s)
		}
	}
}

// TestEntrySize: a slab page of entries is a whole number of the Go
// allocator's 8 KiB pages, so no page is rounded up (see pageEntries).
func TestEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(entry{}) * pageEntries; n%8192 != 0 {
		t.Fatalf("a slab page is %d bytes (%d-byte entries), not a multiple of 8 KiB: adjust pageEntries", n, unsafe.Sizeof(entry{}))
	}
}
