package engine

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"
)

func testWindows(t *testing.T, n, size int) [][]int {
	var out [][]int
	for i := range n {
		out = append(out, fixturePrompt(t, i%3)[:size])
	}
	return out
}

// TestDecodeThroughKVTier: full mode with a lossless codec (and without
// one) reads every block, most of them fetched from the daemon after
// their engine copy was poisoned, and still decodes exactly like the
// all-resident engine; sparse mode at a full budget too; at a 25% budget
// each policy runs and costs some cross-entropy.
func TestDecodeThroughKVTier(t *testing.T) {
	m := tinyModel(t)
	c, shm := startKV(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	wins := testWindows(t, 2, 96)
	if raceOn {
		wins = testWindows(t, 1, 64)
	}
	cases := []struct {
		name, codec, mode, policy string
		budget                    float64
		exact                     bool
	}{
		{"full/none", "none", "full", "", 0.2, true},
		{"full/lossless", "lossless", "full", "", 0.2, true},
		{"sparse/lru/all", "none", "sparse", "lru", 1, true},
		{"sparse/lru", "none", "sparse", "lru", 0.34, false},
		{"sparse/oracle", "none", "sparse", "oracle", 0.34, false},
		{"sparse/scores", "int8", "sparse", "scores", 0.34, false},
		{"sparse/queries", "none", "sparse", "queries", 0.34, false},
		{"sparse/scores+queries", "int4", "sparse", "scores+queries", 0.34, false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if raceOn && (tc.name == "full/none" || tc.name == "sparse/lru" || tc.name == "sparse/oracle" || tc.name == "sparse/queries") {
				t.Skip("race build: the other cases cover the same paths")
			}
			cd, err := ParseCodec(tc.codec)
			if err != nil {
				t.Fatal(err)
			}
			kc := NewKVCache(m, c, shm, "dec-"+string(rune('a'+i)), cd)
			var pol Policy
			if tc.policy != "" {
				if pol, err = NewPolicy(tc.policy, m); err != nil {
					t.Fatal(err)
				}
			}
			row, err := kc.RunDecode(ctx, wins, DecodeOptions{Mode: tc.mode, Policy: pol, Budget: tc.budget, Prefill: 48 - 16*btoi(raceOn)})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", row)
			if math.IsNaN(row.NLL) {
				t.Fatal("NaN cross-entropy: a dropped block was read without being fetched")
			}
			if tc.exact && (row.Agreement != 1 || row.NLL != row.NLLResident) {
				t.Fatalf("agreement %v, nll %v vs %v resident: want identical", row.Agreement, row.NLL, row.NLLResident)
			}
			if tc.mode == "full" && (row.BytesPerToken == 0 || row.HitRate >= 1) {
				t.Fatalf("full mode at budget %v moved %v B/token, hit rate %v", tc.budget, row.BytesPerToken, row.HitRate)
			}
			if !tc.exact && row.NLL == row.NLLResident {
				t.Fatalf("sparse attention at budget %v left the cross-entropy unchanged: it read every block", tc.budget)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	m := tinyModel(t)
	kc := NewKVCache(m, nil, nil, "x", nil)
	for _, o := range []DecodeOptions{
		{Mode: "dense", Budget: 0.2, Prefill: 32},
		{Mode: "sparse", Budget: 0.2, Prefill: 32},
		{Mode: "full", Budget: 0, Prefill: 32},
		{Mode: "full", Budget: 0.2, Prefill: 30},
		{Mode: "full", Budget: 0.2, Prefill: 64},
	} {
		if _, err := kc.RunDecode(context.Background(), [][]int{make([]int, 64)}, o); !errors.Is(err, ErrInput) {
			t.Errorf("%+v: %v", o, err)
		}
	}
	if _, err := NewPolicy("magic", m); !errors.Is(err, ErrInput) {
		t.Errorf("unknown policy: %v", err)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
