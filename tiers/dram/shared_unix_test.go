//go:build unix

package dram

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSharedMapping maps File a second time, as a client of the shared-memory
// data plane does, and checks that both mappings see the same bytes both ways.
func TestSharedMapping(t *testing.T) {
	a := newArena(t, 4*MiB)
	f := a.File()
	if f == nil {
		t.Fatal("File() is nil on a unix platform")
	}
	st, err := f.Stat()
	if err != nil || st.Size() != a.Size() {
		t.Fatalf("backing file: size %d, %v; want %d", st.Size(), err, a.Size())
	}
	client, err := unix.Mmap(int(f.Fd()), 0, int(a.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("second mapping: %v", err)
	}
	defer unix.Munmap(client)

	// Daemon writes, client reads.
	k := testKey("shm", 1, 0)
	l := layoutFor(t, 64*KiB)
	data := make([]byte, 64*KiB)
	fill(data, 42)
	if err := a.Put(bg, k, l, data); err != nil {
		t.Fatal(err)
	}
	_, slot, _, err := a.View(k)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(client[slot.Offset:slot.Offset+slot.Len], data) {
		t.Fatal("the client mapping does not see a put")
	}

	// Client writes a reservation in place, daemon commits and reads.
	s, _, err := a.Reserve(l)
	if err != nil {
		t.Fatal(err)
	}
	fill(client[s.Offset:s.Offset+s.Len], 43)
	k2 := testKey("shm", 2, 0)
	if err := a.Commit(k2, l, s); err != nil {
		t.Fatal(err)
	}
	_, got, err := a.Get(bg, k2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if seed, err := check(got); err != nil || seed != 43 {
		t.Fatalf("block written through the client mapping: seed %d, %v", seed, err)
	}
	if !a.Validate(s) || !a.Validate(slot) {
		t.Fatal("committed slots not valid")
	}
}

// TestTempFileMapping covers the fallback used where memfd_create is missing
// (and on every non-Linux Unix): an unlinked file mapped shared.
func TestTempFileMapping(t *testing.T) {
	const size = MiB
	mem, f, unmap, err := mapTempFile("fallback", size, &options{prefault: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	defer unmap(mem)
	if len(mem) != size {
		t.Fatalf("mapping of %d bytes, want %d", len(mem), size)
	}
	other, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(other)
	fill(mem[size/2:], 9)
	if seed, err := check(other[size/2:]); err != nil || seed != 9 {
		t.Fatalf("second mapping of the fallback file: seed %d, %v", seed, err)
	}
}
