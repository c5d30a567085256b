//go:build !linux

package codecbench

import "time"

// threadCPU is unavailable here; throughput falls back to wall-clock time.
func threadCPU() (time.Duration, bool) { return 0, false }
