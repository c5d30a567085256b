package codec

import (
	"encoding/binary"
	"fmt"

	"github.com/pierrec/lz4/v4"
)

// Lossless payload: one method byte, then
//
//	lossStored:  the raw bytes
//	lossBytes:   lz4 block of the byte-plane shuffle (byte k of every element together)
//	lossBits:    lz4 block of the bit-plane shuffle (bit p of every 8 elements together)
//
// The encoder keeps the smallest; stored is the fallback, so a payload is never
// more than one byte longer than the block.
const (
	lossStored = 0
	lossBytes  = 1
	lossBits   = 2
)

func losslessMaxPayload(size int) int { return 1 + size }

func encodeLossless(dst []byte, l Layout, raw []byte, sc *scratch) ([]byte, error) {
	es := l.DType.Size()
	n := len(raw)
	sh := sc.bytes(&sc.shuf, n)
	bound := lz4.CompressBlockBound(n)
	cbuf := sc.bytes(&sc.lz, bound)
	bestMethod, bestLen := lossStored, n
	var best []byte
	try := func(method int) error {
		if method == lossBytes {
			byteShuffle(sh, raw, es)
		} else {
			bitShuffle(sh, raw, es)
		}
		k, err := sc.lz4c.CompressBlock(sh, cbuf)
		if err != nil {
			return fmt.Errorf("codec: lz4: %w", err)
		}
		if k > 0 && k < bestLen {
			bestMethod, bestLen = method, k
			best = append(best[:0], cbuf[:k]...)
		}
		return nil
	}
	best = sc.bytes(&sc.best, n)[:0]
	if es > 1 {
		if err := try(lossBytes); err != nil {
			return dst, err
		}
	}
	if err := try(lossBits); err != nil {
		return dst, err
	}
	dst = append(dst, byte(bestMethod))
	if bestMethod == lossStored {
		return append(dst, raw...), nil
	}
	return append(dst, best...), nil
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
	case lossBytes, lossBits:
	default:
		return dst, fmt.Errorf("%w: lossless method %d", ErrCorrupt, method)
	}
	// lz4 expands at most 255:1; a shorter body cannot hold n bytes.
	if len(body) == 0 || n/255 > len(body) {
		return dst, fmt.Errorf("%w: %d-byte lz4 body cannot hold %d bytes", ErrCorrupt, len(body), n)
	}
	sh := sc.bytes(&sc.shuf, n)
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

var _ = binary.LittleEndian
