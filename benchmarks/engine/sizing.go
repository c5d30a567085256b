package engine

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Shape is the part of a model that sizes its KV cache, and its weights.
type Shape struct {
	Name        string
	Layers      int
	KVHeads     int
	HeadDim     int
	ElemBytes   int     // bytes per K or V element (2 for fp16/bf16)
	WeightBytes float64 // bytes of weights (decimal: 140e9 for Llama-3.1-70B in bf16)
	// Roofline inputs for modelled decode: parameters (FLOPs = 2 × params per token).
	Params float64
}

// KVBytesPerToken is 2 (K and V) × layers × KV heads × head dim × bytes.
func (s Shape) KVBytesPerToken() int64 {
	return 2 * int64(s.Layers) * int64(s.KVHeads) * int64(s.HeadDim) * int64(s.ElemBytes)
}

// Presets are the model shapes kvtier plan and bench decode know by name
// (published configurations; weights in bf16).
var Presets = map[string]Shape{
	"tiny":         {Name: "tiny", Layers: 6, KVHeads: 2, HeadDim: 32, ElemBytes: 2, WeightBytes: 4222208 * 2, Params: 4222208},
	"llama-3.1-8b": {Name: "llama-3.1-8b", Layers: 32, KVHeads: 8, HeadDim: 128, ElemBytes: 2, WeightBytes: 16e9, Params: 8.03e9},
	"llama-3.1-70b": {Name: "llama-3.1-70b", Layers: 80, KVHeads: 8, HeadDim: 128, ElemBytes: 2, WeightBytes: 140e9,
		Params: 70.6e9},
	"mistral-7b": {Name: "mistral-7b", Layers: 32, KVHeads: 8, HeadDim: 128, ElemBytes: 2, WeightBytes: 14.5e9, Params: 7.24e9},
	"qwen2.5-7b": {Name: "qwen2.5-7b", Layers: 28, KVHeads: 4, HeadDim: 128, ElemBytes: 2, WeightBytes: 15.2e9, Params: 7.62e9},
}

// PresetNames lists the presets, sorted.
func PresetNames() []string {
	var out []string
	for k := range Presets {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// GPU is a GPU profile: memory, bandwidths and peak compute, from the
// vendors' data sheets (decimal units).
type GPU struct {
	Name      string
	MemBytes  float64 // HBM capacity, decimal bytes as marketed (80 GB)
	HBMBps    float64 // HBM bandwidth, bytes/s
	FLOPS     float64 // dense bf16 peak, FLOP/s
	LinkBps   float64 // host link per direction, bytes/s (PCIe or Infinity Fabric)
	LinkLabel string
}

// GPUs are the profiles --gpu accepts.
var GPUs = map[string]GPU{
	"h100":   {Name: "h100", MemBytes: 80e9, HBMBps: 3.35e12, FLOPS: 989e12, LinkBps: 64e9, LinkLabel: "PCIe gen5 x16"},
	"h200":   {Name: "h200", MemBytes: 141e9, HBMBps: 4.8e12, FLOPS: 989e12, LinkBps: 64e9, LinkLabel: "PCIe gen5 x16"},
	"a100":   {Name: "a100", MemBytes: 80e9, HBMBps: 2.04e12, FLOPS: 312e12, LinkBps: 32e9, LinkLabel: "PCIe gen4 x16"},
	"mi300x": {Name: "mi300x", MemBytes: 192e9, HBMBps: 5.3e12, FLOPS: 1307e12, LinkBps: 64e9, LinkLabel: "PCIe gen5 x16"},
}

// Host tier bandwidths used when none is measured (the seed's reference
// table for an H100-class server).
const (
	DefaultDRAMBps = 200e9
	DefaultNVMeBps = 7e9
)

// PlanInput is what kvtier plan sizes.
type PlanInput struct {
	Shape      Shape
	GPU        GPU
	GPUs       int
	Context    int
	CodecName  string  // "" for none
	CodecRatio float64 // raw/encoded (1 for none)
	DRAMBytes  float64 // 0: no DRAM tier
	NVMeBytes  float64 // 0: no NVMe tier
	DRAMBps    float64
	NVMeBps    float64
}

// PlanRow is one line of the plan: a tier (or the HBM left after weights)
// and how many full-context requests it holds.
type PlanRow struct {
	Tier          string  `json:"tier"`
	Codec         string  `json:"codec"`
	CapacityBytes float64 `json:"capacity_bytes"`
	BytesPerReq   float64 `json:"bytes_per_request"`
	Requests      int64   `json:"requests"`
	// Requests with the capacity and request size both in binary units
	// (capacity read as GiB where it was given as GB).
	RequestsBinary int64 `json:"requests_binary_units"`
	// Reload of one full-context request into HBM from this tier, seconds
	// (the tier's bandwidth, limited by the host link for host tiers).
	ReloadS   float64 `json:"reload_s"`
	ReloadBps float64 `json:"reload_bytes_per_s"`
	Source    string  `json:"source"` // where the bandwidth comes from
}

// Plan is kvtier plan's answer.
type Plan struct {
	Model              string    `json:"model"`
	GPU                string    `json:"gpu"`
	GPUs               int       `json:"gpus"`
	Context            int       `json:"context"`
	KVBytesPerToken    int64     `json:"kv_bytes_per_token"`
	KVBytesPerRequest  int64     `json:"kv_bytes_per_request"`
	HBMBytes           float64   `json:"hbm_bytes"`
	WeightBytes        float64   `json:"weight_bytes"`
	HBMFreeBytes       float64   `json:"hbm_free_bytes"`
	CodecRatio         float64   `json:"codec_ratio"`
	Rows               []PlanRow `json:"rows"`
	ChapterRequests    int64     `json:"chapter_requests"`
	ChapterRequestsEnc int64     `json:"chapter_requests_codec"`
}

// MakePlan sizes a deployment. Units: capacities are decimal (GB = 1e9 B)
// as GPUs are marketed; a request's KV is an exact byte count, printed in
// both units. RequestsBinary redoes the division with the HBM capacity and
// weights read as GiB, and ChapterRequests reproduces the mixed-unit
// arithmetic of the benchmarking chapter this project grew from: the
// request size in GiB times 1.024 read as GB.
func MakePlan(in PlanInput) (Plan, error) {
	switch {
	case in.GPUs <= 0 || in.Context <= 0:
		return Plan{}, fmt.Errorf("%w: gpus and context must be positive", ErrInput)
	case in.Shape.KVBytesPerToken() <= 0:
		return Plan{}, fmt.Errorf("%w: model shape has no KV", ErrInput)
	case in.CodecRatio < 1 && in.CodecRatio != 0:
		return Plan{}, fmt.Errorf("%w: codec ratio %.3g below 1", ErrInput, in.CodecRatio)
	}
	if in.CodecRatio == 0 {
		in.CodecRatio = 1
	}
	if in.DRAMBps == 0 {
		in.DRAMBps = DefaultDRAMBps
	}
	if in.NVMeBps == 0 {
		in.NVMeBps = DefaultNVMeBps
	}
	per := in.Shape.KVBytesPerToken()
	req := per * int64(in.Context)
	hbm := in.GPU.MemBytes * float64(in.GPUs)
	free := hbm - in.Shape.WeightBytes
	if free <= 0 {
		return Plan{}, fmt.Errorf("%w: %.0f GB of weights do not fit in %.0f GB of HBM", ErrInput, in.Shape.WeightBytes/1e9, hbm/1e9)
	}
	p := Plan{
		Model: in.Shape.Name, GPU: in.GPU.Name, GPUs: in.GPUs, Context: in.Context,
		KVBytesPerToken: per, KVBytesPerRequest: req, HBMBytes: hbm, WeightBytes: in.Shape.WeightBytes,
		HBMFreeBytes: free, CodecRatio: in.CodecRatio,
	}
	freeBinary := free / 1e9 * (1 << 30)
	row := func(tier, codecName string, capacity, ratio, bps float64, src string) PlanRow {
		size := float64(req) / ratio
		r := PlanRow{Tier: tier, Codec: codecName, CapacityBytes: capacity, BytesPerReq: size,
			Requests: int64(math.Floor(capacity / size)), ReloadBps: bps, Source: src}
		if tier == "hbm" {
			r.RequestsBinary = int64(math.Floor(freeBinary / size))
		} else {
			r.RequestsBinary = r.Requests
		}
		if bps > 0 {
			r.ReloadS = size / bps
		}
		return r
	}
	link := min(in.DRAMBps, in.GPU.LinkBps)
	p.Rows = append(p.Rows, row("hbm", "none", free, 1, in.GPU.HBMBps, "profile"))
	if in.CodecRatio > 1 {
		p.Rows = append(p.Rows, row("hbm", in.CodecName, free, in.CodecRatio, in.GPU.HBMBps, "profile"))
	}
	if in.DRAMBytes > 0 {
		p.Rows = append(p.Rows, row("dram", "none", in.DRAMBytes, 1, link, "profile ("+in.GPU.LinkLabel+")"))
	}
	if in.NVMeBytes > 0 {
		// NVMe holds codec frames: reading them moves ratio× fewer bytes.
		nv := row("nvme", "none", in.NVMeBytes, 1, min(in.NVMeBps, link), "profile")
		p.Rows = append(p.Rows, nv)
		if in.CodecRatio > 1 {
			nr := row("nvme", in.CodecName, in.NVMeBytes, in.CodecRatio, min(in.NVMeBps, link), "profile")
			p.Rows = append(p.Rows, nr)
		}
	}
	gib := float64(req) / (1 << 30)
	chapterGB := gib * 1.024 * 1e9
	p.ChapterRequests = int64(math.Floor(free / chapterGB))
	p.ChapterRequestsEnc = int64(math.Floor(free / (chapterGB / in.CodecRatio)))
	return p, nil
}

// ParseBytes parses a capacity: "512GiB", "4TiB" (binary), "80GB", "4TB"
// (decimal), or a plain byte count.
func ParseBytes(s string) (float64, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	for _, u := range []struct {
		suffix string
		v      float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.v
			break
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%w: bad size %q (want e.g. 512GiB, 80GB, 4TiB)", ErrInput, s)
	}
	return v * mult, nil
}

// FormatBoth prints a byte count in decimal and binary units.
func FormatBoth(b float64) string {
	dec := []struct {
		s string
		v float64
	}{{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}}
	bin := []struct {
		s string
		v float64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	pick := func(us []struct {
		s string
		v float64
	}) string {
		for _, u := range us {
			if b >= u.v {
				return strconv.FormatFloat(b/u.v, 'f', 3, 64) + " " + u.s
			}
		}
		return strconv.FormatFloat(b, 'f', 0, 64) + " B"
	}
	return pick(dec) + " (" + pick(bin) + ")"
}
