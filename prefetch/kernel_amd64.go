//go:build amd64 && !purego

package prefetch

import "golang.org/x/sys/cpu"

// hasAVX2FMA: the kernels in kernel_amd64.s run on this CPU. Build with
// the purego tag to leave them out.
var hasAVX2FMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func dotI8AVX(q *float32, x *byte, n int) float32

//go:noescape
func dotI8x4AVX(dst *[4]float32, q *float32, x *byte, n int)

// dotI8 is Σ q[i]·int8(x[i]) over len(q) values; x must be as long.
func dotI8(q []float32, x []byte) float32 {
	n := len(q) &^ 15
	if !hasAVX2FMA || n == 0 || len(x) < len(q) {
		return dotI8Go(q, x)
	}
	s := dotI8AVX(&q[0], &x[0], n)
	if n < len(q) {
		s += dotI8Go(q[n:], x[n:len(q)])
	}
	return s
}

// dotI8x4 computes dst[j] = Σ q[j·n+i]·int8(x[i]) with n = len(q)/4.
func dotI8x4(dst *[4]float32, q []float32, x []byte) {
	n := len(q) / 4
	if !hasAVX2FMA || n%16 != 0 || n == 0 || len(x) < n {
		dotI8x4Go(dst, q, x)
		return
	}
	dotI8x4AVX(dst, &q[0], &x[0], n)
}
