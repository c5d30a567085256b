//go:build !linux

package codec_test

import "time"

func threadCPU() (time.Duration, bool) { return 0, false }
