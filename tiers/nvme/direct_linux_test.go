//go:build linux

package nvme

import (
	"os"

	"golang.org/x/sys/unix"
)

// openDirectFile opens path for direct (page-cache bypassing) I/O.
func openDirectFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC|unix.O_DIRECT, 0o644)
}
