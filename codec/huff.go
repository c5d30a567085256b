package codec

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// A canonical Huffman coder for byte symbols, used by the lossless mode for
// the top byte of every element. Code lengths are limited to hufMaxLen bits
// so that one lookup in a 2^hufMaxLen table decodes a symbol. Symbol i goes
// to stream i mod 4: a decoder keeps four independent bit readers busy
// (on amd64 the fp16 case runs the loop in simd_amd64.s).
//
// Table: first symbol u8, symbol count − 1 u8, then one 4-bit code length per
// symbol (low nibble first; 0 = symbol absent). The lengths form a complete
// prefix code, or a single symbol of length 1.
//
// Streams: u32 byte lengths of streams 0, 1 and 2, then the four streams.
// Each is a bit string, least significant bit first, codes bit-reversed
// (the first code bit is the least significant), padded with zero bits to a
// byte. A decoder must consume each stream exactly.

const (
	hufMaxLen  = 11
	hufTabSize = 1 << hufMaxLen
)

// hufCoder holds one code: lengths, the encoder's codes and the decoder's table.
type hufCoder struct {
	len  [256]uint8
	code [256]uint16        // bit-reversed canonical codes
	dec  [hufTabSize]uint16 // next hufMaxLen bits → length | symbol<<8
	hw   [512]hufNode       // tree building scratch
	ord  [256]uint16        // symbols by count
	cnt  [256]uint32        // counts being limited
	dep  [512]uint8         // node depths
}

type hufNode struct {
	w      uint64
	parent int16
}

// build sets code lengths (≤ hufMaxLen) for the symbols with nonzero counts
// and the canonical codes. n > 0 symbols were counted.
func (h *hufCoder) build(counts *[256]uint32) {
	h.cnt = *counts
	for shift := 0; ; shift++ {
		if h.lengths() <= hufMaxLen {
			break
		}
		// Too deep: flatten the distribution and try again.
		for s, c := range counts {
			if c != 0 {
				h.cnt[s] = max(c>>(shift+1), 1)
			}
		}
	}
	h.assign()
}

// lengths computes Huffman code lengths of h.cnt into h.len and returns the
// largest.
func (h *hufCoder) lengths() int {
	h.len = [256]uint8{}
	ns := 0
	for s, c := range h.cnt {
		if c != 0 {
			h.ord[ns] = uint16(s)
			ns++
		}
	}
	switch ns {
	case 0:
		return 0
	case 1:
		h.len[h.ord[0]] = 1
		return 1
	}
	ord := h.ord[:ns]
	slices.SortFunc(ord, func(a, b uint16) int {
		if h.cnt[a] != h.cnt[b] {
			if h.cnt[a] < h.cnt[b] {
				return -1
			}
			return 1
		}
		return int(a) - int(b)
	})
	// Two-queue Huffman: leaves 0 … ns−1 in order of weight, internal nodes
	// ns … 2ns−2 created in order of weight.
	nodes := h.hw[:2*ns-1]
	for i, s := range ord {
		nodes[i] = hufNode{w: uint64(h.cnt[s]), parent: -1}
	}
	leaf, inner := 0, ns
	pick := func(next int) int {
		if leaf < ns && (inner >= next || nodes[leaf].w <= nodes[inner].w) {
			leaf++
			return leaf - 1
		}
		inner++
		return inner - 1
	}
	for next := ns; next < 2*ns-1; next++ {
		a := pick(next)
		b := pick(next)
		nodes[next] = hufNode{w: nodes[a].w + nodes[b].w, parent: -1}
		nodes[a].parent, nodes[b].parent = int16(next), int16(next)
	}
	// Depths, root first (parents have larger indices).
	dep := h.dep[:2*ns-1]
	dep[2*ns-2] = 0
	for i := 2*ns - 3; i >= 0; i-- {
		dep[i] = dep[nodes[i].parent] + 1
	}
	maxLen := 0
	for i, s := range ord {
		h.len[s] = dep[i]
		maxLen = max(maxLen, int(dep[i]))
	}
	return maxLen
}

// assign sets canonical codes from h.len: shorter codes first, then by symbol.
func (h *hufCoder) assign() {
	var nlen [hufMaxLen + 2]int
	for _, l := range h.len {
		nlen[l]++
	}
	nlen[0] = 0
	var next [hufMaxLen + 2]uint32
	code := uint32(0)
	for l := 1; l <= hufMaxLen; l++ {
		code = (code + uint32(nlen[l-1])) << 1
		next[l] = code
	}
	for s, l := range h.len {
		if l == 0 {
			h.code[s] = 0
			continue
		}
		c := next[l]
		next[l]++
		h.code[s] = uint16(reverseBits(c, int(l)))
	}
}

func reverseBits(c uint32, n int) uint32 {
	var r uint32
	for i := 0; i < n; i++ {
		r = r<<1 | c&1
		c >>= 1
	}
	return r
}

// usedSymbols returns the first and last symbols with a non-zero entry in
// a per-symbol table (both 255 when every entry is zero): the range an entropy
// coder's table is written for.
func usedSymbols[T uint8 | uint32](t *[256]T) (lo, hi int) {
	lo, hi = 0, 255
	for lo < 255 && t[lo] == 0 {
		lo++
	}
	for hi > lo && t[hi] == 0 {
		hi--
	}
	return lo, hi
}

// appendTable writes the code lengths.
func (h *hufCoder) appendTable(dst []byte) []byte {
	lo, hi := usedSymbols(&h.len)
	dst = append(dst, uint8(lo), uint8(hi-lo))
	for s := lo; s <= hi; s += 2 {
		b := h.len[s]
		if s+1 <= hi {
			b |= h.len[s+1] << 4
		}
		dst = append(dst, b)
	}
	return dst
}

// readTable parses a table written by appendTable, checks that the lengths
// form a complete prefix code (or a single symbol) and builds the decoding
// table. It returns the table's length.
func (h *hufCoder) readTable(b []byte) (int, error) {
	if len(b) < 2 {
		return 0, fmt.Errorf("%w: short Huffman table", ErrCorrupt)
	}
	lo, n := int(b[0]), int(b[1])+1
	k := 2 + (n+1)/2
	if lo+n > 256 || len(b) < k {
		return 0, fmt.Errorf("%w: Huffman table of %d symbols from %d", ErrCorrupt, n, lo)
	}
	h.len = [256]uint8{}
	var kraft uint32 // in units of 2^−hufMaxLen
	syms, last := 0, 0
	for i := 0; i < n; i++ {
		l := b[2+i/2] >> (4 * (i & 1)) & 15
		if l > hufMaxLen {
			return 0, fmt.Errorf("%w: Huffman code length %d", ErrCorrupt, l)
		}
		if l != 0 {
			h.len[lo+i] = l
			kraft += hufTabSize >> l
			syms++
			last = lo + i
		}
	}
	switch {
	case syms == 1 && h.len[last] == 1:
		for i := range h.dec {
			h.dec[i] = 1 | uint16(last)<<8
		}
		return k, nil
	case kraft != hufTabSize:
		return 0, fmt.Errorf("%w: Huffman lengths are not a complete code", ErrCorrupt)
	}
	h.assign()
	for s, l := range h.len {
		if l == 0 {
			continue
		}
		e := uint16(l) | uint16(s)<<8
		for i := int(h.code[s]); i < hufTabSize; i += 1 << l {
			h.dec[i] = e
		}
	}
	return k, nil
}

// hufStreamsMax bounds the streams (with their length header) for n
// symbols, with the 8 bytes of slack per stream that encode needs.
func hufStreamsMax(n int) int { return 12 + 4*(16+(n/4+1)*hufMaxLen/8) }

// encode appends the four streams of the n symbols src[i·stride+off]
// (with their length header) to dst, using buf (hufStreamsMax(n) bytes) as
// scratch.
func (h *hufCoder) encode(dst, buf, src []byte, stride, off, n int) []byte {
	var tab [256]uint32 // code | length<<16
	for s := range tab {
		tab[s] = uint32(h.code[s]) | uint32(h.len[s])<<16
	}
	per := (len(buf) - 12) / 4
	var lens [4]int
	for j := 0; j < 4; j++ {
		w := buf[12+j*per : 12+(j+1)*per]
		var acc uint64
		nb, p := uint(0), 0
		i := j
		// Four codes (≤ 44 bits) on top of < 8 pending bits fit in acc;
		// then store 8 bytes and keep the partial byte (the next store
		// overwrites the rest). w has room: per ≥ the stream + 8.
		for ; i+12 < n; i += 16 {
			e0, e1 := tab[src[i*stride+off]], tab[src[(i+4)*stride+off]]
			e2, e3 := tab[src[(i+8)*stride+off]], tab[src[(i+12)*stride+off]]
			acc |= uint64(e0&0xffff) << (nb & 63)
			nb += uint(e0 >> 16)
			acc |= uint64(e1&0xffff) << (nb & 63)
			nb += uint(e1 >> 16)
			acc |= uint64(e2&0xffff) << (nb & 63)
			nb += uint(e2 >> 16)
			acc |= uint64(e3&0xffff) << (nb & 63)
			nb += uint(e3 >> 16)
			binary.LittleEndian.PutUint64(w[p:], acc)
			p += int(nb >> 3)
			acc >>= nb &^ 7 & 63
			nb &= 7
		}
		for ; i < n; i += 4 {
			e := tab[src[i*stride+off]]
			acc |= uint64(e&0xffff) << (nb & 63)
			nb += uint(e >> 16)
			if nb >= 32 {
				binary.LittleEndian.PutUint32(w[p:], uint32(acc))
				p += 4
				acc >>= 32
				nb -= 32
			}
		}
		for nb > 0 {
			w[p] = byte(acc)
			p++
			acc >>= 8
			nb -= min(nb, 8)
		}
		lens[j] = p
	}
	for j := 0; j < 3; j++ {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(lens[j]))
	}
	for j := 0; j < 4; j++ {
		dst = append(dst, buf[12+j*per:12+j*per+lens[j]]...)
	}
	return dst
}

// hufReader reads one LSB-first stream.
type hufReader struct {
	bits  uint64
	avail uint // valid bits in bits
	pos   int  // next byte of s to load
	s     []byte
}

// refill tops bits up to at least 56 valid bits where 8 bytes can be
// loaded; the bits above avail are the stream's next bits, so loading them
// again is harmless.
func (r *hufReader) refill() {
	r.bits |= binary.LittleEndian.Uint64(r.s[r.pos:]) << (r.avail & 63)
	r.pos += int(63-r.avail) >> 3
	r.avail |= 56
}

// refillSlow is refill near the end of the stream.
func (r *hufReader) refillSlow() {
	for r.avail <= 56 && r.pos < len(r.s) {
		r.bits |= uint64(r.s[r.pos]) << r.avail
		r.pos++
		r.avail += 8
	}
}

// decode decodes n symbols from the four streams in body (after readTable)
// into dst[i·stride+off]; with lo non-nil (stride 2, off 1) it writes whole
// little-endian pairs lo[i] | symbol<<8. body holds exactly the streams.
func (h *hufCoder) decode(dst []byte, stride, off, n int, lo []byte, body []byte) error {
	if len(body) < 12 {
		return fmt.Errorf("%w: short Huffman streams", ErrCorrupt)
	}
	var rd [4]hufReader
	p := 12
	for j := 0; j < 4; j++ {
		k := len(body) - p
		if j < 3 {
			k = int(binary.LittleEndian.Uint32(body[4*j:]))
		}
		if k < 0 || k > len(body)-p {
			return fmt.Errorf("%w: Huffman stream %d of %d bytes overruns", ErrCorrupt, j, k)
		}
		rd[j].s = body[p : p+k]
		p += k
	}
	if len(dst) < n*stride || off >= stride || (lo != nil && (stride != 2 || off != 1 || len(lo) < n)) {
		return fmt.Errorf("%w: Huffman output size", ErrCorrupt) // a caller bug, reported safely
	}
	tab := &h.dec
	i := 0
	if lo != nil && simdOn {
		i = hufDecodeFast(tab, &rd, dst[:2*n], lo[:n], n)
	}
	// Fast loop: 16 symbols, 4 from each stream; a refill leaves at least
	// 56 bits, enough for 4 codes of at most 11 bits.
	const m = hufTabSize - 1
	r0, r1, r2, r3 := &rd[0], &rd[1], &rd[2], &rd[3]
	for i+16 <= n && r0.pos+8 <= len(r0.s) && r1.pos+8 <= len(r1.s) && r2.pos+8 <= len(r2.s) && r3.pos+8 <= len(r3.s) {
		r0.refill()
		r1.refill()
		r2.refill()
		r3.refill()
		b0, b1, b2, b3 := r0.bits, r1.bits, r2.bits, r3.bits
		// The four streams' consumed bits, one per 16-bit lane of u.
		var u uint64
		if lo != nil {
			o, l := dst[2*i:2*i+32], lo[i:i+16]
			for k := 0; k < 16; k += 4 {
				e0, e1, e2, e3 := tab[b0&m], tab[b1&m], tab[b2&m], tab[b3&m]
				b0, b1, b2, b3 = b0>>(e0&63), b1>>(e1&63), b2>>(e2&63), b3>>(e3&63)
				u += uint64(e0&0xff) | uint64(e1&0xff)<<16 | uint64(e2&0xff)<<32 | uint64(e3&0xff)<<48
				// Four elements: low bytes from lo, top bytes from the codes.
				w := uint64(binary.LittleEndian.Uint32(l[k:]))
				w = (w | w<<16) & 0x0000ffff0000ffff
				w = (w | w<<8) & 0x00ff00ff00ff00ff
				w |= uint64(e0&0xff00) | uint64(e1&0xff00)<<16 | uint64(e2&0xff00)<<32 | uint64(e3&0xff00)<<48
				binary.LittleEndian.PutUint64(o[2*k:], w)
			}
		} else {
			o := dst[i*stride : (i+16)*stride]
			for k := 0; k < 16; k += 4 {
				e0, e1, e2, e3 := tab[b0&m], tab[b1&m], tab[b2&m], tab[b3&m]
				b0, b1, b2, b3 = b0>>(e0&63), b1>>(e1&63), b2>>(e2&63), b3>>(e3&63)
				u += uint64(e0&0xff) | uint64(e1&0xff)<<16 | uint64(e2&0xff)<<32 | uint64(e3&0xff)<<48
				o[k*stride+off], o[(k+1)*stride+off] = uint8(e0>>8), uint8(e1>>8)
				o[(k+2)*stride+off], o[(k+3)*stride+off] = uint8(e2>>8), uint8(e3>>8)
			}
		}
		r0.bits, r1.bits, r2.bits, r3.bits = b0, b1, b2, b3
		r0.avail -= uint(u & 0xffff)
		r1.avail -= uint(u >> 16 & 0xffff)
		r2.avail -= uint(u >> 32 & 0xffff)
		r3.avail -= uint(u >> 48)
		i += 16
	}
	// Tail, with every read checked.
	for ; i < n; i++ {
		r := &rd[i&3]
		if r.avail < hufMaxLen {
			r.refillSlow()
		}
		e := tab[r.bits&m]
		l := uint(e & 0xff)
		if l > r.avail {
			return fmt.Errorf("%w: Huffman stream ends early", ErrCorrupt)
		}
		r.bits >>= l
		r.avail -= l
		if lo != nil {
			dst[2*i] = lo[i]
		}
		dst[i*stride+off] = uint8(e >> 8)
	}
	// Every stream must end within its last byte, and the padding be zero.
	for j := range rd {
		r := &rd[j]
		if r.pos != len(r.s) || r.avail >= 8 || r.bits&(1<<r.avail-1) != 0 {
			return fmt.Errorf("%w: Huffman stream %d does not end cleanly", ErrCorrupt, j)
		}
	}
	return nil
}
