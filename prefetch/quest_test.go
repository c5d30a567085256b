package prefetch

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
)

// questBlocks makes n fp32 per-layer blocks (K then V) of random keys and
// returns their keys [block][kvHead][token][dim] and their summaries.
func questBlocks(t testing.TB, rng *rand.Rand, n, kvHeads, tokens, dim int, boost int, q []float32, qHeads int) ([]float32, []byte) {
	l := tiers.Layout{DType: codec.FP32, Layers: 1, KVHeads: uint16(kvHeads), HeadDim: uint16(dim), Tokens: uint32(tokens)}
	keys := make([]float32, n*kvHeads*tokens*dim)
	var sums, one []byte
	raw := make([]byte, l.Size())
	for b := range n {
		for g := range kvHeads {
			for tok := range tokens {
				k := keys[((b*kvHeads+g)*tokens+tok)*dim:][:dim]
				for c := range k {
					k[c] = float32(rng.NormFloat64())
					if b == boost && tok == 3 { // one key that matches the group's first query head
						k[c] = 4 * q[(g*(qHeads/kvHeads))*dim+c]
					}
				}
				for c, v := range k {
					binary.LittleEndian.PutUint32(raw[4*((g*tokens+tok)*dim+c):], math.Float32bits(v))
				}
			}
		}
		var err error
		if one, err = tiers.SummarizeKeys(one, l, raw); err != nil {
			t.Fatal(err)
		}
		sums = append(sums, one...)
	}
	return keys, sums
}

func TestQuestBoundAndRanking(t *testing.T) {
	const n, qHeads, kvHeads, tokens, dim, boost = 12, 8, 2, 16, 32, 7
	rng := rand.New(rand.NewPCG(5, 6))
	q := make([]float32, qHeads*dim)
	for i := range q {
		q[i] = float32(rng.NormFloat64())
	}
	keys, sums := questBlocks(t, rng, n, kvHeads, tokens, dim, boost, q, qHeads)
	for _, c := range []Combine{CombineSum, CombineMass} {
		t.Run(c.String(), func(t *testing.T) {
			s, err := NewScorer(qHeads, kvHeads, dim, c)
			must(t, err)
			got, err := s.Score(nil, q, sums, n)
			must(t, err)
			best := 0
			for b := range got {
				if got[b] > got[best] {
					best = b
				}
			}
			if best != boost {
				t.Fatalf("block %d ranks first (%v), want %d", best, got, boost)
			}
			if c != CombineSum {
				var total float64
				for _, v := range got {
					total += float64(v)
				}
				if math.Abs(total-1) > 1e-4 {
					t.Fatalf("estimated masses sum to %v", total)
				}
				return
			}
			// The bound: no key of a block scores above it, summed over heads.
			for b := range n {
				var exact float64
				for h := range qHeads {
					g := h / (qHeads / kvHeads)
					best := math.Inf(-1)
					for tok := range tokens {
						k := keys[((b*kvHeads+g)*tokens+tok)*dim:][:dim]
						var d float64
						for ch := range dim {
							d += float64(q[h*dim+ch]) * float64(k[ch])
						}
						best = max(best, d)
					}
					exact += best
				}
				if float64(got[b]) < exact-1e-3*math.Abs(exact) {
					t.Fatalf("block %d: bound %v below the largest q·k sum %v", b, got[b], exact)
				}
			}
		})
	}
}

func TestScorerRejectsBadInput(t *testing.T) {
	s, err := NewScorer(4, 2, 8, CombineMass)
	must(t, err)
	if _, err := s.Score(nil, make([]float32, 31), nil, 0); err == nil {
		t.Fatal("short query accepted")
	}
	if _, err := s.Score(nil, make([]float32, 32), make([]byte, s.SummaryStride()+1), 1); err == nil {
		t.Fatal("summary of the wrong size accepted")
	}
	for _, sh := range [][3]int{{0, 1, 8}, {3, 2, 8}, {4, 2, 0}, {4, 2, 1 << 13}} {
		if _, err := NewScorer(sh[0], sh[1], sh[2], CombineSum); err == nil {
			t.Fatalf("shape %v accepted", sh)
		}
	}
}

// BenchmarkQuestLayer ranks one layer of one request with the
// llama-3.1-8b shape at 32k context: 2048 blocks of 16 tokens, 32 query
// heads over 8 KV heads, head dim 128, selecting 20% of the blocks. The
// reference is a copy of the same summary bytes (the memory floor).
// Besides wall time, each reports the thread's CPU time per block
// (cpu-ns/block), which a loaded machine does not inflate.
func BenchmarkQuestLayer(b *testing.B) {
	const nBlocks, qHeads, kvHeads, dim = 2048, 32, 8, 128
	rng := rand.New(rand.NewPCG(7, 8))
	es := tiers.KeySummaryEntrySize(dim)
	sums := make([]byte, nBlocks*kvHeads*es)
	for i := range sums {
		sums[i] = byte(rng.IntN(256))
	}
	for e := 0; e < nBlocks*kvHeads; e++ {
		binary.LittleEndian.PutUint32(sums[e*es:], math.Float32bits(0.01+rng.Float32()))
	}
	q := make([]float32, qHeads*dim)
	for i := range q {
		q[i] = float32(rng.NormFloat64())
	}
	b.Run("ref=copy", func(b *testing.B) {
		dst := make([]byte, len(sums))
		b.SetBytes(int64(len(sums)))
		cpu := startCPU()
		for b.Loop() {
			copy(dst, sums)
		}
		cpu.report(b, nBlocks)
	})
	for _, c := range []Combine{CombineSum, CombineMass} {
		b.Run(fmt.Sprintf("combine=%v", c), func(b *testing.B) {
			r, err := NewRequest(Shape{Layers: 1, QHeads: qHeads, KVHeads: kvHeads, HeadDim: dim}, Options{Kind: Queries, Combine: c})
			if err != nil {
				b.Fatal(err)
			}
			must(b, r.SetSummaries(0, 0, sums))
			must(b, r.ObserveQuery(0, q))
			sel := make([]uint32, 0, nBlocks)
			b.SetBytes(int64(len(sums)))
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				if sel, err = r.Select(sel[:0], 0, nBlocks, nBlocks/5); err != nil {
					b.Fatal(err)
				}
			}
			cpu.report(b, nBlocks)
		})
	}
}

// cpuClock measures a benchmark loop's thread CPU time; the goroutine is
// locked to its thread until report.
type cpuClock struct {
	start time.Duration
	ok    bool
}

func startCPU() cpuClock {
	runtime.LockOSThread()
	t, ok := threadCPU()
	return cpuClock{t, ok}
}

func (c cpuClock) report(b *testing.B, blocks int) {
	t, ok := threadCPU()
	runtime.UnlockOSThread()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(blocks), "ns/block")
	if c.ok && ok {
		b.ReportMetric(float64((t-c.start).Nanoseconds())/float64(b.N)/float64(blocks), "cpu-ns/block")
		b.ReportMetric(float64((t-c.start).Nanoseconds())/float64(b.N)/1e6, "cpu-ms/layer")
	}
}
