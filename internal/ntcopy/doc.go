// Package ntcopy copies into memory that will not be read again soon — a
// block landing in the DRAM arena — with non-temporal stores, which write
// whole cache lines straight to memory: no read-for-ownership of the
// destination lines, and no eviction of the caller's working set. Go's copy
// switches to such stores only from 1 MiB; for the 64 KiB – 1 MiB blocks of
// a KV cache it is up to twice as slow, whether the arena hands out slots
// in address order or not (BenchmarkCopy).
//
// Copy falls back to the built-in copy for short slices, a destination that
// is not 32-byte aligned, CPUs without AVX2, and platforms other than amd64.
package ntcopy
