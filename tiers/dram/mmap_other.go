//go:build !unix

package dram

import "os"

// mapArena on platforms without mmap (Windows, wasm) allocates the arena on
// the Go heap, once. It works as a tier but has no file to share with other
// processes (File returns nil) and is not suitable for GPU registration.
func mapArena(name string, size int64, o *options) ([]byte, *os.File, func([]byte) error, error) {
	mem := make([]byte, size)
	if o.prefault {
		prefault(mem)
	}
	return mem, nil, func([]byte) error { return nil }, nil
}
