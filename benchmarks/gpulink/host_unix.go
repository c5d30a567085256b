//go:build unix

package gpulink

import (
	"fmt"
	"syscall"

	"github.com/kvtier/kvtier/cgo/gpu"
)

// hostBuffer returns n bytes of host memory of the given mode, outside the
// Go heap, and the function that releases it.
func hostBuffer(dev gpu.Device, mode HostMode, n int) ([]byte, func(), error) {
	if mode == Pinned {
		return pinnedBuffer(dev, n)
	}
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return nil, nil, fmt.Errorf("gpulink: mapping a host buffer: %w", err)
	}
	unmap := func() { _ = syscall.Munmap(b) }
	if mode == Pageable {
		return b, unmap, nil
	}
	unregister, err := dev.RegisterHost(b)
	if err != nil {
		unmap()
		return nil, nil, fmt.Errorf("gpulink: registering a host buffer: %w", err)
	}
	return b, func() { _ = unregister(); unmap() }, nil
}
