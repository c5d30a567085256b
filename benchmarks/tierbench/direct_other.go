//go:build !linux

package tierbench

import (
	"fmt"
	"os"
)

const directAlign = 4096

func openDirect(path string) (*os.File, error) {
	return nil, fmt.Errorf("%w: %s: no O_DIRECT on this platform", ErrUnsupported, path)
}

func directBuffer(n int) ([]byte, func(), error) {
	return make([]byte, n), func() {}, nil
}

func datasync(f *os.File) error { return f.Sync() }

func freeBytes(string) int64 { return 0 }
