//go:build amd64 && !purego

package codec

import "unsafe"

// hasSIMD reports whether this CPU runs the AVX2 + F16C kernels in
// simd_amd64.s (and the OS saves the YMM registers). Build with the purego
// tag to leave them out.
var hasSIMD = detectSIMD()

func detectSIMD() bool {
	maxID, _, _, _ := cpuid(0, 0)
	if maxID < 7 {
		return false
	}
	_, _, ecx1, _ := cpuid(1, 0)
	const osxsave, avx, f16c = 1 << 27, 1 << 28, 1 << 29
	if ecx1&(osxsave|avx|f16c) != osxsave|avx|f16c {
		return false
	}
	if xcr0, _ := xgetbv(); xcr0&6 != 6 { // XMM and YMM state enabled
		return false
	}
	_, ebx7, _, _ := cpuid(7, 0)
	return ebx7&(1<<5) != 0 // AVX2
}

func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
func xgetbv() (eax, edx uint32)

//go:noescape
func f16to32AVX(dst *float32, src *byte, n int) (special uint32)

//go:noescape
func statsRowsAVX(rows *float32, D, n int, mn, mx *int32, e *float32)

//go:noescape
func quantRowsAVX(codes *byte, rows *float32, D, n int, a, inv *float32, m *int32)

//go:noescape
func dequantRowsAVX(out *byte, codes *byte, D, n int, a, s *float32)

//go:noescape
func minMaxGroupsAVX(x *float32, ng, gs int, mn, mx *int32)

//go:noescape
func quantGroupsAVX(codes *byte, x *float32, ng, gs int, a, inv *float32, m int32)

//go:noescape
func dequantGroupsAVX(out *byte, codes *byte, ng, gs int, a, s *float32)

// The wrappers below check the sizes the kernels rely on; a mismatch is a
// bug in this package, never a property of the input, hence the panics.

func simdCheck(ok bool) {
	if !ok {
		panic("codec: internal error: SIMD kernel called with inconsistent sizes")
	}
}

// f16to32 converts the fp16 values in src to dst (len(dst) a positive
// multiple of 8) and reports whether any was NaN or infinite.
func f16to32(dst []float32, src []byte) bool {
	simdCheck(len(dst) > 0 && len(dst)%8 == 0 && len(src) == 2*len(dst))
	return f16to32AVX(unsafe.SliceData(dst), unsafe.SliceData(src), len(dst)) != 0
}

// statsRows folds n rows of D values (D a multiple of 8) into per-channel
// min/max order keys and energies, as colStats does.
func statsRows(rows []float32, D, n int, mn, mx []int32, e []float32) {
	simdCheck(D > 0 && D%8 == 0 && n > 0 && len(rows) == n*D && len(mn) == D && len(mx) == D && len(e) == D)
	statsRowsAVX(unsafe.SliceData(rows), D, n, unsafe.SliceData(mn), unsafe.SliceData(mx), unsafe.SliceData(e))
}

// quantRows sets codes[t·D+c] = clamp(int((rows[t·D+c]−a[c])·inv[c]+0.5), 0, m[c]).
func quantRows(codes []byte, rows []float32, D, n int, a, inv []float32, m []int32) {
	simdCheck(D > 0 && D%8 == 0 && n > 0 && len(rows) == n*D && len(codes) == n*D && len(a) == D && len(inv) == D && len(m) == D)
	quantRowsAVX(unsafe.SliceData(codes), unsafe.SliceData(rows), D, n, unsafe.SliceData(a), unsafe.SliceData(inv), unsafe.SliceData(m))
}

// dequantRows sets fp16 element t·D+c of out to a[c] + codes[t·D+c]·s[c].
func dequantRows(out []byte, codes []byte, D, n int, a, s []float32) {
	simdCheck(D > 0 && D%8 == 0 && n > 0 && len(out) == 2*n*D && len(codes) == n*D && len(a) == D && len(s) == D)
	dequantRowsAVX(unsafe.SliceData(out), unsafe.SliceData(codes), D, n, unsafe.SliceData(a), unsafe.SliceData(s))
}

// minMaxGroups sets mn[k], mx[k] to the min/max order keys of x[k·g:(k+1)·g].
func minMaxGroups(x []float32, g int, mn, mx []int32) {
	simdCheck(g > 0 && g%8 == 0 && len(x) > 0 && len(x)%g == 0 && len(mn) == len(x)/g && len(mx) == len(mn))
	minMaxGroupsAVX(unsafe.SliceData(x), len(x)/g, g, unsafe.SliceData(mn), unsafe.SliceData(mx))
}

// quantGroups quantizes group k of g values with a[k], inv[k] (codes ≤ m).
func quantGroups(codes []byte, x []float32, g int, a, inv []float32, m int32) {
	simdCheck(g > 0 && g%8 == 0 && len(x) > 0 && len(x)%g == 0 && len(codes) == len(x) && len(a) == len(x)/g && len(inv) == len(a))
	quantGroupsAVX(unsafe.SliceData(codes), unsafe.SliceData(x), len(x)/g, g, unsafe.SliceData(a), unsafe.SliceData(inv), m)
}

// dequantGroups sets fp16 element i of out, in group k = i/g, to a[k] + codes[i]·s[k].
func dequantGroups(out []byte, codes []byte, g int, a, s []float32) {
	simdCheck(g > 0 && g%8 == 0 && len(codes) > 0 && len(codes)%g == 0 && len(out) == 2*len(codes) && len(a) == len(codes)/g && len(s) == len(a))
	dequantGroupsAVX(unsafe.SliceData(out), unsafe.SliceData(codes), len(codes)/g, g, unsafe.SliceData(a), unsafe.SliceData(s))
}

// hufState is a Huffman stream reader as hufDecode32 sees it: it may
// start an iteration while pos ≤ lim.
type hufState struct {
	bits, avail, pos, lim uint64
	base                  *byte
}

//go:noescape
func hufDecode32(tab *uint16, st *[4]hufState, out *byte, lo *byte, iters int) (done int)

// hufDecodeFast decodes fp16 pairs from the four readers while every
// reader has bytes left for a whole iteration: it returns the number of
// symbols decoded (a multiple of 32, at most n).
func hufDecodeFast(tab *[hufTabSize]uint16, rd *[4]hufReader, out, lo []byte, n int) int {
	iters := n / 32
	var st [4]hufState
	for j := range rd {
		r := &rd[j]
		// An iteration refills twice: each loads 8 bytes at pos and moves
		// pos by at most 7.
		if len(r.s) < 15 || iters == 0 {
			return 0
		}
		st[j] = hufState{bits: r.bits, avail: uint64(r.avail), pos: uint64(r.pos), lim: uint64(len(r.s) - 15), base: unsafe.SliceData(r.s)}
	}
	simdCheck(len(out) >= 64*iters && len(lo) >= 32*iters)
	done := hufDecode32(&tab[0], &st, unsafe.SliceData(out), unsafe.SliceData(lo), iters)
	for j := range rd {
		rd[j].bits, rd[j].avail, rd[j].pos = st[j].bits, uint(st[j].avail), int(st[j].pos)
	}
	return 32 * done
}
