package codecbench

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/internal/kveval"
)

// Result is one mode measured on one input. JSON names are the ones
// `kvtier bench codec --json` promises.
type Result struct {
	Mode       string  `json:"mode"`
	Input      string  `json:"input"`
	Ratio      float64 `json:"ratio"`
	KRelErr    float64 `json:"k_rel_err"`
	VRelErr    float64 `json:"v_rel_err"`
	AttnRelErr float64 `json:"attn_rel_err"`
	AttnKL     float64 `json:"attn_kl"`
	EncodeGBps float64 `json:"encode_gbps"`
	DecodeGBps float64 `json:"decode_gbps"`
	// Extra fields.
	KCosMin    float64 `json:"k_cos_min"`
	VCosMin    float64 `json:"v_cos_min"`
	RawBytes   int     `json:"raw_bytes"`
	FrameBytes int     `json:"frame_bytes"`
	Exact      bool    `json:"exact"` // decoded bytes equal the input
	Layout     string  `json:"layout"`
}

// Config controls a run.
type Config struct {
	// MinTime is how long each throughput measurement runs at least.
	MinTime time.Duration
	// Parallelism is passed to the codec (the per-core figures are measured
	// with 1 whatever it is; > 1 adds nothing to Result today).
	Parallelism int
}

// Run encodes in with opts, checks the round trip, computes the quality
// metrics and measures single-goroutine encode and decode throughput.
func Run(ctx context.Context, in Input, opts codec.Options, cfg Config) (Result, error) {
	r := Result{Mode: opts.Spec(), Input: in.Name, RawBytes: len(in.Raw), Layout: in.Layout.String()}
	frame, err := codec.Encode(make([]byte, 0, codec.MaxFrameLen(in.Layout, opts.Mode)), in.Layout, in.Raw, opts)
	if err != nil {
		return r, fmt.Errorf("%s on %s: encode: %w", r.Mode, in.Name, err)
	}
	r.FrameBytes = len(frame)
	r.Ratio = float64(len(in.Raw)) / float64(len(frame))
	l, dec, err := codec.Decode(make([]byte, 0, len(in.Raw)), frame)
	if err != nil {
		return r, fmt.Errorf("%s on %s: decode: %w", r.Mode, in.Name, err)
	}
	if l != in.Layout || len(dec) != len(in.Raw) {
		return r, fmt.Errorf("%s on %s: decoded %v (%d bytes), want %v", r.Mode, in.Name, l, len(dec), in.Layout)
	}
	r.Exact = string(dec) == string(in.Raw)
	if in.Layout.DType != codec.FP8 {
		if err := quality(&r, in, dec); err != nil {
			return r, err
		}
	}
	if err := ctx.Err(); err != nil {
		return r, err
	}
	r.EncodeGBps, err = throughput(ctx, cfg.MinTime, len(in.Raw), func(buf []byte) ([]byte, error) {
		return codec.Encode(buf[:0], in.Layout, in.Raw, opts)
	}, len(frame))
	if err != nil {
		return r, err
	}
	r.DecodeGBps, err = throughput(ctx, cfg.MinTime, len(in.Raw), func(buf []byte) ([]byte, error) {
		_, out, err := codec.Decode(buf[:0], frame)
		return out, err
	}, len(in.Raw))
	return r, err
}

func quality(r *Result, in Input, dec []byte) error {
	k, v, err := kveval.SplitKV(in.Layout, in.Raw)
	if err != nil {
		return err
	}
	k2, v2, err := kveval.SplitKV(in.Layout, dec)
	if err != nil {
		return err
	}
	D := int(in.Layout.HeadDim)
	r.KRelErr, r.VRelErr = kveval.RelError(k, k2), kveval.RelError(v, v2)
	r.KCosMin, r.VCosMin = kveval.VectorCosine(k, k2, D).Min, kveval.VectorCosine(v, v2, D).Min
	if len(in.Queries) == 0 {
		return nil
	}
	H, T := int(in.Layout.KVHeads), int(in.Layout.Tokens)
	per := H * T * D
	var st kveval.AttnStats
	for ly, q := range in.Queries {
		if ly >= in.Layout.NumLayers() {
			break
		}
		s := ly * per
		a, err := kveval.Attention(q, k[s:s+per], v[s:s+per], k2[s:s+per], v2[s:s+per], H, T, D)
		if err != nil {
			return fmt.Errorf("%s: layer %d: %w", in.Name, ly, err)
		}
		st.Add(a)
	}
	r.AttnRelErr, r.AttnKL = st.RelErr(), st.KL()
	return nil
}

// throughput runs fn until minTime has passed (at least 3 times) and returns
// GB/s of n input bytes per call, per core: the time is the CPU time of the
// measuring thread where the OS reports it (so other load on the machine
// does not count), else wall-clock time.
func throughput(ctx context.Context, minTime time.Duration, n int, fn func([]byte) ([]byte, error), outCap int) (float64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, 0, outCap+64)
	if _, err := fn(buf); err != nil { // warm pools and tables
		return 0, err
	}
	start := time.Now()
	cpu0, cpuOK := threadCPU()
	iters := 0
	for iters < 3 || time.Since(start) < minTime {
		if _, err := fn(buf); err != nil {
			return 0, err
		}
		iters++
		if iters%16 == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
	el := time.Since(start)
	if cpu1, ok := threadCPU(); ok && cpuOK && cpu1 > cpu0 {
		el = cpu1 - cpu0
	}
	return float64(n) * float64(iters) / el.Seconds() / 1e9, nil
}
