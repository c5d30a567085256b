//go:build !linux

package nvme

import (
	"os"
	"path/filepath"
)

// directIOSupported: no O_DIRECT off Linux; reads go through Badger.
const directIOSupported = false

func openDirect(string) (*os.File, error) { return nil, os.ErrInvalid }

// diskUsage returns the apparent size of the files under dir (sparse files
// count in full off Linux).
func diskUsage(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			n += info.Size()
		}
		return nil
	})
	return n
}
