package prefetch

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// synthetic is a trace where the answer is known: a few heavy-hitter
// blocks take most of the mass at every step, the newest block takes a
// recency share, and the rest is noise.
type synthetic struct {
	nBlocks int
	heavy   []int
	rng     *rand.Rand
}

func (s synthetic) step() []float32 {
	m := make([]float32, s.nBlocks)
	for b := range m {
		m[b] = 0.1 * float32(s.rng.Float64()) / float32(s.nBlocks)
	}
	for _, h := range s.heavy {
		m[h] += 0.6 / float32(len(s.heavy))
	}
	m[s.nBlocks-1] += 0.2
	return m
}

func all(n int) []uint32 {
	idx := make([]uint32, n)
	for i := range idx {
		idx[i] = uint32(i)
	}
	return idx
}

func recallOf(sel []uint32, mass []float32) float64 {
	var r float64
	for _, b := range sel {
		r += float64(mass[b])
	}
	return r
}

func TestScoresFindHeavyHitters(t *testing.T) {
	syn := synthetic{nBlocks: 64, heavy: []int{5, 17, 30, 41}, rng: rand.New(rand.NewPCG(3, 4))}
	scores, err := NewRequest(Shape{Layers: 2}, Options{Kind: Scores})
	if err != nil {
		t.Fatal(err)
	}
	lru, err := NewRequest(Shape{Layers: 2}, Options{Kind: LRU})
	if err != nil {
		t.Fatal(err)
	}
	budget := len(syn.heavy) + 2 // the heavy hitters, the sink and the newest block
	var recallScores, recallLRU float64
	for step := range uint64(20) {
		mass := syn.step()
		if step > 0 { // from the second step on, the history is known
			sel, err := scores.Select(nil, 1, syn.nBlocks, budget)
			if err != nil {
				t.Fatal(err)
			}
			want := []uint32{0, uint32(syn.nBlocks - 1)}
			for _, h := range syn.heavy {
				want = append(want, uint32(h))
			}
			got := slices.Clone(sel)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("step %d: selected %v, want %v", step, got, want)
			}
			recallScores += recallOf(sel, mass)
			sel, err = lru.Select(nil, 1, syn.nBlocks, budget)
			if err != nil {
				t.Fatal(err)
			}
			recallLRU += recallOf(sel, mass)
		}
		if err := scores.ObserveMass(1, step, all(syn.nBlocks), mass); err != nil {
			t.Fatal(err)
		}
	}
	if recallScores < 0.75*19 || recallScores < 2*recallLRU {
		t.Fatalf("recall: scores %.3f, lru %.3f over 19 steps", recallScores/19, recallLRU/19)
	}
}

func TestLRUSelectsSinkThenNewest(t *testing.T) {
	r, err := NewRequest(Shape{Layers: 1}, Options{Kind: LRU, Sink: 2, Recent: 1})
	if err != nil {
		t.Fatal(err)
	}
	sel, err := r.Select(nil, 0, 10, 5)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint32{0, 1, 9, 8, 7}; !slices.Equal(sel, want) {
		t.Fatalf("selected %v, want %v", sel, want)
	}
	// A budget larger than the request takes every block once.
	sel, _ = r.Select(sel[:0], 0, 3, 8)
	if want := []uint32{0, 1, 2}; !slices.Equal(sel, want) {
		t.Fatalf("selected %v, want %v", sel, want)
	}
}

func TestDecayAndPartialObservations(t *testing.T) {
	const d = 0.5
	r, err := NewRequest(Shape{Layers: 1}, Options{Kind: Scores, Decay: d, Sink: -1, Recent: -1})
	if err != nil {
		t.Fatal(err)
	}
	// Step 1: block 2 is hot. Step 2 reports only block 5 (a partial,
	// top-1 report) in two calls that add up. Step 4: nothing reported for 3.
	must(t, r.ObserveMass(0, 1, []uint32{2, 3}, []float32{0.8, 0.1}))
	must(t, r.ObserveMass(0, 2, []uint32{5}, []float32{0.5}))
	must(t, r.ObserveMass(0, 2, []uint32{5}, []float32{0.4}))
	imp := r.layers[0].imp
	want := map[int]float64{2: d * (1 - d) * 0.8, 3: d * (1 - d) * 0.1, 5: (1 - d) * 0.9}
	for b, w := range want {
		if math.Abs(float64(imp[b])-w) > 1e-6 {
			t.Fatalf("importance of block %d = %v, want %v", b, imp[b], w)
		}
	}
	sel, err := r.Select(nil, 0, 8, 2)
	must(t, err)
	if !slices.Equal(sel, []uint32{5, 2}) {
		t.Fatalf("selected %v, want [5 2]", sel)
	}
	// A late report for step 1 counts as one step old.
	must(t, r.ObserveMass(0, 1, []uint32{7}, []float32{1}))
	if got, w := r.layers[0].imp[7], d*(1-d); math.Abs(float64(got)-w) > 1e-6 {
		t.Fatalf("late report: importance %v, want %v", got, w)
	}
}

func TestRequestRejectsBadInput(t *testing.T) {
	r, err := NewRequest(Shape{Layers: 2, QHeads: 4, KVHeads: 2, HeadDim: 8}, Options{})
	must(t, err)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"layer out of range", func() error { return r.ObserveMass(2, 0, nil, nil) }},
		{"negative layer", func() error { return r.ObserveQuery(-1, make([]float32, 32)) }},
		{"masses and blocks differ", func() error { return r.ObserveMass(0, 0, []uint32{1}, nil) }},
		{"negative mass", func() error { return r.ObserveMass(0, 0, []uint32{1}, []float32{-1}) }},
		{"NaN mass", func() error { return r.ObserveMass(0, 0, []uint32{1}, []float32{float32(math.NaN())}) }},
		{"huge block index", func() error { return r.ObserveMass(0, 0, []uint32{1 << 30}, []float32{1}) }},
		{"short query", func() error { return r.ObserveQuery(0, make([]float32, 31)) }},
		{"summaries out of order", func() error { return r.SetSummaries(0, 3, nil) }},
		{"partial summary", func() error { return r.SetSummaries(0, 0, make([]byte, 7)) }},
		{"negative budget", func() error { _, err := r.Select(nil, 0, 4, -1); return err }},
		{"bad shape", func() error {
			_, err := NewRequest(Shape{Layers: 1, QHeads: 3, KVHeads: 2, HeadDim: 8}, Options{})
			return err
		}},
		{"bad decay", func() error { _, err := NewRequest(Shape{Layers: 1}, Options{Decay: 1}); return err }},
		{"no layers", func() error { _, err := NewRequest(Shape{}, Options{}); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzRequest drives a Request with arbitrary observations and selections:
// it must answer with an error or a valid selection, never panic.
func FuzzRequest(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, uint16(30), uint8(6))
	f.Fuzz(func(t *testing.T, data []byte, nBlocks uint16, budget uint8) {
		r, err := NewRequest(Shape{Layers: 2, QHeads: 2, KVHeads: 1, HeadDim: 8}, Options{Kind: ScoresQueries})
		if err != nil {
			t.Fatal(err)
		}
		var idx []uint32
		var mass []float32
		for i := 0; i+2 <= len(data); i += 2 {
			idx = append(idx, uint32(data[i])<<uint(data[i+1]%26))
			mass = append(mass, float32(data[i+1])/255)
		}
		_ = r.ObserveMass(int(len(data)%3), uint64(len(data)), idx, mass)
		_ = r.ObserveRead(int(len(data)/2%3), idx, mass)
		q := make([]float32, 16)
		for i := range q {
			if i < len(data) {
				q[i] = float32(int8(data[i]))
			}
		}
		_ = r.ObserveQuery(0, q)
		sums := make([]byte, len(data)/20*20)
		copy(sums, data)
		_ = r.SetSummaries(0, 0, sums)
		sel, err := r.Select(nil, 0, int(nBlocks), int(budget))
		if err != nil {
			return
		}
		if len(sel) > int(budget) || len(sel) > int(nBlocks) {
			t.Fatalf("selected %d blocks, budget %d of %d", len(sel), budget, nBlocks)
		}
		seen := map[uint32]bool{}
		for _, b := range sel {
			if int(b) >= int(nBlocks) || seen[b] {
				t.Fatalf("selection %v of %d blocks", sel, nBlocks)
			}
			seen[b] = true
		}
	})
}

// TestObserveRead: partial observations move only the blocks read toward
// their new mass; a block not read keeps its importance, and a block's
// first report sets it.
func TestObserveRead(t *testing.T) {
	const d = 0.5
	r, err := NewRequest(Shape{Layers: 1}, Options{Kind: Scores, Decay: d, Sink: -1, Recent: -1})
	must(t, err)
	must(t, r.ObserveRead(0, []uint32{2, 4}, []float32{0.6, 0.2}))
	must(t, r.ObserveRead(0, []uint32{4}, []float32{0.4}))
	must(t, r.ObserveRead(0, []uint32{4}, []float32{0.4}))
	imp := r.layers[0].imp
	for b, w := range map[int]float64{2: 0.6, 4: d*(d*0.2+(1-d)*0.4) + (1-d)*0.4} {
		if math.Abs(float64(imp[b])-w) > 1e-6 {
			t.Fatalf("importance of block %d = %v, want %v", b, imp[b], w)
		}
	}
	sel, err := r.Select(nil, 0, 6, 2)
	must(t, err)
	if !slices.Equal(sel, []uint32{2, 4}) {
		t.Fatalf("selected %v, want [2 4]", sel)
	}
	for _, bad := range []func() error{
		func() error { return r.ObserveRead(1, nil, nil) },
		func() error { return r.ObserveRead(0, []uint32{1}, nil) },
		func() error { return r.ObserveRead(0, []uint32{1}, []float32{float32(math.NaN())}) },
		func() error { return r.ObserveRead(0, []uint32{1 << 25}, []float32{1}) },
	} {
		if err := bad(); !errors.Is(err, ErrInvalid) {
			t.Errorf("bad read report: %v", err)
		}
	}
}
