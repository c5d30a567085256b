package codec

// Reference packers for the tests: one code width per call, LSB first,
// the layout every packed code section uses.

// packBits appends codes packed at b bits each.
func packBits(dst []byte, codes []uint8, b int) []byte {
	w := &swars[b]
	n := len(codes)
	k := packedLen(n, b)
	start := len(dst)
	dst = grow(dst, k)
	buf := dst[start:cap(dst)]
	o := 0
	for i := 0; i < n; i += 8 {
		var v uint64
		m := min(8, n-i)
		for j, c := range codes[i : i+m] {
			v |= uint64(c) << (8 * j)
		}
		store8(buf, o, w.pack(v), (m*b+7)/8)
		o += (m*b + 7) / 8
	}
	return dst
}

// unpackBits fills codes from src (which must hold ceil(len(codes)·b/8) bytes).
func unpackBits(codes []uint8, src []byte, b int) {
	w := &swars[b]
	n := len(codes)
	src = src[:packedLen(n, b)]
	p := 0
	for i := 0; i < n; i += 8 {
		v := w.unpack(load8(src, p) & w.full)
		p += b
		for j := range codes[i:min(i+8, n)] {
			codes[i+j] = uint8(v >> (8 * j))
		}
	}
}
