//go:build linux

package nvme

import (
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// directIOSupported says whether openDirect can work on this platform.
const directIOSupported = true

// openDirect opens a value log file for reading with O_DIRECT.
func openDirect(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
}

// diskUsage returns the bytes allocated on disk to the files under dir
// (st_blocks, not the apparent size: Badger's active value log file is a
// sparse file twice the configured size), and those of its LSM tables.
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
		info, err := d.Info()
		if err != nil {
			return nil
		}
		size := info.Size()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			size = st.Blocks * 512
		}
		n += size
		if filepath.Ext(path) == ".sst" {
			tables += size
		}
		return nil
	})
	return n, tables
}

// statfs returns the bytes of dir's file system available to an
// unprivileged writer.
func statfs(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
