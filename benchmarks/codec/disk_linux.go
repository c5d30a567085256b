//go:build linux

package codecbench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
	"unsafe"
)

const directAlign = 4096

// alignedBuf returns a len-n slice whose first byte is aligned for O_DIRECT.
func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (directAlign - 1))
	if off != 0 {
		off = directAlign - off
	}
	return b[off : off+n]
}

// DiskRead writes a size-byte file in dir with O_DIRECT, reads it back
// sequentially with O_DIRECT (no page cache) in 4 MiB requests, removes it,
// and returns the read bandwidth. size is rounded up to 4 MiB.
func DiskRead(ctx context.Context, dir string, size int64) (Disk, error) {
	const chunk = 4 << 20
	size = (size + chunk - 1) / chunk * chunk
	d := Disk{Dir: dir, Bytes: size}
	f, err := os.CreateTemp(dir, "kvtier-diskbench-*")
	if err != nil {
		return d, err
	}
	name := f.Name()
	f.Close()
	defer os.Remove(name)
	buf := alignedBuf(chunk)
	for i := range buf {
		buf[i] = byte(i*131 + i>>12) // not all zeros, in case the device compresses
	}
	wf, err := os.OpenFile(name, os.O_WRONLY|syscall.O_DIRECT, 0o600)
	if err != nil {
		return d, fmt.Errorf("%w: %s: %v", ErrDiskUnsupported, dir, err)
	}
	start := time.Now()
	for off := int64(0); off < size; off += chunk {
		if _, err := wf.Write(buf); err != nil {
			wf.Close()
			return d, fmt.Errorf("%w: write %s: %v", ErrDiskUnsupported, name, err)
		}
		if ctx.Err() != nil {
			wf.Close()
			return d, ctx.Err()
		}
	}
	if err := wf.Sync(); err != nil {
		wf.Close()
		return d, err
	}
	d.WriteGBps = float64(size) / time.Since(start).Seconds() / 1e9
	if err := wf.Close(); err != nil {
		return d, err
	}
	rf, err := os.OpenFile(name, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return d, fmt.Errorf("%w: %s: %v", ErrDiskUnsupported, dir, err)
	}
	defer rf.Close()
	start = time.Now()
	var got int64
	for got < size {
		n, err := rf.Read(buf)
		got += int64(n)
		if err != nil || n == 0 {
			return d, fmt.Errorf("%w: read %s at %d: %v", ErrDiskUnsupported, name, got, err)
		}
		if ctx.Err() != nil {
			return d, ctx.Err()
		}
	}
	d.ReadGBps = float64(got) / time.Since(start).Seconds() / 1e9
	return d, nil
}

// abs makes a relative dir absolute for the report.
func abs(dir string) string {
	if a, err := filepath.Abs(dir); err == nil {
		return a
	}
	return dir
}
