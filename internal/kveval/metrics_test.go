package kveval_test

import (
	"errors"
	"math"
	"testing"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/internal/kveval"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestRelError(t *testing.T) {
	cases := map[string]struct {
		ref, got []float32
		want     float64
	}{
		"equal":        {[]float32{1, 2}, []float32{1, 2}, 0},
		"3-4-5":        {[]float32{3, 4}, []float32{3, 4.5}, 0.1}, // ‖(0, .5)‖ / ‖(3, 4)‖
		"zeros":        {[]float32{0, 0}, []float32{0, 0}, 0},
		"zero ref":     {[]float32{0}, []float32{1}, math.Inf(1)},
		"sign flipped": {[]float32{1, -1}, []float32{-1, 1}, 2},
	}
	for name, c := range cases {
		if got := kveval.RelError(c.ref, c.got); got != c.want && !near(got, c.want, 1e-12) {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
	}
	if !math.IsNaN(kveval.RelError([]float32{1}, nil)) {
		t.Error("length mismatch is not NaN")
	}
}

func TestVectorCosine(t *testing.T) {
	ref := []float32{1, 0, 0, 1, 0, 0}
	got := []float32{1, 1, 0, 0, 0, 0}
	s := kveval.VectorCosine(ref, got, 2)
	// vectors: (1,0)·(1,1) → 1/√2; (0,1)·(0,0) → 0; (0,0)·(0,0) → 1
	if s.N != 3 || !near(s.Min, 0, 1e-12) || !near(s.Mean, (1/math.Sqrt2+0+1)/3, 1e-12) {
		t.Fatalf("%+v", s)
	}
}

func TestAttention(t *testing.T) {
	// One KV head, two tokens, head_dim 1, one query row q = 2·ln 3 (so with
	// scale 1/√1 scores are 2ln3·k). K = (0, 0.5) → scores (0, ln 3) → p = (1/4, 3/4).
	// V = (1, 5) → o = 1/4 + 15/4 = 4.
	// Decoded K' = (0, 0): p' = (1/2, 1/2), o' = 3. V' = V.
	q := kveval.Queries{Q: []float32{float32(2 * math.Log(3))}, Heads: 1, Rows: 1}
	k, v := []float32{0, 0.5}, []float32{1, 5}
	k2 := []float32{0, 0}
	st, err := kveval.Attention(q, k, v, k2, v, 1, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	wantKL := 0.25*math.Log(0.25/0.5) + 0.75*math.Log(0.75/0.5)
	if !near(st.RelErr(), 0.25, 1e-6) || !near(st.KL(), wantKL, 1e-6) || st.Rows != 1 {
		t.Fatalf("rel %v kl %v, want 0.25 and %v", st.RelErr(), st.KL(), wantKL)
	}
	// Causal mask: row sees only token 0 → o = o' = 1 and KL 0.
	q.Visible = []int{1}
	st, _ = kveval.Attention(q, k, v, k2, v, 1, 2, 1)
	if st.RelErr() != 0 || st.KL() != 0 {
		t.Fatalf("masked: rel %v kl %v", st.RelErr(), st.KL())
	}
	// GQA: two query heads share one KV head; both see the same error.
	q = kveval.Queries{Q: []float32{float32(2 * math.Log(3)), float32(2 * math.Log(3))}, Heads: 2, Rows: 1}
	st, _ = kveval.Attention(q, k, v, k2, v, 1, 2, 1)
	if st.Rows != 2 || !near(st.RelErr(), 0.25, 1e-6) {
		t.Fatalf("gqa: %+v", st)
	}
	if _, err := kveval.Attention(kveval.Queries{Q: []float32{1}, Heads: 3, Rows: 1}, k, v, k2, v, 2, 1, 1); !errors.Is(err, codec.ErrSize) {
		t.Fatalf("bad GQA ratio: %v", err)
	}
}

func TestSplitKV(t *testing.T) {
	l := codec.Layout{DType: codec.FP32, Order: codec.KVInterleaved, Layers: 2, KVHeads: 1, HeadDim: 1, Tokens: 1}
	raw := []byte{0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64} // 1, 2, 3, 4
	k, v, err := kveval.SplitKV(l, raw)
	if err != nil {
		t.Fatal(err)
	}
	if k[0] != 1 || v[0] != 2 || k[1] != 3 || v[1] != 4 {
		t.Fatalf("interleaved split: k %v v %v", k, v)
	}
	l.Order = codec.KVSeparate
	k, v, _ = kveval.SplitKV(l, raw)
	if k[0] != 1 || k[1] != 2 || v[0] != 3 || v[1] != 4 {
		t.Fatalf("separate split: k %v v %v", k, v)
	}
}
