package tierbench

import (
	"context"
	"encoding/binary"

	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/kvtier/kvtier/benchmarks/gpulink"
	"github.com/kvtier/kvtier/benchmarks/host"
	"github.com/kvtier/kvtier/cgo/gpu"
	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
)

// Tier names of the rows (Row.Tier).
const (
	TierDRAM = "dram"
	TierNVMe = "nvme"
	TierGPU  = "gpu" // selects the pcie-h2d, pcie-d2h, hbm-d2d and hbm rows
	// TierPromote selects the promote-MODE rows: NVMe→DRAM through the
	// codec, one per Config.Codecs mode.
	TierPromote = "promote"
)

// Operations and orders.
const (
	OpWrite = "write"
	OpRead  = "read"
	Seq     = "seq"
	Random  = "random"
)

// DefaultSizes are the block sizes measured when none are given.
var DefaultSizes = []int{64 << 10, 256 << 10, 1 << 20, 4 << 20}

// Config says what to measure. Zero fields take defaults (EnsureDefaults).
type Config struct {
	Tiers    []string // default dram, nvme, gpu
	Sizes    []int    // block sizes, default DefaultSizes
	Ops      []string // default write, read
	Orders   []string // read orders, default seq, random (writes: seq only)
	Parallel int      // the parallel level measured besides 1 (default 4; 1: only 1)
	// Duration is each cell's wall time (tier and reference together,
	// default 1s); Iterations, when positive, is each cell's operations
	// per side instead.
	Duration   time.Duration
	Iterations int
	// Dir is where the NVMe tier and its raw reference file live (put it
	// on the disk to measure). Required for the nvme tier.
	Dir string
	// DRAMBytes is the DRAM arena of the dram rows and of its reference
	// (default 256 MiB: beyond the CPU caches).
	DRAMBytes int64
	// NVMeSetBytes is the data set NVMe reads cycle through (default 1 GiB).
	NVMeSetBytes int64
	// Codecs are the NVMe frame modes of the promote rows (default
	// lossless, serve's default).
	Codecs []string
	// Host is copied into every row.
	Host *host.Info
	// GPU is the device of the gpu rows (nil: gpu.Open finds one) and
	// GPULink the link measurement's settings (its Sizes are Sizes).
	GPU     gpu.Device
	GPULink gpulink.Config
}

// EnsureDefaults fills the zero fields.
func (c *Config) EnsureDefaults() {
	if len(c.Tiers) == 0 {
		c.Tiers = []string{TierDRAM, TierNVMe, TierPromote, TierGPU}
	}
	if len(c.Codecs) == 0 {
		c.Codecs = []string{"lossless"}
	}
	if len(c.Sizes) == 0 {
		c.Sizes = DefaultSizes
	}
	if len(c.Ops) == 0 {
		c.Ops = []string{OpWrite, OpRead}
	}
	if len(c.Orders) == 0 {
		c.Orders = []string{Seq, Random}
	}
	if c.Parallel == 0 {
		c.Parallel = 4
	}
	if c.Duration <= 0 && c.Iterations <= 0 {
		c.Duration = time.Second
	}
	if c.DRAMBytes <= 0 {
		c.DRAMBytes = 256 << 20
	}
	if c.NVMeSetBytes <= 0 {
		c.NVMeSetBytes = 1 << 30
	}
}

// Validate reports a configuration that cannot run.
func (c *Config) Validate() error {
	for _, t := range c.Tiers {
		if t != TierDRAM && t != TierNVMe && t != TierPromote && t != TierGPU {
			return fmt.Errorf("%w: unknown tier %q (want dram, nvme, promote, gpu)", ErrInvalid, t)
		}
		if (t == TierNVMe || t == TierPromote) && c.Dir == "" {
			return fmt.Errorf("%w: the nvme tier needs a directory", ErrInvalid)
		}
	}
	for _, n := range c.Sizes {
		if n < 4096 || n%4096 != 0 || n > 256<<20 {
			return fmt.Errorf("%w: block size %d: want a multiple of 4 KiB up to 256 MiB", ErrInvalid, n)
		}
		if _, err := gpulink.LayoutFor(int64(n)); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if int64(n)*16 > c.DRAMBytes {
			return fmt.Errorf("%w: block size %d: the DRAM arena (%d bytes) must hold 16 blocks", ErrInvalid, n, c.DRAMBytes)
		}
	}
	for _, m := range c.Codecs {
		if _, err := codec.ParseMode(m); err != nil {
			return fmt.Errorf("%w: codec %q: %w", ErrInvalid, m, err)
		}
	}
	for _, o := range c.Ops {
		if o != OpWrite && o != OpRead {
			return fmt.Errorf("%w: unknown op %q (want write, read)", ErrInvalid, o)
		}
	}
	for _, o := range c.Orders {
		if o != Seq && o != Random {
			return fmt.Errorf("%w: unknown order %q (want seq, random)", ErrInvalid, o)
		}
	}
	if c.Parallel < 1 || c.Parallel > 256 {
		return fmt.Errorf("%w: parallel %d not in 1..256", ErrInvalid, c.Parallel)
	}
	return nil
}

// Row is one measured cell; the JSON names are the command's contract.
type Row struct {
	Tier       string  `json:"tier"`
	Op         string  `json:"op"`
	Order      string  `json:"order"`
	Parallel   int     `json:"parallel"`
	BlockBytes int     `json:"block_bytes"`
	GBps       float64 `json:"gbps"`
	P50US      float64 `json:"p50_us"`
	P99US      float64 `json:"p99_us"`
	Ref        string  `json:"ref"`
	RefGBps    float64 `json:"ref_gbps"`
	RefP50US   float64 `json:"ref_p50_us"`
	RefP99US   float64 `json:"ref_p99_us"`
	Ratio      float64 `json:"ratio_to_ref"`
	// RatioP50 is the reference's median operation time over the tier's:
	// robust to the bursts of a shared machine or a virtual disk.
	RatioP50 float64 `json:"ratio_p50"`
	Capacity int64   `json:"capacity_bytes"`
	// DirectIO is true when the tier's disk bytes bypassed the page cache
	// (O_DIRECT); false for memory rows and for the NVMe tier's writes,
	// which go through Badger's page-cache writes and end each batch with
	// a sync (timed). Note says which.
	DirectIO bool       `json:"direct_io"`
	Ops      int64      `json:"ops"`
	Note     string     `json:"note,omitempty"`
	Host     *host.Info `json:"host,omitempty"`
}

// cell is one row to measure within a tier and size.
type cell struct {
	op, order string
	parallel  int
}

func (c *Config) cells() []cell {
	var out []cell
	// Reads first: the writes evict the blocks the reads visit.
	for _, op := range []string{OpRead, OpWrite} {
		if !slices.Contains(c.Ops, op) {
			continue
		}
		orders := c.Orders
		if op == OpWrite {
			orders = []string{Seq} // where a put lands is the tier's choice: one order
		}
		for _, order := range orders {
			for _, p := range levels(c.Parallel) {
				out = append(out, cell{op, order, p})
			}
		}
	}
	return out
}

// levels are the parallel levels measured: 1 and par.
func levels(par int) []int {
	if par > 1 {
		return []int{1, par}
	}
	return []int{1}
}

// Runner measures the tiers of a Config; Run calls one per tier and size.
type Runner struct {
	cfg  Config
	bar  func(frac float64, label string)
	done int // cells finished
	all  int // cells in all
	rows []Row
}

// Run measures every tier, size and cell of cfg and returns the rows.
// progress (may be nil) gets the fraction done and the current cell.
// When ctx ends (Ctrl-C) it returns the rows finished so far and ctx's
// error. A GPU that is not there is skipped with a message to log.
func Run(ctx context.Context, cfg Config, progress func(frac float64, label string), log io.Writer) ([]Row, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(float64, string) {}
	}
	if log == nil {
		log = io.Discard
	}
	r := &Runner{cfg: cfg, bar: progress}
	for _, t := range cfg.Tiers {
		switch t {
		case TierGPU:
			r.all += len(cfg.Sizes)
		case TierPromote:
			if slices.Contains(cfg.Ops, OpRead) {
				r.all += len(cfg.Sizes) * len(cfg.Codecs) * len(cfg.Orders) * len(levels(cfg.Parallel))
			}
		default:
			r.all += len(cfg.Sizes) * len(cfg.cells())
		}
	}
	for _, t := range cfg.Tiers {
		var err error
		switch t {
		case TierDRAM:
			for _, n := range cfg.Sizes {
				if err = r.dram(ctx, n); err != nil {
					break
				}
			}
		case TierNVMe:
			for _, n := range cfg.Sizes {
				if err = r.nvme(ctx, n); err != nil {
					break
				}
			}
		case TierPromote:
			for _, m := range cfg.Codecs {
				for _, n := range cfg.Sizes {
					if err = r.promote(ctx, n, m); err != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
		case TierGPU:
			err = r.gpu(ctx, log)
		}
		if err != nil {
			return r.rows, err
		}
	}
	return r.rows, nil
}

// measure runs one pair as a row and appends it.
func (r *Runner) measure(ctx context.Context, row Row, p Pair) error {
	label := fmt.Sprintf("%s %s %s p%d %s", row.Tier, row.Op, row.Order, row.Parallel, sizeName(row.BlockBytes))
	p.Duration, p.Iterations, p.Parallel, p.Bytes = r.cfg.Duration, r.cfg.Iterations, row.Parallel, row.BlockBytes
	tier, ref, err := RunPair(ctx, p, func(f float64) {
		r.bar((float64(r.done)+f)/float64(r.all), label)
	})
	r.done++
	if err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	row.GBps, row.RefGBps = tier.GBps(), ref.GBps()
	row.P50US, row.P99US = tier.Latency.QuantileUS(0.5), tier.Latency.QuantileUS(0.99)
	row.RefP50US, row.RefP99US = ref.Latency.QuantileUS(0.5), ref.Latency.QuantileUS(0.99)
	if row.RefGBps > 0 {
		row.Ratio = row.GBps / row.RefGBps
	}
	if row.P50US > 0 {
		row.RatioP50 = row.RefP50US / row.P50US
	}
	row.Ops = tier.Ops
	row.Host = r.cfg.Host
	r.rows = append(r.rows, row)
	r.bar(float64(r.done)/float64(r.all), label)
	return nil
}

// order returns the block visited by operation i of worker w among k
// blocks: consecutive blocks in write order (seq), each worker starting at
// its own share of the set, or a fixed shuffle (random).
func order(name string, k, par int, seed uint64) func(w, i int) int {
	if name == Random {
		perm := rand.New(rand.NewPCG(seed, 11)).Perm(k)
		return func(w, i int) int { return perm[(i*par+w)%k] }
	}
	return func(w, i int) int { return (w*k/par + i) % k }
}

// benchKey is block i's key.
func benchKey(ns string, i int) tiers.Key {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i)*0x9E3779B97F4A7C15+7)
	binary.LittleEndian.PutUint64(b[8:], uint64(i))
	h, _ := tiers.HashFromBytes(b[:]) // 16 bytes: never fails
	return tiers.Key{Namespace: ns, Hash: h, Layer: tiers.AllLayers}
}

// fill returns n bytes that are not all zeros (a device may compress).
func fill(b []byte, seed int) {
	for i := range b {
		b[i] = byte(i*131 + i>>12 + seed)
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// sizeName prints 65536 as 64KiB.
func sizeName(n int) string { return gpulink.FormatSize(int64(n)) }
