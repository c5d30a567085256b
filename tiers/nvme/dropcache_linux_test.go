//go:build linux

package nvme

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dropCache evicts the files under dir from the page cache, so the next
// reads come from the disk, and returns how many bytes of them are still
// resident afterwards (0 when the drop worked).
//
// Badger maps its files; pages mapped into this process survive both
// posix_fadvise(DONTNEED) and drop_caches. So: (1) zap this process's
// mappings of those files (madvise MADV_DONTNEED on the ranges listed in
// /proc/self/maps; the file contents stay, in the page cache or on disk),
// (2) fdatasync and fadvise(DONTNEED) each file, (3) try drop_caches too
// (usually not permitted in a sandbox), (4) measure residency with mincore.
func dropCache(dir string) int64 {
	dir, _ = filepath.Abs(dir)
	if maps, err := os.ReadFile("/proc/self/maps"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(maps))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 6 || !strings.HasPrefix(f[5], dir+"/") {
				continue
			}
			lo, hi, ok := strings.Cut(f[0], "-")
			if !ok {
				continue
			}
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil && end > start {
				_, _, _ = unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_DONTNEED)
			}
		}
	}
	var files []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	for _, p := range files {
		if f, err := os.OpenFile(p, os.O_RDWR, 0); err == nil {
			_ = unix.Fdatasync(int(f.Fd()))
			_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
			f.Close()
		}
	}
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0) // needs privileges; best effort
	var resident int64
	for _, p := range files {
		r, _ := residency(p)
		resident += int64(r) * int64(os.Getpagesize())
	}
	return resident
}

// residency returns the resident and total pages of the file at p.
func residency(p string) (int, int) {
	f, err := os.Open(p)
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return 0, 0
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, 0
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	// x/sys has no Mincore wrapper on Linux.
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(m))), uintptr(len(m)),
		uintptr(unsafe.Pointer(unsafe.SliceData(vec)))); e != 0 {
		return 0, 0
	}
	var r int
	for _, v := range vec {
		r += int(v & 1)
	}
	return r, len(vec)
}
