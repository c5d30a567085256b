package engine

import (
	"fmt"
	"math"
	"sort"

	"github.com/kvtier/kvtier/prefetch"
)

// Policy picks, per layer, the blocks a sparse decode step reads beyond the
// sink block and the recent window, which the engine always keeps. It sees
// only what attention read (partial observations): Observe gets the mass
// of the blocks read, and blocks it did not read are absent. The
// prefetcher's policies (prefetch.Request: lru, scores, queries,
// scores+queries) implement it through PrefetchPolicy; Oracle is the
// quality bound.
type Policy interface {
	Name() string
	// Reset starts a new request.
	Reset() error
	// Observe gets layer l's attention mass per block at position pos,
	// summed over query heads; mass[b] < 0 for blocks that were not read.
	Observe(l, pos int, mass []float64) error
	// ObserveQuery gets layer l's post-RoPE query at position pos
	// ([heads][headDim]); the engine plans step pos+1 with it (the query
	// an engine has one step ahead).
	ObserveQuery(l, pos int, q []float32) error
	// ObserveBlock gets layer l's block b as the engine writes it to kvtier
	// (the block layout: fp16, K then V), for key summaries.
	ObserveBlock(l, b int, block []byte) error
	// Select appends to dst up to k blocks of candidates (completed blocks,
	// sink and recent window excluded) for layer l's next step.
	Select(l int, candidates []int, k int, dst []int) ([]int, error)
}

// Oracle marks a policy that selects with the step's own query and the
// true keys (a quality bound, not a deployable policy): the engine calls
// SelectOracle instead of Select, at the step itself.
type Oracle interface {
	SelectOracle(l, pos int, q []float32, s *Session, candidates []int, k int, dst []int) []int
}

// PolicyNames lists the policies NewPolicy knows.
var PolicyNames = []string{"lru", "scores", "queries", "scores+queries", "oracle"}

// NewPolicy returns a policy for model m by name: oracle, or one of the
// prefetcher's (lru, scores, queries, scores+queries).
func NewPolicy(name string, m *Model) (Policy, error) {
	if name == "oracle" {
		return oracle{}, nil
	}
	k, err := prefetch.ParseKind(name)
	if err != nil {
		return nil, fmt.Errorf("%w: unknown policy %q (want one of %v)", ErrInput, name, PolicyNames)
	}
	return NewPrefetchPolicy(m, prefetch.Options{Kind: k})
}

// oracle reads the blocks with the most attention mass under full
// attention at this very step.
type oracle struct{}

func (oracle) Name() string                                 { return "oracle" }
func (oracle) Reset() error                                 { return nil }
func (oracle) Observe(int, int, []float64) error            { return nil }
func (oracle) ObserveQuery(int, int, []float32) error       { return nil }
func (oracle) ObserveBlock(int, int, []byte) error          { return nil }
func (oracle) Select(int, []int, int, []int) ([]int, error) { return nil, nil }

func (oracle) SelectOracle(l, pos int, q []float32, s *Session, cands []int, k int, dst []int) []int {
	mass := s.FullMass(l, pos, q)
	return topK(cands, k, func(b int) float64 { return mass[b] }, dst)
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
