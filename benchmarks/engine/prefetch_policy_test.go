package engine

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kvtier/kvtier/prefetch"
)

// TestPrefetchScoresFindsHeavyHitters replays a synthetic decode through
// the prefetch-backed policies with partial observations, as the engine
// reports them: blocks complete one at a time, the sink and the newest
// block are always read (so each block is seen while it is recent), and
// otherwise only the policy's picks are read and observed. Blocks 3, 9
// and 12 are heavy hitters (a quarter of the mass each when read); the
// rest get a little noise. Once a heavy hitter has left the recent window,
// scores must keep selecting it; lru (recency) must not, so the pattern
// tells the two apart.
func TestPrefetchScoresFindsHeavyHitters(t *testing.T) {
	m := tinyModel(t)
	heavy := []int{3, 9, 12}
	const blocks, k, steps = 20, 3, 4 // steps per block
	for _, tc := range []struct {
		policy    string
		wantHeavy bool
	}{
		{"scores", true},
		{"lru", false},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			pol, err := NewPolicy(tc.policy, m)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			var sel []int
			missed := 0
			for n := 2; n <= blocks; n++ { // n completed blocks; block n is being written
				var cands []int
				for b := 1; b < n-1; b++ {
					cands = append(cands, b)
				}
				for s := range steps {
					pos := n*BlockTokens + s
					var err error
					if sel, err = pol.Select(0, cands, k, sel[:0]); err != nil {
						t.Fatal(err)
					}
					var want []int
					for _, h := range heavy {
						if h < n-1 {
							want = append(want, h)
						}
					}
					got := slices.Clone(sel)
					slices.Sort(got)
					if !isSubset(want, got) {
						missed++
						if tc.wantHeavy && n > heavy[len(heavy)-1]+2 {
							t.Fatalf("%d blocks: selected %v, want the heavy hitters %v among them", n, sel, want)
						}
					}
					mass := make([]float64, n+1)
					for b := range mass {
						mass[b] = -1
					}
					read := append([]int{0, n - 1, n}, sel...)
					for _, b := range read {
						mass[b] = 0.01 + 0.02*rng.Float64()
						if slices.Contains(heavy, b) {
							mass[b] = 0.25
						}
						mass[b] *= float64(m.Heads) // Observe gets the sum over heads
					}
					if err := pol.Observe(0, pos, mass); err != nil {
						t.Fatal(err)
					}
				}
			}
			if !tc.wantHeavy && missed == 0 {
				t.Fatalf("%s selected every heavy hitter at every step: the pattern does not tell policies apart", tc.policy)
			}
		})
	}
}

func isSubset(a, b []int) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// TestPrefetchPolicyQueries: the queries policy ranks by the key
// summaries the engine hands over, so a query aligned with one block's keys
// selects it even though no attention was ever observed.
func TestPrefetchPolicyQueries(t *testing.T) {
	m := tinyModel(t)
	pol, err := NewPolicy("queries", m)
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewSession()
	const n = 6
	hd := m.HeadDim()
	// Every key of every block is small noise, except block 4's, along
	// channel 0, which the query points at.
	rng := rand.New(rand.NewPCG(3, 4))
	for l := range m.Layers {
		for i := range s.K[l] {
			s.K[l][i] = 0.05 * float32(rng.NormFloat64())
		}
		for h := range m.KVHeads {
			for tk := 4 * BlockTokens; tk < 5*BlockTokens; tk++ {
				s.K[l][(h*m.SeqLen+tk)*hd] = 4
			}
		}
	}
	s.N = n * BlockTokens
	for b := range n {
		blk, err := s.AppendBlock(nil, 0, b*BlockTokens, BlockTokens)
		if err != nil {
			t.Fatal(err)
		}
		if err := pol.ObserveBlock(0, b, blk); err != nil {
			t.Fatal(err)
		}
	}
	q := make([]float32, m.Heads*hd)
	for h := range m.Heads {
		q[h*hd] = 3
	}
	if err := pol.ObserveQuery(0, n*BlockTokens, q); err != nil {
		t.Fatal(err)
	}
	sel, err := pol.Select(0, []int{1, 2, 3, 4}, 1, nil)
	if err != nil || !slices.Equal(sel, []int{4}) {
		t.Fatalf("selected %v (%v), want [4]", sel, err)
	}
	if err := pol.ObserveQuery(0, 0, q[:5]); !errors.Is(err, prefetch.ErrInvalid) {
		t.Fatalf("short query: %v", err)
	}
	if err := pol.ObserveBlock(0, 0, make([]byte, 3)); err == nil {
		t.Fatal("a 3-byte block was summarized")
	}
}

// TestPrefetchScoresRemembersUnread: with partial observations a block the
// engine stopped reading keeps its importance. Blocks 3 and 9 are hot and
// block 12 warm; with room for two picks, 12 is not read once it leaves
// the recent window. When block 3 cools, the policy must come back to 12
// (a policy that decays unread blocks every step has forgotten it).
func TestPrefetchScoresRemembersUnread(t *testing.T) {
	m := tinyModel(t)
	pol, err := NewPolicy("scores", m)
	if err != nil {
		t.Fatal(err)
	}
	heat := map[int]float64{3: 0.3, 9: 0.3, 12: 0.15}
	const blocks, k = 16, 2
	var sel []int
	step := func(n, pos int) []int {
		var cands []int
		for b := 1; b < n-1; b++ {
			cands = append(cands, b)
		}
		var err error
		if sel, err = pol.Select(0, cands, k, sel[:0]); err != nil {
			t.Fatal(err)
		}
		mass := make([]float64, n+1)
		for b := range mass {
			mass[b] = -1
		}
		for _, b := range append([]int{0, n - 1, n}, sel...) {
			mass[b] = (0.01 + heat[b]) * float64(m.Heads)
		}
		if err := pol.Observe(0, pos, mass); err != nil {
			t.Fatal(err)
		}
		got := slices.Clone(sel)
		slices.Sort(got)
		return got
	}
	var got []int
	for n := 2; n <= blocks; n++ {
		for s := range 4 {
			got = step(n, n*BlockTokens+s)
		}
	}
	if !slices.Equal(got, []int{3, 9}) {
		t.Fatalf("hot phase: selected %v, want [3 9]", got)
	}
	heat[3] = 0
	for s := range 3 {
		got = step(blocks, blocks*BlockTokens+4+s)
	}
	if !slices.Equal(got, []int{9, 12}) {
		t.Fatalf("block 3 cooled: selected %v, want [9 12] (block 12 remembered)", got)
	}
}
