//go:build linux

package host

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cpuAndMem reads the CPU model from /proc/cpuinfo and the memory size
// from /proc/meminfo.
func cpuAndMem() (model string, mem int64) {
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) >= 2 && fields[0] == "MemTotal:" {
				if kb, err := strconv.ParseInt(fields[1], 10, 64); err == nil {
					mem = kb << 10
				}
				break
			}
		}
		f.Close()
	}
	return model, mem
}

// describeDisk finds dir's mount in /proc/self/mounts (the longest mount
// point that is a prefix of it) and the device's model and rotational flag
// in /sys/block.
func describeDisk(dir string) Disk {
	d := Disk{Dir: dir}
	if a, err := filepath.Abs(dir); err == nil {
		d.Dir = a
	}
	if r, err := filepath.EvalSymlinks(d.Dir); err == nil {
		d.Dir = r
	}
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return d
	}
	defer f.Close()
	best := -1
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		mp := strings.ReplaceAll(fields[1], `\040`, " ")
		if (d.Dir == mp || strings.HasPrefix(d.Dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > best {
			best = len(mp)
			d.Device, d.FileSystem = fields[0], fields[2]
		}
	}
	if strings.HasPrefix(d.Device, "/dev/") {
		blk := blockDevice(strings.TrimPrefix(d.Device, "/dev/"))
		if m, err := os.ReadFile(filepath.Join("/sys/block", blk, "device/model")); err == nil {
			d.Model = strings.TrimSpace(string(m))
		}
		if r, err := os.ReadFile(filepath.Join("/sys/block", blk, "queue/rotational")); err == nil {
			d.Rotational = strings.TrimSpace(string(r)) == "1"
		}
	}
	return d
}

// blockDevice maps a partition name (sda1, nvme0n1p2) to its disk through
// /sys/class/block/NAME, whose parent directory is the disk for a partition.
func blockDevice(name string) string {
	p, err := filepath.EvalSymlinks(filepath.Join("/sys/class/block", name))
	if err != nil {
		return name
	}
	if _, err := os.Stat(filepath.Join(p, "partition")); err == nil {
		return filepath.Base(filepath.Dir(p))
	}
	return filepath.Base(p)
}
