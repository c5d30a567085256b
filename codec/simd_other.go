//go:build !amd64 || purego

package codec

// No vector kernels on this platform: the quantized modes run the Go loops.
const hasSIMD = false

func simdUnavailable() { panic("codec: internal error: SIMD kernel called without SIMD") }

func f16to32(dst []float32, src []byte) bool { simdUnavailable(); return false }
func statsRows(rows []float32, D, n int, mn, mx []int32, e []float32) {
	simdUnavailable()
}
func quantRows(codes []byte, rows []float32, D, n int, a, inv []float32, m []int32) {
	simdUnavailable()
}
func dequantRows(out []byte, codes []byte, D, n int, a, s []float32)          { simdUnavailable() }
func minMaxGroups(x []float32, g int, mn, mx []int32)                         { simdUnavailable() }
func quantGroups(codes []byte, x []float32, g int, a, inv []float32, m int32) { simdUnavailable() }
func dequantGroups(out []byte, codes []byte, g int, a, s []float32)           { simdUnavailable() }

func hufDecodeFast(tab *[hufTabSize]uint16, rd *[4]hufReader, out, lo []byte, n int) int {
	simdUnavailable()
	return 0
}
