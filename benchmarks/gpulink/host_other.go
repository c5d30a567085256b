//go:build !unix

package gpulink

import (
	"fmt"

	"github.com/kvtier/kvtier/cgo/gpu"
)

// hostBuffer supports only driver-pinned memory on this platform.
func hostBuffer(dev gpu.Device, mode HostMode, n int) ([]byte, func(), error) {
	if mode != Pinned {
		return nil, nil, fmt.Errorf("gpulink: %s host memory needs mmap", mode)
	}
	b, err := dev.AllocHost(n)
	if err != nil {
		return nil, nil, fmt.Errorf("gpulink: pinned host buffer: %w", err)
	}
	return b, func() { _ = dev.FreeHost(b) }, nil
}
