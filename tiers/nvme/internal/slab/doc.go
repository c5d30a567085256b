// Package slab is a plain O_DIRECT slab file: one file cut into fixed-size
// slots, slot i at offset i*SlotSize, read and written whole with direct
// I/O (no page cache). The NVMe tier's benchmarks measure it next to Badger
// and the raw disk as the alternative store a later design could use. The
// tier itself stores nothing in a slab file; it uses only AlignedBuffer, for
// the page-aligned buffers of its direct reads (readbuf.go).
//
// Caveats: buffers passed to ReadSlot and WriteSlot must be aligned to
// Align bytes in address and length (use AlignedBuffer); there is no index,
// no free list and no crash consistency beyond what the caller builds. Off
// Linux, Open returns ErrUnsupported.
package slab
