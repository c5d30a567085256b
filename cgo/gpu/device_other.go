//go:build !linux || !cgo

package gpu

import "fmt"

// Open always fails in this build: GPU support needs cgo on Linux. The error
// wraps ErrUnavailable, so callers run without the HBM tier.
func Open(opts ...Option) (Device, error) {
	return nil, fmt.Errorf("%w: built without cgo or not on linux", ErrUnavailable)
}
