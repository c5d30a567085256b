package ntcopy

// Threshold is the length from which Copy uses non-temporal stores: below
// it the destination most likely fits in cache anyway.
const Threshold = 32 << 10

// Copy copies min(len(dst), len(src)) bytes from src to dst, which must not
// overlap, and returns that count. See the package documentation.
func Copy(dst, src []byte) int {
	n := min(len(dst), len(src))
	if n < Threshold || !aligned(dst) {
		return copy(dst, src)
	}
	body := n &^ (blockBytes - 1)
	if !copyNT(dst[:body], src[:body]) {
		return copy(dst, src)
	}
	copy(dst[body:n], src[body:n])
	return n
}
