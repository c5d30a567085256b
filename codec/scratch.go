package codec

import (
	"sync"

	"github.com/pierrec/lz4/v4"
)

// scratch holds the temporary buffers of one encode or decode so that the hot
// path allocates nothing once the pool is warm. One goroutine owns a scratch
// between getScratch and putScratch.
type scratch struct {
	shuf, lz    []byte // lossless
	lz4c        lz4.Compressor
	f           []float32 // one unit as float32
	codes       []uint8   // one unit's codes
	buf         []byte    // one unit's encoded bytes (lz4, rANS, parallel)
	bits        []uint8   // bits per key channel
	w           []float64 // allocation weights
	cmin, cmax  []float32 // per channel bounds
	glo, gscale []float32
	kmin, kmax  []int32 // order keys
	ctr         []int32
	lut         []uint32 // per channel level tables
	counts      [256]uint32
	counts2     [256]uint32
	rm          ransModel
	huf         hufCoder
	pa, pb      []float32 // per channel or group: level base and scale
	pm          []int32   // per channel: largest code
	ccodes      []byte    // token-major codes of a group or unit (SIMD paths)
	t64         []uint64  // transposed codes of one channel block
	cands       []outCand // outlier candidates, one per group
	gains       []float64
	outs        []outEntry
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch   { return scratchPool.Get().(*scratch) }
func putScratch(sc *scratch) { scratchPool.Put(sc) }

// resize returns (*p)[:n], growing *p when its capacity is short.
func resize[T any](p *[]T, n int) []T {
	if cap(*p) < n {
		*p = make([]T, n)
	}
	return (*p)[:n]
}

// reserve returns (*p)[:0] with room for n elements, growing *p when its
// capacity is short.
func reserve[T any](p *[]T, n int) []T {
	if cap(*p) < n {
		*p = make([]T, 0, n)
	}
	return (*p)[:0]
}
