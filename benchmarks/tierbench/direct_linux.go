//go:build linux

package tierbench

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// directAlign is the alignment O_DIRECT needs of buffers, offsets and sizes.
const directAlign = 4096

// openDirect opens (creating) path for O_DIRECT reads and writes.
func openDirect(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_DIRECT, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnsupported, path, err)
	}
	return f, nil
}

// directBuffer returns n bytes of page-aligned memory outside the Go heap
// (an anonymous mapping) and the function that unmaps it.
func directBuffer(n int) ([]byte, func(), error) {
	n = (n + directAlign - 1) &^ (directAlign - 1)
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, nil, fmt.Errorf("tierbench: mmap %d bytes: %w", n, err)
	}
	return b, func() { _ = unix.Munmap(b) }, nil
}

// datasync flushes f's data to the device.
func datasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

// freeBytes is the space available to an unprivileged user on dir's file
// system, 0 when unknown.
func freeBytes(dir string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * int64(st.Bsize)
}
