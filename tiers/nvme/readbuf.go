package nvme

import (
	"math/bits"
	"sync"

	"github.com/kvtier/kvtier/tiers/nvme/internal/slab"
)

// Direct read buffers.
//
// A direct read lands in a page-aligned buffer as large as the entry. On
// the Go heap such buffers did not last: a 4 MiB read buffer is most of a
// small heap, so allocating one starts a collection, which empties a
// sync.Pool, so the next read allocates again, and each fresh buffer is
// cleared by the allocator and faulted in page by page by the read. That
// took a 4 MiB read from 0.8 to 1.9 ms on the development VM. readBufs
// keeps them outside the Go heap (anonymous mappings, on Linux), by
// power-of-two size class, a few per class, and unmaps them when the tier
// closes.

const (
	minBufShift   = 16 // the smallest class: 64 KiB
	numBufClasses = 11 // 64 KiB to 64 MiB; a larger read gets a buffer of its own
	keepPerClass  = 8  // buffers kept per class: concurrent reads of one size
)

type readBuf struct {
	b    []byte
	free func() error
}

type readBufs struct {
	mu     sync.Mutex
	free   [numBufClasses][]readBuf
	closed bool
}

// bufClass returns the class whose buffers hold n bytes.
func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// get returns a page-aligned buffer of at least n bytes.
func (c *readBufs) get(n int) (readBuf, error) {
	cls := bufClass(n)
	if cls < numBufClasses {
		c.mu.Lock()
		if l := len(c.free[cls]); l > 0 {
			b := c.free[cls][l-1]
			c.free[cls] = c.free[cls][:l-1]
			c.mu.Unlock()
			return b, nil
		}
		c.mu.Unlock()
		n = 1 << (cls + minBufShift)
	}
	b, free, err := slab.AlignedBuffer(n)
	return readBuf{b: b, free: free}, err
}

// put keeps b for reuse, or frees it.
func (c *readBufs) put(b readBuf) {
	cls := bufClass(len(b.b))
	if cls < numBufClasses && len(b.b) == 1<<(cls+minBufShift) {
		c.mu.Lock()
		if !c.closed && len(c.free[cls]) < keepPerClass {
			c.free[cls] = append(c.free[cls], b)
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
	_ = b.free()
}

// close frees the buffers kept; a buffer put back afterwards is freed.
func (c *readBufs) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for cls := range c.free {
		for _, b := range c.free[cls] {
			_ = b.free()
		}
		c.free[cls] = nil
	}
}
