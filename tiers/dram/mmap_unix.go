//go:build unix

package dram

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mapTempFile backs the arena with an unlinked temporary file mapped shared:
// the portable form of a memfd. The file's descriptor can be passed to other
// processes like a memfd's.
func mapTempFile(name string, size int64, o *options) ([]byte, *os.File, func([]byte) error, error) {
	f, err := os.CreateTemp("", "kvtier-"+name+"-*")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dram: create arena file: %w", err)
	}
	_ = os.Remove(f.Name())
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, nil, nil, fmt.Errorf("dram: size arena file to %d bytes: %w", size, err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, nil, nil, fmt.Errorf("dram: mmap %d bytes: %w", size, err)
	}
	if o.prefault {
		prefault(mem)
	}
	return mem, f, unix.Munmap, nil
}
