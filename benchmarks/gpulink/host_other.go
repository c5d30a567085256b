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
	return pinnedBuffer(dev, n)
}
