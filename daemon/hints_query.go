package daemon

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/prefetch"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// maxQueryHeads bounds layer_query.q_heads.
const maxQueryHeads = 4096

// layerQueryFromProto validates a layer_query hint of a request announced
// with namespace ns.
func layerQueryFromProto(h *pb.LayerQueryHint, ns string) (prefetch.LayerQuery, error) {
	var lq prefetch.LayerQuery
	layer, err := validateLayer("layer_query.layer", h.GetLayer())
	if err != nil {
		return lq, err
	}
	if layer < 0 {
		return lq, fieldErr("layer_query.layer", "a query belongs to one layer, got %d", layer)
	}
	qh, kvh, d := h.GetQHeads(), h.GetKvHeads(), h.GetHeadDim()
	switch {
	case qh == 0 || qh > maxQueryHeads:
		return lq, fieldErr("layer_query.q_heads", "%d not in 1..%d", qh, maxQueryHeads)
	case kvh == 0 || kvh > codec.MaxKVHeads:
		return lq, fieldErr("layer_query.kv_heads", "%d not in 1..%d", kvh, codec.MaxKVHeads)
	case qh%kvh != 0:
		return lq, fieldErr("layer_query.kv_heads", "%d query heads do not group over %d KV heads", qh, kvh)
	case d == 0 || d > codec.MaxHeadDim:
		return lq, fieldErr("layer_query.head_dim", "%d not in 1..%d", d, codec.MaxHeadDim)
	case uint64(len(h.GetQuery())) != uint64(qh)*uint64(d):
		return lq, fieldErr("layer_query.query", "%d values for %d heads × %d", len(h.GetQuery()), qh, d)
	}
	for i, v := range h.GetQuery() {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return lq, fieldErr("layer_query.query", "value %d is %v", i, v)
		}
	}
	return prefetch.LayerQuery{
		RequestID: h.GetRequestId(), Namespace: ns, Layer: layer, Step: h.GetStep(),
		QHeads: int(qh), KVHeads: int(kvh), HeadDim: int(d), Query: h.GetQuery(),
	}, nil
}

var errNoQueryHints = fmt.Errorf("layer_query: %w: this daemon's prefetcher does not rank by queries", errors.ErrUnsupported)

// layerQuery hands a validated layer_query hint to the prefetcher.
func (s *Server) layerQuery(ctx context.Context, h *pb.LayerQueryHint, open map[string]string) (int, error) {
	ns, ok := open[h.GetRequestId()]
	if !ok {
		return 0, fieldErr("layer_query.request_id", "%q was not announced on this stream", h.GetRequestId())
	}
	lq, err := layerQueryFromProto(h, ns)
	if err != nil {
		return 0, err
	}
	qh, ok := s.hints.(prefetch.QueryHints)
	if !ok {
		return 0, errNoQueryHints
	}
	return qh.LayerQuery(ctx, lq)
}
