//go:build !linux

package host

func cpuAndMem() (string, int64) { return "", 0 }

func describeDisk(dir string) Disk { return Disk{Dir: dir} }
