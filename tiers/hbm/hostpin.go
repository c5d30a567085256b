package hbm

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/kvtier/kvtier/cgo/gpu"
)

// Host registration. Page-locking a whole DRAM arena at start makes the
// driver fault in and pin every page at once: slow, it commits the whole
// arena, and a shortage may bring the OOM killer instead of an error. The
// tier instead registers the region's chunks as its copies first touch
// them, so only memory that is used gets pinned, one chunk at a time.

// WithHostRegion makes the tier page-lock region (memory outside the Go
// heap that blocks are copied from and to: the DRAM arena) lazily, in
// chunk-sized pieces aligned to region's start, as Put and Get first touch
// them. A copy spanning two chunks registers both; the driver may stage
// such a copy. The tier unregisters what it registered in ReleaseHost or
// Close, before the caller unmaps region.
func WithHostRegion(region []byte, chunk int64) Option {
	return func(c *config) { c.hostRegion, c.hostChunk = region, chunk }
}

// Chunk states.
const (
	pinNone uint32 = iota
	pinDone
	pinFailed // registration failed: copies from the chunk are staged
)

// hostPins registers chunks of one host region on first use.
type hostPins struct {
	dev    gpu.Device
	region []byte
	base   uintptr
	chunk  int64
	state  []atomic.Uint32 // per chunk; read without mu on the fast path
	pinned atomic.Int64    // bytes registered now

	mu       sync.Mutex // protects unreg, released and firstErr; serializes registration
	unreg    []func() error
	released bool
	firstErr error
}

func newHostPins(dev gpu.Device, region []byte, chunk int64) (*hostPins, error) {
	if len(region) == 0 {
		return nil, nil
	}
	if chunk <= 0 {
		return nil, fmt.Errorf("hbm: host registration chunk %d is not positive", chunk)
	}
	n := (int64(len(region)) + chunk - 1) / chunk
	return &hostPins{
		dev: dev, region: region, chunk: chunk,
		base:  uintptr(unsafe.Pointer(unsafe.SliceData(region))),
		state: make([]atomic.Uint32, n),
		unreg: make([]func() error, n),
	}, nil
}

// ensure registers the chunks b lies in, when b is inside the region.
// It allocates nothing once every touched chunk is registered.
func (p *hostPins) ensure(b []byte) {
	if p == nil || len(b) == 0 {
		return
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if start < p.base || start-p.base >= uintptr(len(p.region)) {
		return
	}
	first := int64(start-p.base) / p.chunk
	last := min(int64(start-p.base)+int64(len(b))-1, int64(len(p.region))-1) / p.chunk
	for c := first; c <= last; c++ {
		if p.state[c].Load() == pinNone {
			p.register(c)
		}
	}
}

func (p *hostPins) register(c int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released || p.state[c].Load() != pinNone {
		return
	}
	lo := c * p.chunk
	hi := min(lo+p.chunk, int64(len(p.region)))
	unreg, err := p.dev.RegisterHost(p.region[lo:hi])
	if err != nil {
		p.state[c].Store(pinFailed)
		if p.firstErr == nil {
			p.firstErr = fmt.Errorf("hbm: page-locking host bytes %d..%d: %w", lo, hi, err)
		}
		return
	}
	p.unreg[c] = unreg
	p.pinned.Add(hi - lo)
	p.state[c].Store(pinDone)
}

// release unregisters every registered chunk; later copies are not
// registered again.
func (p *hostPins) release() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.released = true
	var err error
	for c, u := range p.unreg {
		if u == nil {
			continue
		}
		if uerr := u(); uerr != nil {
			err = errors.Join(err, fmt.Errorf("hbm: unregistering host memory: %w", uerr))
		}
		p.unreg[c] = nil
		lo := int64(c) * p.chunk
		p.pinned.Add(-(min(lo+p.chunk, int64(len(p.region))) - lo))
		p.state[c].Store(pinNone)
	}
	return err
}

// HostPinned reports the bytes of the WithHostRegion region page-locked
// now, and the first registration failure (copies from chunks that failed
// are staged by the driver, slower but correct).
func (t *Tier) HostPinned() (bytes int64, err error) {
	if t.pins == nil {
		return 0, nil
	}
	t.pins.mu.Lock()
	defer t.pins.mu.Unlock()
	return t.pins.pinned.Load(), t.pins.firstErr
}

// ReleaseHost unregisters the host region (WithHostRegion); call it before
// unmapping the region if the tier outlives it. Close does it too.
func (t *Tier) ReleaseHost() error { return t.pins.release() }
