package kvfile_test

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/kvtier/kvtier/internal/kvfile"
)

const fixture = "../../codec/testdata/kv/kv-p00.bin"

func TestOpenFixture(t *testing.T) {
	f, err := kvfile.Open(fixture)
	if err != nil {
		t.Fatal(err)
	}
	if f.Meta.Model.NLayers != 6 || f.Meta.Model.NKVHeads != 2 || f.Meta.Model.HeadDim != 32 || f.Meta.NTokens != 480 {
		t.Fatalf("model %+v tokens %d", f.Meta.Model, f.Meta.NTokens)
	}
	k, kt, err := f.Float32(kvfile.KPostRoPE)
	if err != nil {
		t.Fatal(err)
	}
	if len(k) != 6*2*480*32 || kt.Dims[2] != "token" {
		t.Fatalf("k_post_rope: %d values, dims %v", len(k), kt.Dims)
	}
	if _, err := f.Tensor("nope"); !errors.Is(err, kvfile.ErrNoTensor) {
		t.Fatalf("missing tensor: %v", err)
	}
	// Opening by the sidecar's name works too.
	if _, err := kvfile.Open(strings.TrimSuffix(fixture, ".bin") + ".json"); err != nil {
		t.Fatal(err)
	}
}

// TestAttnProbsRecompute recomputes stored attention probabilities from the
// dumped queries and keys (float64, causal, scale 1/√head_dim, GQA) and
// compares them with the stored ones; the README bounds the difference by 2e-3.
func TestAttnProbsRecompute(t *testing.T) {
	f, err := kvfile.Open(fixture)
	if err != nil {
		t.Fatal(err)
	}
	q, qt, _ := f.Float32(kvfile.QPostRoPE)
	k, kt, _ := f.Float32(kvfile.KPostRoPE)
	p, pt, err := f.Float32(kvfile.AttnProbs)
	if err != nil {
		t.Fatal(err)
	}
	L, QH, QR, D := qt.Shape[0], qt.Shape[1], qt.Shape[2], qt.Shape[3]
	H, T := kt.Shape[1], kt.Shape[2]
	PR := pt.Shape[2]
	first := pt.QueryPositions[0] - qt.QueryPositions[0] // row of q for probs row 0
	worst := 0.0
	rows := 0
	for l := 0; l < L; l += 2 {
		for h := 0; h < QH; h += 3 {
			for r := 0; r < PR; r += 5 {
				pos := pt.QueryPositions[r]
				qv := q[((l*QH+h)*QR+first+r)*D:][:D]
				kh := h / (QH / H)
				scores := make([]float64, pos+1)
				m := math.Inf(-1)
				for tk := 0; tk <= pos; tk++ {
					kv := k[((l*H+kh)*T+tk)*D:][:D]
					var dot float64
					for d := range qv {
						dot += float64(qv[d]) * float64(kv[d])
					}
					scores[tk] = dot / math.Sqrt(float64(D))
					m = math.Max(m, scores[tk])
				}
				var sum float64
				for i := range scores {
					scores[i] = math.Exp(scores[i] - m)
					sum += scores[i]
				}
				stored := p[((l*QH+h)*PR+r)*T:][:T]
				for tk := 0; tk < T; tk++ {
					want := 0.0
					if tk <= pos {
						want = scores[tk] / sum
					}
					worst = math.Max(worst, math.Abs(want-float64(stored[tk])))
				}
				rows++
			}
		}
	}
	t.Logf("%d rows, max |Δ| %.2e", rows, worst)
	if rows == 0 || worst > 2e-3 {
		t.Fatalf("recomputed attention differs from stored by %.2e (> 2e-3)", worst)
	}
}

func TestParseRejects(t *testing.T) {
	meta, err := os.ReadFile("../../codec/testdata/kv/kv-p00.json")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		meta string
		data []byte
	}{
		"not json":        {"{", data},
		"wrong format":    {strings.Replace(string(meta), "tinylm-kv-dump/1", "other/9", 1), data},
		"short data":      {string(meta), data[:len(data)-1]},
		"bad dtype":       {strings.Replace(string(meta), `"float16"`, `"int4"`, 1), data},
		"nbytes mismatch": {strings.Replace(string(meta), `"nbytes": 368640`, `"nbytes": 368642`, 1), data},
		"outside data":    {`{"format":"tinylm-kv-dump/1","tensors":[{"name":"x","dtype":"float16","shape":[4],"offset":10,"nbytes":8}]}`, make([]byte, 12)},
		"negative axis":   {`{"format":"tinylm-kv-dump/1","tensors":[{"name":"x","dtype":"float16","shape":[-4],"offset":0,"nbytes":-8}]}`, make([]byte, 12)},
	}
	for name, c := range cases {
		if _, err := kvfile.Parse([]byte(c.meta), c.data); !errors.Is(err, kvfile.ErrFormat) {
			t.Errorf("%s: err %v, want ErrFormat", name, err)
		}
	}
	if _, err := kvfile.Parse(meta, data); err != nil {
		t.Fatalf("valid dump rejected: %v", err)
	}
}

func TestHalfToFloat32(t *testing.T) {
	for h, want := range map[uint16]float32{0x3c00: 1, 0xc000: -2, 0x7bff: 65504, 0x0001: 5.9604645e-08, 0x8000: float32(math.Copysign(0, -1))} {
		if got := kvfile.HalfToFloat32(h); got != want || math.Signbit(float64(got)) != math.Signbit(float64(want)) {
			t.Errorf("HalfToFloat32(%04x) = %v, want %v", h, got, want)
		}
	}
	if !math.IsInf(float64(kvfile.HalfToFloat32(0x7c00)), 1) || !math.IsNaN(float64(kvfile.HalfToFloat32(0x7e00))) {
		t.Error("inf/nan")
	}
}

func FuzzParse(f *testing.F) {
	meta, _ := os.ReadFile("../../codec/testdata/kv/kv-p00.json")
	f.Add(meta, []byte{1, 2, 3})
	f.Add([]byte(`{"format":"tinylm-kv-dump/1","tensors":[{"name":"x","dtype":"float32","shape":[2],"offset":0,"nbytes":8}]}`), make([]byte, 8))
	f.Fuzz(func(t *testing.T, meta, data []byte) {
		file, err := kvfile.Parse(meta, data)
		if err != nil {
			if !errors.Is(err, kvfile.ErrFormat) {
				t.Fatalf("error does not wrap ErrFormat: %v", err)
			}
			return
		}
		for _, tn := range file.Meta.Tensors {
			if _, _, err := file.Float32(tn.Name); err != nil {
				t.Fatal(err)
			}
		}
	})
}
