package engine

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/kvtier/kvtier/internal/kvfile"
)

func tinyModel(t testing.TB) *Model {
	t.Helper()
	m, err := Tiny()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func tokensOf(s string) []int {
	out := make([]int, len(s))
	for i := range len(s) {
		out[i] = int(s[i])
	}
	return out
}

// TestForwardMatchesFixtures runs the shipped fp16 weights on the six
// fixture prompts (480 tokens, one batched prefill) and compares the
// cache's k_post_rope and v of the last 32 positions and the attention
// probabilities of four query positions with the PyTorch float32 dumps.
func TestForwardMatchesFixtures(t *testing.T) {
	m := tinyModel(t)
	files, err := filepath.Glob("testdata/kv-p*.bin")
	if err != nil || len(files) != 6 {
		t.Fatalf("want six fixtures, got %d (%v)", len(files), err)
	}
	for _, exact := range []bool{true, false} {
		for i, path := range files {
			if !exact && i%5 != 0 || raceOn && (i != 0 || !exact) {
				continue // fp16 KV: two prompts are enough; race builds: one
			}
			t.Run(fmt.Sprintf("%s/exactKV=%v", filepath.Base(path), exact), func(t *testing.T) {
				f, err := kvfile.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				toks := tokensOf(f.Meta.Prompt.Text)
				if len(toks) != 480 {
					t.Fatalf("prompt has %d tokens", len(toks))
				}
				s := m.NewSession()
				s.ExactKV = exact
				rec := &probRecorder{want: map[int]bool{}, got: map[[2]int][]float32{}}
				pt, _ := f.Tensor(kvfile.AttnProbs)
				for _, p := range pt.QueryPositions {
					rec.want[p] = true
				}
				s.Attn = rec
				// Prefill all but the probed tail as one batch, then step
				// through the tail so the probabilities are observed.
				first := pt.QueryPositions[0]
				if _, err := s.Prefill(toks[:first], nil); err != nil {
					t.Fatal(err)
				}
				for _, tok := range toks[first:] {
					if _, err := s.Step(tok); err != nil {
						t.Fatal(err)
					}
				}
				hd, sl := m.HeadDim(), m.SeqLen
				for _, name := range []string{kvfile.KPostRoPE, kvfile.V} {
					want, tt, err := f.Float32(name)
					if err != nil {
						t.Fatal(err)
					}
					L, H, T, D := tt.Shape[0], tt.Shape[1], tt.Shape[2], tt.Shape[3]
					var worst, scale float64
					for l := 0; l < L; l++ {
						got := s.K[l]
						if name == kvfile.V {
							got = s.V[l]
						}
						for h := 0; h < H; h++ {
							for i := 0; i < T; i++ {
								pos := 480 - T + i
								for d := 0; d < D; d++ {
									w := float64(want[((l*H+h)*T+i)*D+d])
									g := float64(got[(h*sl+pos)*hd+d])
									worst = max(worst, math.Abs(w-g))
									scale = max(scale, math.Abs(w))
								}
							}
						}
					}
					// fp16 weights and fp16 dumps: allow 1% of the largest value.
					if worst > 0.01*scale {
						t.Errorf("%s: max abs diff %.4g (largest value %.3g)", name, worst, scale)
					}
					t.Logf("%s: max abs diff %.4g of %.3g", name, worst, scale)
				}
				want, tt, err := f.Float32(kvfile.AttnProbs)
				if err != nil {
					t.Fatal(err)
				}
				L, H, Q, T := tt.Shape[0], tt.Shape[1], tt.Shape[2], tt.Shape[3]
				var worst float64
				for l := 0; l < L; l++ {
					for qi := 0; qi < Q; qi++ {
						pos := tt.QueryPositions[qi]
						got := rec.got[[2]int{l, pos}]
						if got == nil {
							t.Fatalf("no probabilities recorded for layer %d position %d", l, pos)
						}
						for h := 0; h < H; h++ {
							for tok := 0; tok < T; tok++ {
								w := float64(want[((l*H+h)*Q+qi)*T+tok])
								g := 0.0
								if tok <= pos {
									g = float64(got[h*(pos+1)+tok])
								}
								worst = max(worst, math.Abs(w-g))
							}
						}
					}
				}
				// float32 KV: the 2e-3. float16 KV adds the keys'
				// rounding (the fixtures' README measures 1.9e-3 from fp16
				// q and k alone): 4e-3.
				tol := 2e-3
				if !exact {
					tol = 4e-3
				}
				if worst > tol {
					t.Errorf("attn_probs: max abs diff %.4g, want <= %g", worst, tol)
				}
				t.Logf("attn_probs: max abs diff %.4g", worst)
			})
		}
	}
}

type probRecorder struct {
	want map[int]bool
	got  map[[2]int][]float32
}

func (r *probRecorder) Before(int, int, []float32) []bool { return nil }
func (r *probRecorder) After(l, pos int, probs []float32) {
	if r.want[pos] {
		r.got[[2]int{l, pos}] = append([]float32(nil), probs...)
	}
}
