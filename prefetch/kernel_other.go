//go:build !amd64 || purego

package prefetch

func dotI8(q []float32, x []byte) float32 { return dotI8Go(q, x) }

func dotI8x4(dst *[4]float32, q []float32, x []byte) { dotI8x4Go(dst, q, x) }
