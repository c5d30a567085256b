package slab

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
)

func TestSlab(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "slab"), 2*Align, 4)
	if errors.Is(err, ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	buf, free, err := AlignedBuffer(2 * Align)
	if err != nil {
		t.Fatal(err)
	}
	defer free()
	for i := range 4 {
		for j := range buf {
			buf[j] = byte(i*7 + j)
		}
		if err := s.WriteSlot(i, buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(buf)
	clear(buf)
	if err := s.ReadSlot(3, buf); err != nil || !bytes.Equal(buf, want) {
		t.Fatalf("ReadSlot(3): %v, data equal %v", err, bytes.Equal(buf, want))
	}
	if err := s.ReadSlot(0, buf[:Align]); err != nil || buf[1] != 1 {
		t.Fatalf("ReadSlot(0) first page: %v, byte %d", err, buf[1])
	}
	tests := []struct {
		name string
		i    int
		b    []byte
	}{
		{"slot out of range", 4, buf},
		{"negative slot", -1, buf},
		{"unaligned length", 0, buf[:100]},
		{"unaligned address", 0, buf[1 : Align+1]},
		{"longer than a slot", 0, make([]byte, 3*Align)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.ReadSlot(tc.i, tc.b); !errors.Is(err, ErrArgument) {
				t.Fatalf("ReadSlot: %v, want ErrArgument", err)
			}
			if err := s.WriteSlot(tc.i, tc.b); !errors.Is(err, ErrArgument) {
				t.Fatalf("WriteSlot: %v, want ErrArgument", err)
			}
		})
	}
	if _, err := Open(filepath.Join(t.TempDir(), "bad"), 100, 1); !errors.Is(err, ErrArgument) {
		t.Fatalf("Open with unaligned slots: %v", err)
	}
}
