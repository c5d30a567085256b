//go:build !linux

package prefetch

import "time"

func threadCPU() (time.Duration, bool) { return 0, false }
