//go:build !linux

package nvme

import (
	"errors"
	"os"
)

func openDirectFile(string) (*os.File, error) {
	return nil, errors.New("O_DIRECT is Linux-only here")
}
