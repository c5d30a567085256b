//go:build !linux

package nvme

import (
	"math"
	"os"
	"path/filepath"
)

// directIOSupported: no O_DIRECT off Linux; reads go through Badger.
const directIOSupported = false

func openDirect(string) (*os.File, error) { return nil, os.ErrInvalid }

// diskUsage returns the apparent size of the files under dir (sparse files
// count in full off Linux), and that of its LSM tables.
func diskUsage(dir string) (n, tables int64) {
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			if d.Name() == QuarantineDir && path != dir {
				return filepath.SkipDir // set aside, not the store's
			}
			return nil
		}
		if info, err := d.Info(); err == nil {
			n += info.Size()
			if filepath.Ext(path) == ".sst" {
				tables += info.Size()
			}
		}
		return nil
	})
	return n, tables
}

// statfs is not implemented off Linux: the space guard sees unlimited
// room there.
func statfs(string) (int64, error) { return math.MaxInt64 / 4, nil }
