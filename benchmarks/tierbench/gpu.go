package tierbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/kvtier/kvtier/benchmarks/gpulink"
	"github.com/kvtier/kvtier/cgo/gpu"
)

// gpu measures the GPU rows through package gpulink when a GPU is found:
// pinned H2D and D2H copies (the plain driver copy) against the link
// maximum NVML reports, device-to-device copies (no reference: HBM
// bandwidth), and the HBM tier's Get against the pinned D2H copy of the
// same size. gpulink times copies with device events, not interleaved
// with a CPU reference, so these rows' references are the link maximum
// and the driver copy of the same run. Without a GPU it logs why and
// returns no rows.
func (r *Runner) gpu(ctx context.Context, log io.Writer) error {
	dev := r.cfg.GPU
	if dev == nil {
		d, err := r.openGPU(log)
		if err != nil || d == nil {
			return err
		}
		defer d.Close()
		dev = d
	}
	link := gpulink.LinkFor(dev)
	sizes := make([]int64, len(r.cfg.Sizes))
	for i, n := range r.cfg.Sizes {
		sizes[i] = int64(n)
	}
	r.bar(float64(r.done)/float64(r.all), "gpu links")
	lcfg := r.cfg.GPULink
	lcfg.Sizes = sizes
	rep, err := gpulink.Measure(ctx, dev, link, lcfg)
	if err != nil {
		return fmt.Errorf("tierbench: gpu links: %w", err)
	}
	capacity := dev.Info().TotalMem
	d2h := map[int64]gpulink.Result{}
	for _, res := range rep.Results {
		row := Row{Tier: "pcie-" + string(res.Direction), Op: "copy", Order: Seq, Parallel: 1, BlockBytes: int(res.Size),
			GBps: res.BytesPerSec / 1e9, P50US: us(res.P50), P99US: us(res.P99), Ops: int64(res.Copies),
			Capacity: capacity, Host: r.cfg.Host, Note: string(res.Host) + " host memory; device-event timing"}
		switch res.Direction {
		case gpulink.D2D:
			row.Tier, row.Note = "hbm-d2d", "device-to-device copy; no reference"
		default:
			if link.MaxBytesPerSec > 0 {
				row.Ref, row.RefGBps, row.Ratio = "link-max-"+link.Source, link.MaxBytesPerSec/1e9, res.LinkRatio
			}
		}
		if res.Direction == gpulink.D2H {
			d2h[res.Size] = res
		}
		r.rows = append(r.rows, row)
	}
	for _, n := range sizes {
		if err := ctx.Err(); err != nil {
			return err
		}
		r.bar(float64(r.done)/float64(r.all), "hbm tier "+sizeName(int(n)))
		tr, err := gpulink.MeasureTierGet(ctx, dev, n, 200)
		r.done++
		if err != nil {
			return fmt.Errorf("tierbench: hbm tier: %w", err)
		}
		row := Row{Tier: "hbm", Op: OpRead, Order: Seq, Parallel: 1, BlockBytes: int(n), GBps: tr.BytesPerSec / 1e9,
			P50US: us(tr.P50), P99US: us(tr.P99), Ops: int64(tr.Gets), Capacity: capacity, Host: r.cfg.Host,
			Note: "Tier.Get into pinned host memory, wall time"}
		if ref, ok := d2h[n]; ok && ref.BytesPerSec > 0 {
			row.Ref, row.RefGBps, row.RefP50US, row.RefP99US = "pinned-d2h-copy", ref.BytesPerSec/1e9, us(ref.P50), us(ref.P99)
			row.Ratio = row.GBps / row.RefGBps
		}
		r.rows = append(r.rows, row)
	}
	return nil
}

// openGPU opens the first GPU; without one it logs why, counts the GPU
// cells done and returns nil, nil.
func (r *Runner) openGPU(log io.Writer) (gpu.Device, error) {
	dev, err := gpu.Open()
	if err == nil {
		return dev, nil
	}
	if errors.Is(err, gpu.ErrUnavailable) {
		fmt.Fprintf(log, "tierbench: no GPU rows: %v\n", err)
		r.done += len(r.cfg.Sizes)
		r.bar(float64(r.done)/float64(r.all), "no GPU")
		return nil, nil
	}
	return nil, fmt.Errorf("tierbench: gpu: %w", err)
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }
