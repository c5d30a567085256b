package gpulink

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Where sysfs describes PCI devices and NUMA nodes (tests point them at a
// tree of their own).
var (
	sysfsPCI  = "/sys/bus/pci/devices"
	sysfsNode = "/sys/devices/system/node"
)

// numaNodeOf returns the NUMA node of the PCI device busID, from sysfs;
// -1 when unknown (no bus id, no sysfs entry, or a machine without NUMA,
// where the kernel says -1).
func numaNodeOf(busID string) int {
	if busID == "" {
		return -1
	}
	b, err := os.ReadFile(filepath.Join(sysfsPCI, sysfsID(busID), "numa_node"))
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// onNode runs fn on an OS thread restricted to NUMA node's CPUs, so that
// memory fn allocates and first touches (pinned memory from the driver,
// pages of an mmap) comes from that node under the kernel's default
// local-allocation policy. It returns false, without running fn, when the
// node's CPUs are unknown or the thread cannot be restricted.
func onNode(node int, fn func()) bool {
	b, err := os.ReadFile(filepath.Join(sysfsNode, "node"+strconv.Itoa(node), "cpulist"))
	if err != nil {
		return false
	}
	var set unix.CPUSet
	if !parseCPUList(strings.TrimSpace(string(b)), &set) {
		return false
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old unix.CPUSet
	if unix.SchedGetaffinity(0, &old) != nil || unix.SchedSetaffinity(0, &set) != nil {
		return false
	}
	defer func() { _ = unix.SchedSetaffinity(0, &old) }()
	fn()
	return true
}

// parseCPUList reads a sysfs cpulist ("0-3,8,10-11") into set.
func parseCPUList(s string, set *unix.CPUSet) bool {
	set.Zero()
	if s == "" {
		return false
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return false
		}
		z := a
		if isRange {
			if z, err = strconv.Atoi(hi); err != nil || z < a {
				return false
			}
		}
		for c := a; c <= z; c++ {
			set.Set(c)
		}
	}
	return set.Count() > 0
}
