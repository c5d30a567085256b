//go:build !linux

package gpulink

// numaNodeOf knows no NUMA topology outside Linux.
func numaNodeOf(busID string) int { return -1 }

// onNode cannot place memory outside Linux: it does not run fn.
func onNode(node int, fn func()) bool { return false }
