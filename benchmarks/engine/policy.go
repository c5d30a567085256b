package engine

import (
	"fmt"
	"math"
	"sort"
)

// Policy picks, per layer, the blocks a sparse decode step reads beyond the
// sink block and the recent window, which the engine always keeps. It sees
// only what attention read (partial observations): Observe gets the mass
// of the blocks read, and blocks it did not read are absent.
//
// The prefetcher's policies (scores, queries, scores+queries, fed through
// the daemon's Hint stream) are to implement this interface too.
type Policy interface {
	Name() string
	// Reset starts a new request.
	Reset()
	// Observe gets layer l's attention mass per block at position pos;
	// mass[b] < 0 for blocks that were not read.
	Observe(l, pos int, mass []float64)
	// Select appends to dst up to k blocks of candidates (completed blocks,
	// sink and recent window excluded) for layer l's next step; q, keys is
	// the next step's query and the true keys, given only to an Oracle.
	Select(l int, candidates []int, k int, dst []int) []int
}

// Oracle marks a policy that selects with the step's own query and the
// true keys (a quality bound, not a deployable policy): the engine calls
// SelectOracle instead of Select, at the step itself.
type Oracle interface {
	SelectOracle(l, pos int, q []float32, s *Session, candidates []int, k int, dst []int) []int
}

// NewPolicy returns a policy by name: lru, oracle, or scores (the
// engine's own decayed observed mass, standing in until the prefetcher's
// is wired).
func NewPolicy(name string, layers int) (Policy, error) {
	switch name {
	case "lru":
		return lru{}, nil
	case "oracle":
		return oracle{}, nil
	case "scores":
		return &decayed{decay: 0.8, layers: layers}, nil
	}
	return nil, fmt.Errorf("%w: unknown policy %q (lru, oracle, scores; queries and scores+queries come with the prefetcher)", ErrInput, name)
}

// lru keeps the most recently completed blocks: with a sink, StreamingLLM.
type lru struct{}

func (lru) Name() string                { return "lru" }
func (lru) Reset()                      {}
func (lru) Observe(int, int, []float64) {}
func (lru) Select(_ int, c []int, k int, dst []int) []int {
	for i := len(c) - 1; i >= 0 && k > 0; i-- {
		dst = append(dst, c[i])
		k--
	}
	return dst
}

// oracle reads the blocks with the most attention mass under full
// attention at this very step.
type oracle struct{}

func (oracle) Name() string                        { return "oracle" }
func (oracle) Reset()                              {}
func (oracle) Observe(int, int, []float64)         {}
func (oracle) Select(int, []int, int, []int) []int { return nil }

func (oracle) SelectOracle(l, pos int, q []float32, s *Session, cands []int, k int, dst []int) []int {
	mass := s.FullMass(l, pos, q)
	return topK(cands, k, func(b int) float64 { return mass[b] }, dst)
}

// decayed keeps an exponentially decayed attention mass per block from
// what attention read; a block not read keeps its last value.
type decayed struct {
	decay  float64
	layers int
	score  [][]float64
}

func (d *decayed) Name() string { return "scores" }
func (d *decayed) Reset()       { d.score = make([][]float64, d.layers) }
func (d *decayed) Observe(l, _ int, mass []float64) {
	sc := d.score[l]
	for len(sc) < len(mass) {
		sc = append(sc, math.Inf(1)) // unseen blocks first
	}
	for b, m := range mass {
		if m < 0 {
			continue
		}
		if math.IsInf(sc[b], 1) {
			sc[b] = m
		} else {
			sc[b] = d.decay*sc[b] + (1-d.decay)*m
		}
	}
	d.score[l] = sc
}

func (d *decayed) Select(l int, c []int, k int, dst []int) []int {
	sc := d.score[l]
	return topK(c, k, func(b int) float64 {
		if b < len(sc) {
			return sc[b]
		}
		return math.Inf(1)
	}, dst)
}

// topK appends the k candidates with the highest score.
func topK(c []int, k int, score func(int) float64, dst []int) []int {
	if k >= len(c) {
		return append(dst, c...)
	}
	tmp := append([]int(nil), c...)
	sort.SliceStable(tmp, func(i, j int) bool { return score(tmp[i]) > score(tmp[j]) })
	return append(dst, tmp[:k]...)
}

// FullMass returns layer l's attention mass per block at position pos
// under full attention over the cache (summed over heads), for the oracle.
func (s *Session) FullMass(l, pos int, q []float32) []float64 {
	c := s.m.Config
	hd := c.HeadDim()
	nb := pos/BlockTokens + 1
	mass := make([]float64, nb)
	scale := 1 / math.Sqrt(float64(hd))
	group := c.Heads / c.KVHeads
	sc := make([]float64, pos+1)
	for h := 0; h < c.Heads; h++ {
		K := s.K[l][(h/group)*c.SeqLen*hd:]
		mx := math.Inf(-1)
		for t := 0; t <= pos; t++ {
			sc[t] = float64(dot(q[h*hd:(h+1)*hd], K[t*hd:(t+1)*hd])) * scale
			mx = max(mx, sc[t])
		}
		var sum float64
		for t := range sc {
			sc[t] = math.Exp(sc[t] - mx)
			sum += sc[t]
		}
		for t := range sc {
			mass[t/BlockTokens] += sc[t] / sum
		}
	}
	return mass
}
