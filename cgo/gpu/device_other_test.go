//go:build !linux || !cgo

package gpu_test

import (
	"errors"
	"testing"

	"github.com/kvtier/kvtier/cgo/gpu"
)

func TestOpenWithoutCgo(t *testing.T) {
	for _, opts := range [][]gpu.Option{nil, {gpu.WithVendor(gpu.VendorCUDA)}, {gpu.WithLibraryPath("/usr/lib/libcuda.so.1")}} {
		d, err := gpu.Open(opts...)
		if d != nil || !errors.Is(err, gpu.ErrUnavailable) {
			t.Fatalf("Open = %v, %v; want ErrUnavailable in a build without cgo", d, err)
		}
	}
}
