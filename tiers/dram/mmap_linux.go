package dram

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mapArena backs the arena with a memfd mapped MAP_SHARED. The memfd is
// sealed against shrinking and growing, so a client it is passed to cannot
// truncate it under the daemon (which would turn the daemon's accesses into
// SIGBUS). Where memfd_create is unavailable it falls back to an unlinked
// temporary file.
func mapArena(name string, size int64, o *options) ([]byte, *os.File, func([]byte) error, error) {
	fd, err := unix.MemfdCreate("kvtier-"+name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		return mapTempFile(name, size, o)
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dram: memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:kvtier-"+name)
	fail := func(what string, err error) ([]byte, *os.File, func([]byte) error, error) {
		f.Close()
		return nil, nil, nil, fmt.Errorf("dram: %s (%d bytes): %w", what, size, err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		return fail("size memfd", err)
	}
	if o.prefault {
		// Allocate the memory now: a shortage is an error here rather than
		// a SIGBUS on first touch.
		if err := unix.Fallocate(fd, 0, 0, size); err != nil {
			return fail("allocate memfd", err)
		}
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return fail("seal memfd", err)
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail("mmap memfd", err)
	}
	if o.hugePages {
		_ = unix.Madvise(mem, unix.MADV_HUGEPAGE) // best effort; see WithHugePages
	}
	if o.prefault {
		// Map every page writable now. MAP_POPULATE would map a shared
		// mapping read-only, leaving a write fault per page for the first
		// puts. MADV_POPULATE_WRITE needs Linux 5.14; touch pages before.
		if err := unix.Madvise(mem, unix.MADV_POPULATE_WRITE); err != nil {
			prefault(mem)
		}
	}
	return mem, f, unix.Munmap, nil
}
