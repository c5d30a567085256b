package codecbench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/internal/kveval"
)

func TestSyntheticHasOutlierChannels(t *testing.T) {
	in := Synthetic(SyntheticConfig{Layers: 1, KVHeads: 2, Tokens: 64, HeadDim: 64, QueryHeads: 4, QueryRows: 2, DType: codec.FP16, Seed: 3})
	if err := in.Layout.CheckLen(len(in.Raw)); err != nil {
		t.Fatal(err)
	}
	k, _, err := kveval.SplitKV(in.Layout, in.Raw)
	if err != nil {
		t.Fatal(err)
	}
	// Channel RMS of head 0: the largest must stand well above the median.
	D, T := 64, 64
	rms := make([]float64, D)
	for tk := 0; tk < T; tk++ {
		for d := 0; d < D; d++ {
			x := float64(k[tk*D+d])
			rms[d] += x * x
		}
	}
	var big, small int
	for _, r := range rms {
		if r/float64(T) > 16 {
			big++
		}
		if r/float64(T) < 4 {
			small++
		}
	}
	if big == 0 || small < D/2 {
		t.Fatalf("no outlier channels: %d large, %d small", big, small)
	}
	if len(in.Queries) != 1 || in.Queries[0].Heads != 4 {
		t.Fatalf("queries %+v", in.Queries)
	}
}

func TestSuiteAndSummary(t *testing.T) {
	in := Synthetic(SyntheticConfig{Layers: 2, KVHeads: 2, Tokens: 64, HeadDim: 32, QueryHeads: 4, QueryRows: 4, DType: codec.BF16, Seed: 1})
	rep, err := Suite(context.Background(), []Input{in}, SuiteConfig{Config: Config{MinTime: time.Millisecond}, Specs: []string{"lossless", "int4"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2 || !rep.Results[0].Exact || rep.Results[1].Exact {
		t.Fatalf("%+v", rep.Results)
	}
	if r := rep.Results[1]; r.AttnRelErr <= 0 || r.Ratio < 3 || r.DecodeGBps <= 0 {
		t.Fatalf("int4 result %+v", r)
	}
	if rep.MemcpyGBps <= 0 {
		t.Fatalf("no memcpy reference: %v", rep.MemcpyGBps)
	}
	if s := Summary(rep, "lossless"); !strings.Contains(s, "bit-exact") {
		t.Fatalf("summary %q", s)
	}
	if s := Summary(rep, "int2"); !strings.Contains(s, "not measured") {
		t.Fatalf("summary %q", s)
	}
}
