//go:build !unix

package daemon_test

import "time"

// processCPU is not measured here: the benchmarks leave out cpu-µs/op.
func processCPU() time.Duration { return 0 }
