//go:build !linux

package slab

// Align is the alignment direct I/O would need.
const Align = 4096

// File is a slab file; unavailable off Linux.
type File struct{ slotSize int64 }

// Open returns ErrUnsupported off Linux.
func Open(path string, slotSize int64, slots int) (*File, error) { return nil, ErrUnsupported }

// SlotSize returns the size of one slot.
func (s *File) SlotSize() int64 { return s.slotSize }

// WriteSlot returns ErrUnsupported.
func (s *File) WriteSlot(i int, b []byte) error { return ErrUnsupported }

// ReadSlot returns ErrUnsupported.
func (s *File) ReadSlot(i int, b []byte) error { return ErrUnsupported }

// Sync returns ErrUnsupported.
func (s *File) Sync() error { return ErrUnsupported }

// Close does nothing.
func (s *File) Close() error { return nil }

// AlignedBuffer returns a heap buffer of n bytes rounded up to Align.
func AlignedBuffer(n int) ([]byte, func() error, error) {
	n = (n + Align - 1) &^ (Align - 1)
	return make([]byte, n), func() error { return nil }, nil
}
