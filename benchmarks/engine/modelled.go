package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/kvtier/kvtier/client"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// ModelledRow is a decode-offload estimate for a model that does not run
// here: GPU time from a roofline model of the GPU profile, the host side
// of the transfer measured through kvtier with blocks of the model's
// shape, the PCIe copy modelled at the profile's link speed.
type ModelledRow struct {
	Model           string  `json:"model"`
	GPU             string  `json:"gpu"`
	Mode            string  `json:"mode"`
	Policy          string  `json:"policy"`
	Budget          float64 `json:"budget"`
	Codec           string  `json:"codec"`
	Context         int     `json:"context"`
	TPOTMsResident  float64 `json:"tpot_ms_resident"`
	TPOTMs          float64 `json:"tpot_ms"`
	OverheadPct     float64 `json:"overhead_pct"`
	StallMs         float64 `json:"stall_ms"`
	BytesPerToken   float64 `json:"bytes_moved_per_token"`
	HitRate         float64 `json:"hit_rate"`
	HostGBps        float64 `json:"host_gbps"`
	LinkGBps        float64 `json:"link_gbps"`
	BlockBytes      int     `json:"block_bytes"`
	Measured        string  `json:"measured"`
	MeasuredFigures string  `json:"measured_figures"`
}

// Roofline returns one decode step's GPU time for a batch of one: every
// weight and the context's KV read from HBM once, against 2 FLOPs per
// parameter (attention FLOPs are small at batch one), whichever is longer.
func Roofline(s Shape, g GPU, context int) time.Duration {
	bytes := s.WeightBytes + float64(s.KVBytesPerToken())*float64(context)
	t := max(bytes/g.HBMBps, 2*s.Params/g.FLOPS)
	return time.Duration(t * 1e9)
}

// MeasureHost moves blocks of the shape's per-layer 16-token size through
// kvtier (put, then batched gets of batch blocks, rounds times) and
// returns the get bandwidth in bytes/s.
func MeasureHost(ctx context.Context, blocks Blocks, ns string, s Shape, batch, rounds int) (float64, int, error) {
	size := 2 * BlockTokens * s.KVHeads * s.HeadDim * s.ElemBytes
	dt := pb.Dtype_DTYPE_FP16
	if s.ElemBytes == 4 {
		dt = pb.Dtype_DTYPE_FP32
	} else if s.ElemBytes == 1 {
		dt = pb.Dtype_DTYPE_FP8
	}
	l := &pb.Layout{Dtype: dt, Order: pb.KVOrder_KV_ORDER_SEPARATE, Layers: 1, KvHeads: uint32(s.KVHeads),
		HeadDim: uint32(s.HeadDim), Tokens: BlockTokens}
	keys := make([]*pb.Key, batch)
	data := make([][]byte, batch)
	for i := range keys {
		h := make([]byte, 16)
		h[0], h[1], h[2] = byte(i), byte(i>>8), 0xb1
		keys[i] = &pb.Key{Namespace: ns, Hash: h, Layer: int32(i % max(1, s.Layers))}
		data[i] = make([]byte, size)
		for j := range data[i] {
			data[i][j] = byte(i + j)
		}
	}
	if err := blocks.PutBatch(ctx, keys, l, data, nil); err != nil {
		return 0, size, err
	}
	dst := make([][]byte, batch)
	if err := blocks.GetBatch(ctx, keys, dst, client.GetOptions{}); err != nil { // warm
		return 0, size, err
	}
	start := time.Now()
	for range rounds {
		if err := blocks.GetBatch(ctx, keys, dst, client.GetOptions{}); err != nil {
			return 0, size, err
		}
	}
	el := time.Since(start)
	return float64(batch*rounds*size) / el.Seconds(), size, nil
}

// ModelDecode estimates full-mode decode at a budget (FlexGen-style: the
// non-resident KV crosses host → GPU every step, after the host read,
// without overlap).
func ModelDecode(s Shape, g GPU, context int, budget, hostBps float64, blockBytes int) (ModelledRow, error) {
	if !(budget > 0 && budget <= 1) || context <= 0 || hostBps <= 0 {
		return ModelledRow{}, fmt.Errorf("%w: budget in (0,1], positive context and host bandwidth", ErrInput)
	}
	res := Roofline(s, g, context)
	moved := (1 - budget) * float64(s.KVBytesPerToken()) * float64(context)
	xfer := moved/hostBps + moved/g.LinkBps
	row := ModelledRow{Model: s.Name, GPU: g.Name, Mode: "full", Policy: "none", Budget: budget, Codec: "none", Context: context,
		TPOTMsResident: float64(res) / 1e6, StallMs: xfer * 1e3, BytesPerToken: moved, HitRate: budget,
		HostGBps: hostBps / 1e9, LinkGBps: g.LinkBps / 1e9, BlockBytes: blockBytes,
		Measured: "modelled", MeasuredFigures: "host_gbps (DRAM tier -> engine through kvtier, this machine)"}
	row.TPOTMs = row.TPOTMsResident + row.StallMs
	row.OverheadPct = 100 * (row.TPOTMs/row.TPOTMsResident - 1)
	return row, nil
}
