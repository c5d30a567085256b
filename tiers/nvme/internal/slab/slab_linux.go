//go:build linux

package slab

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Align is the address and length alignment direct I/O needs here.
const Align = 4096

// File is a slab file. Its methods are safe for concurrent use on distinct
// slots (pread/pwrite); the caller orders accesses to one slot.
type File struct {
	f        *os.File
	slotSize int64
	slots    int
}

// Open creates or opens path as a slab of slots slots of slotSize bytes
// (a multiple of Align), allocating its blocks up front.
func Open(path string, slotSize int64, slots int) (*File, error) {
	if slotSize <= 0 || slotSize%Align != 0 || slots <= 0 {
		return nil, fmt.Errorf("%w: slot size %d, %d slots", ErrArgument, slotSize, slots)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_DIRECT, 0o644)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("%w: %s: %v", ErrUnsupported, path, err)
		}
		return nil, err
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, slotSize*int64(slots)); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
		f.Close()
		return nil, fmt.Errorf("slab: fallocate %s: %w", path, err)
	}
	return &File{f: f, slotSize: slotSize, slots: slots}, nil
}

// SlotSize returns the size of one slot.
func (s *File) SlotSize() int64 { return s.slotSize }

func (s *File) check(i int, b []byte) error {
	switch {
	case i < 0 || i >= s.slots:
		return fmt.Errorf("%w: slot %d of %d", ErrArgument, i, s.slots)
	case len(b) == 0 || len(b)%Align != 0 || int64(len(b)) > s.slotSize:
		return fmt.Errorf("%w: %d-byte buffer for %d-byte slots", ErrArgument, len(b), s.slotSize)
	case uintptr(unsafe.Pointer(unsafe.SliceData(b)))%Align != 0:
		return fmt.Errorf("%w: buffer not %d-byte aligned", ErrArgument, Align)
	}
	return nil
}

// WriteSlot writes b (aligned, a multiple of Align, at most a slot) at the
// start of slot i.
func (s *File) WriteSlot(i int, b []byte) error {
	if err := s.check(i, b); err != nil {
		return err
	}
	_, err := s.f.WriteAt(b, int64(i)*s.slotSize)
	return err
}

// ReadSlot fills b (aligned, a multiple of Align, at most a slot) from the
// start of slot i.
func (s *File) ReadSlot(i int, b []byte) error {
	if err := s.check(i, b); err != nil {
		return err
	}
	_, err := s.f.ReadAt(b, int64(i)*s.slotSize)
	return err
}

// Sync makes completed writes durable (fdatasync).
func (s *File) Sync() error { return unix.Fdatasync(int(s.f.Fd())) }

// Close closes the file.
func (s *File) Close() error { return s.f.Close() }

// AlignedBuffer returns n bytes (rounded up to Align) of page-aligned memory
// outside the Go heap, and the function that frees it.
func AlignedBuffer(n int) ([]byte, func() error, error) {
	n = (n + Align - 1) &^ (Align - 1)
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, nil, fmt.Errorf("slab: mmap %d bytes: %w", n, err)
	}
	return b, func() error { return unix.Munmap(b) }, nil
}
