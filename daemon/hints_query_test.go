package daemon

import (
	"errors"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kvtier/kvtier/prefetch"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers"
)

func TestLayerQueryValidation(t *testing.T) {
	good := func() *pb.LayerQueryHint {
		return &pb.LayerQueryHint{RequestId: "r", Layer: 2, Step: 9, QHeads: 4, KvHeads: 2, HeadDim: 8, Query: make([]float32, 32)}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*pb.LayerQueryHint)
		field string // "" when valid
	}{
		{"valid", func(*pb.LayerQueryHint) {}, ""},
		{"negative layer", func(h *pb.LayerQueryHint) { h.Layer = -1 }, "layer_query.layer"},
		{"no query heads", func(h *pb.LayerQueryHint) { h.QHeads = 0 }, "layer_query.q_heads"},
		{"too many query heads", func(h *pb.LayerQueryHint) { h.QHeads = maxQueryHeads + 2; h.KvHeads = 2 }, "layer_query.q_heads"},
		{"no KV heads", func(h *pb.LayerQueryHint) { h.KvHeads = 0 }, "layer_query.kv_heads"},
		{"heads do not group", func(h *pb.LayerQueryHint) { h.KvHeads = 3 }, "layer_query.kv_heads"},
		{"head dim 0", func(h *pb.LayerQueryHint) { h.HeadDim = 0 }, "layer_query.head_dim"},
		{"short query", func(h *pb.LayerQueryHint) { h.Query = h.Query[:31] }, "layer_query.query"},
		{"NaN", func(h *pb.LayerQueryHint) { h.Query[5] = float32(math.NaN()) }, "layer_query.query"},
		{"Inf", func(h *pb.LayerQueryHint) { h.Query[0] = float32(math.Inf(-1)) }, "layer_query.query"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := good()
			tc.edit(h)
			lq, err := layerQueryFromProto(h, "ns")
			if tc.field == "" {
				if err != nil || lq.Namespace != "ns" || lq.Layer != 2 || lq.Step != 9 || len(lq.Query) != 32 {
					t.Fatalf("%+v, %v", lq, err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("got %v, want a FieldError on %s", err, tc.field)
			}
		})
	}
}

// FuzzLayerQueryHint: any layer_query hint is refused with a FieldError
// or accepted with a shape the scorer takes.
func FuzzLayerQueryHint(f *testing.F) {
	for _, h := range []*pb.LayerQueryHint{
		{RequestId: "r", Layer: 1, QHeads: 8, KvHeads: 2, HeadDim: 4, Query: make([]float32, 32)},
		{RequestId: "r", QHeads: 3, KvHeads: 2, HeadDim: 1, Query: make([]float32, 3)},
	} {
		b, err := proto.Marshal(h)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var h pb.LayerQueryHint
		if proto.Unmarshal(b, &h) != nil {
			return
		}
		lq, err := layerQueryFromProto(&h, "ns")
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, tiers.ErrInvalid) {
				t.Fatalf("not a FieldError: %v", err)
			}
			return
		}
		if _, err := prefetch.NewScorer(lq.QHeads, lq.KVHeads, lq.HeadDim, prefetch.CombineMass); err != nil {
			t.Fatalf("accepted a shape the scorer rejects: %v", err)
		}
		if len(lq.Query) != lq.QHeads*lq.HeadDim {
			t.Fatalf("accepted %d values for %d × %d", len(lq.Query), lq.QHeads, lq.HeadDim)
		}
	})
}
