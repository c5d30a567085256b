//go:build !linux

package codecbench

import "context"

// DiskRead needs O_DIRECT, which this package implements on Linux only.
func DiskRead(ctx context.Context, dir string, size int64) (Disk, error) {
	return Disk{Dir: dir, Bytes: size}, ErrDiskUnsupported
}

func abs(dir string) string { return dir }
