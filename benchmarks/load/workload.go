package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// Errors returned by this package, wrapped with detail; test with errors.Is.
var (
	// ErrInvalid: a workload or scenario that cannot run.
	ErrInvalid = errors.New("load: invalid configuration")
	// ErrMiss: a get of a key the target does not hold (counted, not an
	// error: the hit ratio asks for misses).
	ErrMiss = errors.New("load: miss")
)

// Op kinds.
const (
	OpGet = iota
	OpPut
	OpLookup
)

// Mix is the share of each operation; the shares sum to 1.
type Mix struct{ Get, Put, Lookup float64 }

// ParseMix parses "get=0.8,put=0.1,lookup=0.1"; missing operations get 0
// and the shares are normalized to sum to 1.
func ParseMix(s string) (Mix, error) {
	var m Mix
	for _, part := range strings.Split(s, ",") {
		name, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		f, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil || !(f >= 0) || math.IsInf(f, 0) { // !(f >= 0) also rejects NaN
			return m, fmt.Errorf("%w: mix %q: want op=share,... with shares >= 0", ErrInvalid, s)
		}
		switch name {
		case "get":
			m.Get = f
		case "put":
			m.Put = f
		case "lookup":
			m.Lookup = f
		default:
			return m, fmt.Errorf("%w: mix %q: unknown op %q (want get, put, lookup)", ErrInvalid, s, name)
		}
	}
	sum := m.Get + m.Put + m.Lookup
	if !(sum > 0) || math.IsInf(sum, 0) {
		return m, fmt.Errorf("%w: mix %q: the shares sum to 0 or overflow", ErrInvalid, s)
	}
	return Mix{m.Get / sum, m.Put / sum, m.Lookup / sum}, nil
}

func (m Mix) String() string {
	return fmt.Sprintf("get=%g,put=%g,lookup=%g", m.Get, m.Put, m.Lookup)
}

// Workload is what every target is asked: the mix, the block size, a key
// space of Keys blocks of which gets hit a HitRatio share (the others ask
// for keys never stored), drawn from Seed so every target and every run
// sees the same sequence.
type Workload struct {
	Mix        Mix
	BlockBytes int
	Keys       int
	HitRatio   float64
	Seed       uint64

	keys   *keys // 2*Keys: the second half is never stored
	layout *pb.Layout
	value  []byte
}

// NewWorkload validates w's fields and prepares its keys and value.
func NewWorkload(mix Mix, blockBytes, nkeys int, hitRatio float64, seed uint64) (*Workload, error) {
	if nkeys < 1 || nkeys > 1<<20 {
		return nil, fmt.Errorf("%w: key space %d not in 1..1Mi", ErrInvalid, nkeys)
	}
	if hitRatio < 0 || hitRatio > 1 {
		return nil, fmt.Errorf("%w: hit ratio %g not in 0..1", ErrInvalid, hitRatio)
	}
	if int64(blockBytes)*int64(nkeys) > 8<<30 {
		return nil, fmt.Errorf("%w: %d keys of %d bytes exceed 8 GiB", ErrInvalid, nkeys, blockBytes)
	}
	l, err := layoutFor(blockBytes)
	if err != nil {
		return nil, err
	}
	w := &Workload{Mix: mix, BlockBytes: blockBytes, Keys: nkeys, HitRatio: hitRatio, Seed: seed,
		keys: newKeys(2 * nkeys), layout: l, value: make([]byte, blockBytes)}
	for i := range w.value {
		w.value[i] = byte(i*131 + i>>12)
	}
	return w, nil
}

// opGen draws one worker's operations.
type opGen struct {
	w   *Workload
	rng *rand.Rand
}

func (w *Workload) gen(worker int) opGen {
	return opGen{w: w, rng: rand.New(rand.NewPCG(w.Seed, uint64(worker)+1))}
}

// next returns an operation kind and its key.
func (g opGen) next() (kind, key int) {
	u := g.rng.Float64()
	key = g.rng.IntN(g.w.Keys)
	switch {
	case u < g.w.Mix.Get:
		if g.rng.Float64() >= g.w.HitRatio {
			key += g.w.Keys
		}
		return OpGet, key
	case u < g.w.Mix.Get+g.w.Mix.Put:
		return OpPut, key
	default:
		return OpLookup, key
	}
}

// Load stores the workload's stored keys through d (with 4 connections)
// and checks that one reads back intact.
func (w *Workload) Load(ctx context.Context, d Dialer) error {
	const loaders = 4
	errs := make(chan error, loaders)
	for l := range loaders {
		go func() {
			c, err := d(ctx)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for i := l; i < w.Keys; i += loaders {
				if err := c.Put(ctx, i, w.value); err != nil && !benign(err) {
					errs <- fmt.Errorf("load: put %d: %w", i, err)
					return
				}
			}
			errs <- nil
		}()
	}
	var first error
	for range loaders {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return first
	}
	c, err := d(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	got, err := c.Get(ctx, 0, make([]byte, w.BlockBytes))
	if err != nil {
		return fmt.Errorf("load: reading back: %w", err)
	}
	if !bytes.Equal(got, w.value) {
		return fmt.Errorf("load: block 0 reads back %d bytes that differ from what was put", len(got))
	}
	return nil
}

// benign is an outcome the workload asks for: a miss, or a put of a block
// that is already there.
func benign(err error) bool {
	if errors.Is(err, ErrMiss) {
		return true
	}
	switch status.Code(err) {
	case codes.NotFound, codes.AlreadyExists:
		return true
	}
	return false
}
