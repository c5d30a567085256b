package prefetch

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func TestDotI8MatchesPortable(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 7, 8, 16, 24, 64, 256, 263} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			q := make([]float32, 4*n)
			x := make([]byte, n)
			for i := range q {
				q[i] = float32(r.NormFloat64())
			}
			for i := range x {
				x[i] = byte(int8(r.IntN(255) - 127))
			}
			want := dotI8Go(q[:n], x)
			if got := dotI8(q[:n], x); !close32(got, want) {
				t.Fatalf("dotI8 = %v, want %v", got, want)
			}
			var got4, want4 [4]float32
			dotI8x4(&got4, q, x)
			dotI8x4Go(&want4, q, x)
			for j := range 4 {
				if !close32(got4[j], want4[j]) {
					t.Fatalf("dotI8x4[%d] = %v, want %v", j, got4[j], want4[j])
				}
			}
		})
	}
}

func close32(a, b float32) bool {
	return math.Abs(float64(a-b)) <= 1e-4*(1+math.Abs(float64(b)))
}

func TestExp32(t *testing.T) {
	for x := -90.0; x <= 0; x += 0.37 {
		got, want := float64(exp32(float32(x))), math.Exp(x)
		if math.Abs(got-want) > 2e-5*want+2e-38 {
			t.Fatalf("exp32(%v) = %v, want %v", x, got, want)
		}
	}
}
