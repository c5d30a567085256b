package codec

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/pierrec/lz4/v4"
)

// Lossless payload: one method byte, then
//
//	lossStored:  the raw bytes
//	lossBytes:   lz4 block of the byte-plane shuffle (byte k of every element together)
//	lossBits:    lz4 block of the bit-plane shuffle (bit p of every 8 elements together)
//	lossTop:     the top byte of every element entropy-coded, the other bytes stored:
//	             Huffman table and streams (huff.go) of the n top bytes, u32 length
//	             before them; then planes 0 … es−2 (byte k of every element), n bytes each
//
// In fp16 and bf16 the top byte holds the sign, the exponent and one or two
// mantissa bits and is skewed (≈ 5.6 bits of entropy on real KV), while the
// low byte is close to uniform: coding only the top byte keeps decode fast.
// The encoder writes lossTop, or lossBytes where the data has structure
// that lz4 finds (low bytes far from uniform, e.g. zero padding) and it is
// smaller; stored is the fallback, so a payload is never more than one byte
// longer than the block. lossBits is no longer written (its decode is slow)
// but still read.
const (
	lossStored = 0
	lossBytes  = 1
	lossBits   = 2
	lossTop    = 3
)

func losslessMaxPayload(size int) int { return 1 + size }

func encodeLossless(dst []byte, l Layout, raw []byte, sc *scratch) ([]byte, error) {
	es := l.DType.Size()
	n := len(raw) / es
	start := len(dst)
	// Histograms of the top byte and of byte 0 (the most uniform one).
	top, low := &sc.counts, &sc.counts2
	*top, *low = [256]uint32{}, [256]uint32{}
	for i := es - 1; i < len(raw); i += es {
		top[raw[i]]++
		low[raw[i-es+1]]++
	}
	htop, hlow := entropyBits(top, n), entropyBits(low, n)
	best := 1 + len(raw) // stored
	if n > 0 {
		hc := &sc.huf
		hc.build(top)
		dst = append(dst, lossTop)
		dst = hc.appendTable(dst)
		sl := len(dst)
		dst = grow(dst, 4)
		buf := resize(&sc.buf, hufStreamsMax(n))
		dst = hc.encode(dst, buf, raw, es, es-1, n)
		binary.LittleEndian.PutUint32(dst[sl:], uint32(len(dst)-sl-4))
		if size := len(dst) - start + (es-1)*n; size < best {
			p := len(dst)
			dst = grow(dst, (es-1)*n)
			if es == 2 {
				evenBytes(dst[p:p+n], raw)
			} else {
				for k := 0; k < es-1; k++ {
					pl := dst[p+k*n : p+(k+1)*n]
					for i := range pl {
						pl[i] = raw[i*es+k]
					}
				}
			}
			best = len(dst) - start
		} else {
			dst = dst[:start]
		}
	}
	// lz4 on the byte planes where the bytes are far from uniform.
	if hlow < 7 || htop < 1 {
		sh := resize(&sc.shuf, len(raw))
		byteShuffle(sh, raw, es)
		cbuf := resize(&sc.lz, lz4.CompressBlockBound(len(raw)))
		k, err := sc.lz4c.CompressBlock(sh, cbuf)
		if err != nil {
			return dst[:start], fmt.Errorf("codec: lz4: %w", err)
		}
		if k > 0 && 1+k < best {
			dst = append(append(dst[:start], lossBytes), cbuf[:k]...)
			best = 1 + k
		}
	}
	if best == 1+len(raw) {
		dst = append(append(dst[:start], lossStored), raw...)
	}
	return dst, nil
}

// entropyBits is the order-0 entropy, in bits per symbol, of n samples with
// histogram c.
func entropyBits(c *[256]uint32, n int) float64 {
	if n == 0 {
		return 0
	}
	var h float64
	for _, k := range c {
		if k != 0 {
			p := float64(k) / float64(n)
			h -= p * math.Log2(p)
		}
	}
	return h
}

func decodeLossless(dst []byte, h Header, payload []byte, sc *scratch) ([]byte, error) {
	if len(payload) < 1 {
		return dst, fmt.Errorf("%w: empty lossless payload", ErrCorrupt)
	}
	n := int(h.RawLen)
	es := h.Layout.DType.Size()
	method, body := payload[0], payload[1:]
	switch method {
	case lossStored:
		if len(body) != n {
			return dst, fmt.Errorf("%w: stored payload is %d bytes, want %d", ErrCorrupt, len(body), n)
		}
		return append(dst, body...), nil
	case lossTop:
		return decodeTop(dst, n, es, body, sc)
	case lossBytes, lossBits:
	default:
		return dst, fmt.Errorf("%w: lossless method %d", ErrCorrupt, method)
	}
	// lz4 expands at most 255:1; a shorter body cannot hold n bytes.
	if len(body) == 0 || n/255 > len(body) {
		return dst, fmt.Errorf("%w: %d-byte lz4 body cannot hold %d bytes", ErrCorrupt, len(body), n)
	}
	sh := resize(&sc.shuf, n)
	k, err := lz4.UncompressBlock(body, sh)
	if err != nil || k != n {
		return dst, fmt.Errorf("%w: lz4 body (%d of %d bytes): %v", ErrCorrupt, k, n, err)
	}
	start := len(dst)
	dst = grow(dst, n)
	out := dst[start:]
	if method == lossBytes {
		byteUnshuffle(out, sh, es)
	} else {
		bitUnshuffle(out, sh, es)
	}
	return dst, nil
}

// decodeTop decodes a lossTop body into n bytes appended to dst.
func decodeTop(dst []byte, n, es int, body []byte, sc *scratch) ([]byte, error) {
	hc := &sc.huf
	k, err := hc.readTable(body)
	if err != nil {
		return dst, err
	}
	body = body[k:]
	if len(body) < 4 {
		return dst, fmt.Errorf("%w: short lossless stream header", ErrCorrupt)
	}
	sl := int(binary.LittleEndian.Uint32(body))
	ne := n / es
	if sl > len(body)-4 || len(body)-4-sl != (es-1)*ne {
		return dst, fmt.Errorf("%w: lossless streams of %d bytes in a %d-byte body", ErrCorrupt, sl, len(body))
	}
	streams, planes := body[4:4+sl], body[4+sl:]
	start := len(dst)
	dst = grow(dst, n)
	out := dst[start:]
	switch es {
	case 1:
		err = hc.decode(out, 1, 0, ne, nil, streams)
	case 2:
		err = hc.decode(out, 2, 1, ne, planes, streams)
	default:
		for k := 0; k < es-1; k++ {
			for i, b := range planes[k*ne : (k+1)*ne] {
				out[i*es+k] = b
			}
		}
		err = hc.decode(out, es, es-1, ne, nil, streams)
	}
	if err != nil {
		return dst[:start], err
	}
	return dst, nil
}

// evenBytes sets lo[i] = raw[2i].
func evenBytes(lo, raw []byte) {
	n := len(lo)
	raw = raw[:2*n]
	i := 0
	for ; i+8 <= n; i += 8 {
		a := binary.LittleEndian.Uint64(raw[2*i:]) & 0x00ff00ff00ff00ff
		b := binary.LittleEndian.Uint64(raw[2*i+8:]) & 0x00ff00ff00ff00ff
		a = (a | a>>8) & 0x0000ffff0000ffff
		b = (b | b>>8) & 0x0000ffff0000ffff
		a = (a | a>>16) & 0xffffffff
		b = (b | b>>16) & 0xffffffff
		binary.LittleEndian.PutUint64(lo[i:], a|b<<32)
	}
	for ; i < n; i++ {
		lo[i] = raw[2*i]
	}
}

// byteShuffle writes byte k of element i to dst[k*n/es + i].
func byteShuffle(dst, src []byte, es int) {
	n := len(src) / es
	switch es {
	case 1:
		copy(dst, src)
	case 2:
		lo, hi := dst[:n], dst[n:2*n]
		for i := range lo {
			lo[i] = src[2*i]
			hi[i] = src[2*i+1]
		}
	default:
		for k := 0; k < es; k++ {
			p := dst[k*n : (k+1)*n]
			for i := range p {
				p[i] = src[i*es+k]
			}
		}
	}
}

func byteUnshuffle(dst, src []byte, es int) {
	n := len(dst) / es
	switch es {
	case 1:
		copy(dst, src)
	case 2:
		lo, hi := src[:n], src[n:2*n]
		for i := range lo {
			dst[2*i] = lo[i]
			dst[2*i+1] = hi[i]
		}
	default:
		for k := 0; k < es; k++ {
			p := src[k*n : (k+1)*n]
			for i := range p {
				dst[i*es+k] = p[i]
			}
		}
	}
}

// transpose8 transposes an 8×8 bit matrix held in a uint64 (row i = byte i).
func transpose8(x uint64) uint64 {
	t := (x ^ (x >> 7)) & 0x00AA00AA00AA00AA
	x ^= t ^ (t << 7)
	t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCC
	x ^= t ^ (t << 14)
	t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0
	x ^= t ^ (t << 28)
	return x
}

// bitShuffle groups the elements in blocks of 8; for every byte k and bit b of
// an element, plane 8k+b gets one byte per block holding that bit of the 8
// elements. Plane p occupies dst[p*nb : (p+1)*nb], nb = elements/8. A tail of
// fewer than 8 elements is copied as is after the planes.
func bitShuffle(dst, src []byte, es int) {
	n := len(src) / es
	nb := n / 8
	for blk := 0; blk < nb; blk++ {
		base := blk * 8 * es
		for k := 0; k < es; k++ {
			var x uint64
			for i := 0; i < 8; i++ {
				x |= uint64(src[base+i*es+k]) << (8 * i)
			}
			x = transpose8(x)
			for b := 0; b < 8; b++ {
				dst[(8*k+b)*nb+blk] = byte(x >> (8 * b))
			}
		}
	}
	copy(dst[nb*8*es:], src[nb*8*es:])
}

func bitUnshuffle(dst, src []byte, es int) {
	n := len(dst) / es
	nb := n / 8
	for blk := 0; blk < nb; blk++ {
		base := blk * 8 * es
		for k := 0; k < es; k++ {
			var x uint64
			for b := 0; b < 8; b++ {
				x |= uint64(src[(8*k+b)*nb+blk]) << (8 * b)
			}
			x = transpose8(x)
			for i := 0; i < 8; i++ {
				dst[base+i*es+k] = byte(x >> (8 * i))
			}
		}
	}
	copy(dst[nb*8*es:], src[nb*8*es:])
}
