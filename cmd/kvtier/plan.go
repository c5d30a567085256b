package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/kvtier/kvtier/benchmarks/engine"
)

func init() {
	register("plan", "size KV capacity: requests per HBM/DRAM/NVMe with each codec", runPlan)
}

func runPlan(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kvtier plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	model := fs.String("model", "llama-3.1-70b", "model `preset`: "+strings.Join(engine.PresetNames(), ", "))
	layers := fs.Int("layers", 0, "layers (overrides the preset)")
	kvHeads := fs.Int("kv-heads", 0, "KV heads (overrides the preset)")
	headDim := fs.Int("head-dim", 0, "head dimension (overrides the preset)")
	dtype := fs.String("dtype", "", "KV element type: fp16, bf16, fp8, fp32 (overrides the preset)")
	weights := fs.String("weights", "", "weight `bytes` (e.g. 140GB; overrides the preset)")
	gpu := fs.String("gpu", "h100", "GPU profile: h100, h200, a100, mi300x")
	gpus := fs.Int("gpus", 8, "number of GPUs")
	ctxLen := fs.Int("context", 32768, "tokens per request")
	codecSpec := fs.String("codec", "", "codec: a mode (int8, int4, ...; ratio measured on the tiny model's KV) or a ratio (3.7x)")
	dram := fs.String("dram", "", "DRAM tier capacity (e.g. 512GiB)")
	nvme := fs.String("nvme", "", "NVMe tier capacity (e.g. 4TiB)")
	dramBW := fs.Float64("dram-gbps", engine.DefaultDRAMBps/1e9, "DRAM bandwidth, GB/s")
	nvmeBW := fs.Float64("nvme-gbps", engine.DefaultNVMeBps/1e9, "NVMe read bandwidth, GB/s")
	asJSON := fs.Bool("json", false, "print a JSON array")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(err error) int { fmt.Fprintln(stderr, "kvtier plan:", err); return 2 }
	shape, ok := engine.Presets[*model]
	if !ok {
		return fail(fmt.Errorf("unknown model %q (presets: %s)", *model, strings.Join(engine.PresetNames(), ", ")))
	}
	if *layers > 0 {
		shape.Layers = *layers
	}
	if *kvHeads > 0 {
		shape.KVHeads = *kvHeads
	}
	if *headDim > 0 {
		shape.HeadDim = *headDim
	}
	switch *dtype {
	case "":
	case "fp16", "bf16":
		shape.ElemBytes = 2
	case "fp8":
		shape.ElemBytes = 1
	case "fp32":
		shape.ElemBytes = 4
	default:
		return fail(fmt.Errorf("unknown dtype %q", *dtype))
	}
	if *weights != "" {
		w, err := engine.ParseBytes(*weights)
		if err != nil {
			return fail(err)
		}
		shape.WeightBytes = w
	}
	prof, ok := engine.GPUs[*gpu]
	if !ok {
		return fail(fmt.Errorf("unknown GPU %q (h100, h200, a100, mi300x)", *gpu))
	}
	in := engine.PlanInput{Shape: shape, GPU: prof, GPUs: *gpus, Context: *ctxLen,
		DRAMBps: *dramBW * 1e9, NVMeBps: *nvmeBW * 1e9}
	ratioNote := ""
	if *codecSpec != "" {
		r, note, err := codecRatio(*codecSpec)
		if err != nil {
			return fail(err)
		}
		in.CodecName, in.CodecRatio, ratioNote = *codecSpec, r, note
	}
	for _, t := range []struct {
		s   string
		dst *float64
	}{{*dram, &in.DRAMBytes}, {*nvme, &in.NVMeBytes}} {
		if t.s != "" {
			v, err := engine.ParseBytes(t.s)
			if err != nil {
				return fail(err)
			}
			*t.dst = v
		}
	}
	p, err := engine.MakePlan(in)
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		if err := writeJSON(stdout, []engine.Plan{p}); err != nil {
			return fail(err)
		}
		return 0
	}
	fmt.Fprintf(stdout, "model %s: %d layers × %d KV heads × head dim %d × %d B × 2 (K,V) = %d B of KV per token (%s)\n",
		p.Model, shape.Layers, shape.KVHeads, shape.HeadDim, shape.ElemBytes, p.KVBytesPerToken,
		engine.FormatBoth(float64(p.KVBytesPerToken)))
	fmt.Fprintf(stdout, "request: %d tokens = %d B (%s)\n", p.Context, p.KVBytesPerRequest, engine.FormatBoth(float64(p.KVBytesPerRequest)))
	fmt.Fprintf(stdout, "HBM: %d × %s = %s; weights %s; free for KV %s\n", p.GPUs, *gpu,
		engine.FormatBoth(p.HBMBytes), engine.FormatBoth(p.WeightBytes), engine.FormatBoth(p.HBMFreeBytes))
	if ratioNote != "" {
		fmt.Fprintf(stdout, "codec %s: %.2fx (%s)\n", in.CodecName, in.CodecRatio, ratioNote)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tier\tcodec\tcapacity\tper request\trequests\trequests (binary)\treload\tat GB/s\tsource\t")
	for _, r := range p.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%.3f s\t%.1f\t%s\t\n", r.Tier, r.Codec, engine.FormatBoth(r.CapacityBytes),
			engine.FormatBoth(r.BytesPerReq), r.Requests, r.RequestsBinary, r.ReloadS, r.ReloadBps/1e9, r.Source)
	}
	if err := tw.Flush(); err != nil {
		return fail(err)
	}
	fmt.Fprintln(stdout, "units: capacities decimal as marketed (1 GB = 1e9 B), also shown in binary (1 GiB = 2^30 B);")
	fmt.Fprintln(stdout, "  'requests (binary)' reads the HBM capacity and weights as GiB; modelled from the GPU profile, not measured.")
	fmt.Fprintf(stdout, "chapter's mixed-unit arithmetic (request in GiB × 1.024 read as GB): %d requests", p.ChapterRequests)
	if in.CodecRatio > 1 {
		fmt.Fprintf(stdout, ", %d with the codec", p.ChapterRequestsEnc)
	}
	fmt.Fprintln(stdout)
	return 0
}

// codecRatio reads "3.7x" as a given ratio, or measures a codec mode on the
// tiny model's KV (eval text from GOROOT).
func codecRatio(spec string) (float64, string, error) {
	if v, err := strconv.ParseFloat(strings.TrimSuffix(spec, "x"), 64); err == nil {
		if v < 1 {
			return 0, "", fmt.Errorf("codec ratio %v below 1", v)
		}
		return v, "given", nil
	}
	c, err := engine.ParseCodec(spec)
	if err != nil {
		return 0, "", err
	}
	m, err := engine.Tiny()
	if err != nil {
		return 0, "", err
	}
	wins, err := engine.Windows(engine.EvalFiles(runtime.GOROOT()), 256, 4, 1)
	if err != nil {
		return 0, "", err
	}
	var sum float64
	for _, w := range wins {
		r, err := m.MeasureCodecRatio(c, w)
		if err != nil {
			return 0, "", err
		}
		sum += r
	}
	return sum / float64(len(wins)), fmt.Sprintf("measured on the tiny model's KV, 16-token fp16 blocks, %d windows", len(wins)), nil
}
