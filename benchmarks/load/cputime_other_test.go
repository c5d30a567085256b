//go:build !linux

package load

import "time"

// processCPU is not measured here: the benchmarks leave out their CPU metrics.
func processCPU(pid int) time.Duration { return 0 }
