package gpu

import (
	"errors"
	"testing"
)

func TestDriverErrorMapping(t *testing.T) {
	tests := []struct {
		name   string
		vendor Vendor
		code   int
		want   error
	}{
		{"cuda out of memory", VendorCUDA, 2, ErrOutOfMemory},
		{"hip out of memory", VendorHIP, 2, ErrOutOfMemory},
		{"cuda invalid value", VendorCUDA, 1, ErrInvalid},
		{"cuda not supported", VendorCUDA, 801, ErrNotSupported},
		{"cuda not initialized", VendorCUDA, 3, ErrUnavailable},
		{"cuda no device", VendorCUDA, 100, ErrUnavailable},
		{"hip no device", VendorHIP, 100, ErrUnavailable},
		{"cuda invalid device", VendorCUDA, 101, ErrUnavailable},
		{"cuda stub library", VendorCUDA, 34, ErrUnavailable},
		{"cuda device unavailable (exclusive process)", VendorCUDA, 46, ErrUnavailable},
		{"cuda system driver mismatch", VendorCUDA, 803, ErrUnavailable},
		{"cuda compat not supported on device", VendorCUDA, 804, ErrUnavailable},
		{"hip insufficient driver", VendorHIP, 35, ErrUnavailable},
		// 35 is no CUDA driver code: an honest driver error, not "no GPU".
		{"cuda 35 is not insufficient driver", VendorCUDA, 35, ErrDriver},
		{"hip 46 is not device unavailable", VendorHIP, 46, ErrDriver},
		{"cuda illegal address", VendorCUDA, 700, ErrDriver},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := error(&DriverError{Vendor: tc.vendor, Op: "test", Code: tc.code})
			if !errors.Is(err, tc.want) {
				t.Fatalf("%v wraps %v, want %v", err, errors.Unwrap(err), tc.want)
			}
		})
	}
}
