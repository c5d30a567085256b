//go:build !linux || !cgo

package nvmlinfo_test

import (
	"errors"
	"testing"

	"github.com/kvtier/kvtier/cgo/nvmlinfo"
)

func TestReadWithoutCgo(t *testing.T) {
	if _, err := nvmlinfo.Read(); !errors.Is(err, nvmlinfo.ErrUnavailable) {
		t.Fatalf("Read: %v, want ErrUnavailable in a build without cgo", err)
	}
}
