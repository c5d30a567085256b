package gpulink

import (
	"context"
	"fmt"
	"time"

	"github.com/kvtier/kvtier/cgo/gpu"
	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/hbm"
)

// TierResult is the HBM tier's Get latency for one block size.
type TierResult struct {
	Size int64 `json:"size"`
	Gets int   `json:"gets"`
	// P50 and P99 are the wall time of Tier.Get into pinned host memory.
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	// CopyP50 and CopyP99 are the device time of the copies inside those
	// Gets (events), from the tier's own histogram.
	CopyP50 time.Duration `json:"copy_p50_ns"`
	CopyP99 time.Duration `json:"copy_p99_ns"`
	// BytesPerSec is Size over the mean Get time.
	BytesPerSec float64 `json:"bytes_per_sec"`
}

// blocksInTier is how many distinct blocks MeasureTierGet cycles through.
const blocksInTier = 8

// LayoutFor returns a block layout of exactly size bytes (fp16, one KV head
// of dimension 128: 512 bytes a token); size must be a multiple of 512.
func LayoutFor(size int64) (tiers.Layout, error) {
	if size <= 0 || size%512 != 0 {
		return tiers.Layout{}, fmt.Errorf("gpulink: block size %d is not a positive multiple of 512", size)
	}
	tokens, layers := size/512, int64(1)
	for tokens > codec.MaxTokens && tokens%2 == 0 {
		tokens, layers = tokens/2, layers*2
	}
	l := tiers.Layout{DType: codec.FP16, KVHeads: 1, HeadDim: 128, Tokens: uint32(tokens), Layers: uint16(layers)}
	if tokens > codec.MaxTokens || layers > codec.MaxLayers || l.Size() != size {
		return tiers.Layout{}, fmt.Errorf("gpulink: no layout of %d bytes", size)
	}
	return l, nil
}

// MeasureTierGet builds an HBM tier on dev holding a few blocks of size
// bytes and times gets Gets of them, round robin, into pinned host memory.
func MeasureTierGet(ctx context.Context, dev gpu.Device, size int64, gets int) (TierResult, error) {
	res := TierResult{Size: size, Gets: gets}
	l, err := LayoutFor(size)
	if err != nil {
		return res, err
	}
	if gets <= 0 {
		return res, fmt.Errorf("gpulink: %d gets", gets)
	}
	tier, err := hbm.New(dev, max(2*blocksInTier*size, hbm.MinCapacity))
	if err != nil {
		return res, err
	}
	defer tier.Close()
	buf, freeBuf, err := pinnedBuffer(dev, int(size))
	if err != nil {
		return res, err
	}
	defer freeBuf()
	keys := make([]tiers.Key, blocksInTier)
	for i := range keys {
		var d [16]byte
		d[0], d[15] = byte(i), 0xb1
		h, _ := tiers.HashFromBytes(d[:])
		keys[i] = tiers.Key{Namespace: "gpulink", Hash: h, Layer: tiers.AllLayers}
		for j := range buf {
			buf[j] = byte(i + j)
		}
		if err := tier.Put(ctx, keys[i], l, buf); err != nil {
			return res, err
		}
	}
	samples := make([]time.Duration, gets)
	var total time.Duration
	for i := range samples {
		start := time.Now()
		if _, _, err := tier.Get(ctx, keys[i%blocksInTier], buf[:0]); err != nil {
			return res, err
		}
		samples[i] = time.Since(start)
		total += samples[i]
	}
	res.BytesPerSec = float64(size) * float64(gets) / total.Seconds()
	res.P50, res.P99 = Percentile(samples, 0.50), Percentile(samples, 0.99)
	lat := tier.Latency()
	res.CopyP50, res.CopyP99 = lat.GetCopy.P50, lat.GetCopy.P99
	return res, nil
}
