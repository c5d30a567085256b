package gpulink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kvtier/kvtier/cgo/gpu"
	"github.com/kvtier/kvtier/cgo/nvmlinfo"
)

// Direction of a copy.
type Direction string

const (
	H2D Direction = "h2d" // host to device
	D2H Direction = "d2h" // device to host
	D2D Direction = "d2d" // device to device (HBM bandwidth, not the host link)
)

// HostMode is the kind of host memory the host side of a copy uses.
type HostMode string

const (
	// Pinned: page-locked memory from the driver (cuMemHostAlloc).
	Pinned HostMode = "pinned"
	// Registered: an anonymous mmap registered with the driver
	// (cuMemHostRegister), as the DRAM arena is.
	Registered HostMode = "registered"
	// Pageable: the same mmap, not registered: the driver stages copies.
	Pageable HostMode = "pageable"
)

// Block sizes the GPU check measures.
var DefaultSizes = []int64{64 << 10, 256 << 10, 1 << 20, 4 << 20}

// Config says what to measure. Zero fields take defaults.
type Config struct {
	Sizes      []int64     // default DefaultSizes
	Directions []Direction // default H2D, D2H, D2D
	Host       HostMode    // default Pinned
	// LatencyIters is the number of single copies timed per cell, each
	// between its own events (default 200).
	LatencyIters int
	// BandwidthBytes is how much a cell streams, back to back on one
	// stream, to measure bandwidth (default 1 GiB; at least 8 copies).
	BandwidthBytes int64
	// Warmup copies before measuring each cell (default 5).
	Warmup int
}

func (c *Config) ensureDefaults() {
	if len(c.Sizes) == 0 {
		c.Sizes = DefaultSizes
	}
	if len(c.Directions) == 0 {
		c.Directions = []Direction{H2D, D2H, D2D}
	}
	if c.Host == "" {
		c.Host = Pinned
	}
	if c.LatencyIters <= 0 {
		c.LatencyIters = 200
	}
	if c.BandwidthBytes <= 0 {
		c.BandwidthBytes = 1 << 30
	}
	if c.Warmup <= 0 {
		c.Warmup = 5
	}
}

func (c *Config) validate() error {
	for _, n := range c.Sizes {
		if n <= 0 || n > 1<<30 {
			return fmt.Errorf("gpulink: block size %d not in 1..1GiB", n)
		}
	}
	for _, d := range c.Directions {
		if d != H2D && d != D2H && d != D2D {
			return fmt.Errorf("gpulink: unknown direction %q", d)
		}
	}
	if c.Host != Pinned && c.Host != Registered && c.Host != Pageable {
		return fmt.Errorf("gpulink: unknown host memory %q", c.Host)
	}
	return nil
}

// Result is one cell: a direction and a block size.
type Result struct {
	Direction Direction `json:"direction"`
	Size      int64     `json:"size"`
	Host      HostMode  `json:"host"`
	// BytesPerSec is the streaming bandwidth: Copies copies of Size bytes
	// queued back to back, timed with events around the batch.
	BytesPerSec float64 `json:"bytes_per_sec"`
	Copies      int     `json:"copies"`
	// P50 and P99 are the device time of single copies, each between its
	// own pair of events, over LatencyIters copies.
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	// LinkRatio is BytesPerSec over the link maximum, for host copies when
	// the maximum is known; 0 otherwise.
	LinkRatio float64 `json:"link_ratio,omitempty"`
	// EnqueueNsPerCopy is the host time to queue one copy of the batch
	// (all Copies go to the driver in one call, gpu.Stream.QueueRepeat),
	// and EnqueueShare that time over the device time per copy. At 0.9 or
	// more the device may have waited for the host between copies:
	// EnqueueBound says BytesPerSec is a floor set by the host's enqueue
	// rate, not the link's bandwidth.
	EnqueueNsPerCopy float64 `json:"enqueue_ns_per_copy"`
	EnqueueShare     float64 `json:"enqueue_share"`
	EnqueueBound     bool    `json:"enqueue_bound"`
}

// enqueueBoundShare is the EnqueueShare from which a row is labelled
// EnqueueBound.
const enqueueBoundShare = 0.9

// Report is a whole measurement.
type Report struct {
	Device  gpu.Info    `json:"device"`
	Link    Link        `json:"link"`
	Results []Result    `json:"results"`
	Tier    *TierResult `json:"hbm_tier,omitempty"`
	// GPUNUMANode is the GPU's NUMA node (sysfs), HostNUMANode the node
	// the host buffers were placed on; -1 when unknown or not placed.
	GPUNUMANode  int `json:"gpu_numa_node"`
	HostNUMANode int `json:"host_numa_node"`
	// GPUs is the host description: every NVIDIA GPU's telemetry when the
	// run ended (nvmlinfo.ReadAll), empty without NVML.
	GPUs []nvmlinfo.Telemetry `json:"gpus,omitempty"`
}

// Measure runs the configured copies on dev. link supplies the maximum
// the host copies are compared with (LinkFor finds it). It stops between
// cells when ctx is done.
func Measure(ctx context.Context, dev gpu.Device, link Link, cfg Config) (Report, error) {
	cfg.ensureDefaults()
	if err := cfg.validate(); err != nil {
		return Report{}, err
	}
	rep := Report{Device: dev.Info(), Link: link}
	maxSize := slices.Max(cfg.Sizes)
	var err error

	// Host buffers go on the GPU's NUMA node when sysfs says which: they
	// are allocated and first touched on a thread bound to its CPUs.
	var (
		host     []byte
		freeHost func()
	)
	rep.GPUNUMANode, rep.HostNUMANode = numaNodeOf(rep.Device.PCIBusID), -1
	alloc := func() {
		if host, freeHost, err = hostBuffer(dev, cfg.Host, int(maxSize)); err == nil {
			for i := 0; i < len(host); i += 4096 {
				host[i] = 0 // first touch, on this thread
			}
		}
	}
	if rep.GPUNUMANode >= 0 && onNode(rep.GPUNUMANode, alloc) {
		rep.HostNUMANode = rep.GPUNUMANode
	} else {
		alloc()
	}
	if err != nil {
		return rep, err
	}
	defer freeHost()
	src, err := dev.Alloc(maxSize)
	if err != nil {
		return rep, fmt.Errorf("gpulink: device buffer: %w", err)
	}
	defer dev.Free(src)
	dst, err := dev.Alloc(maxSize)
	if err != nil {
		return rep, fmt.Errorf("gpulink: device buffer: %w", err)
	}
	defer dev.Free(dst)
	s, err := dev.NewStream()
	if err != nil {
		return rep, fmt.Errorf("gpulink: stream: %w", err)
	}
	defer s.Close()
	e0, err := dev.NewEvent()
	if err != nil {
		return rep, fmt.Errorf("gpulink: event: %w", err)
	}
	defer e0.Close()
	e1, err := dev.NewEvent()
	if err != nil {
		return rep, fmt.Errorf("gpulink: event: %w", err)
	}
	defer e1.Close()
	for i := range host {
		host[i] = byte(i * 7)
	}

	for _, dir := range cfg.Directions {
		for _, size := range cfg.Sizes {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			c := cell{s: s, e0: e0, e1: e1, host: host[:size], src: src, dst: dst, size: size, dir: dir}
			r, err := c.measure(cfg)
			if err != nil {
				return rep, fmt.Errorf("gpulink: %s %d bytes: %w", dir, size, err)
			}
			r.Host = cfg.Host
			if dir != D2D && link.MaxBytesPerSec > 0 {
				r.LinkRatio = r.BytesPerSec / link.MaxBytesPerSec
			}
			rep.Results = append(rep.Results, r)
		}
	}
	return rep, nil
}

// pinnedBuffer returns n bytes of driver-pinned host memory and the
// function that frees it.
func pinnedBuffer(dev gpu.Device, n int) ([]byte, func(), error) {
	b, err := dev.AllocHost(n)
	if err != nil {
		return nil, nil, fmt.Errorf("gpulink: pinned host buffer: %w", err)
	}
	return b, func() { _ = dev.FreeHost(b) }, nil
}

type cell struct {
	s        gpu.Stream
	e0, e1   gpu.Event
	host     []byte
	src, dst gpu.DevPtr
	size     int64
	dir      Direction
}

// wait runs one copy and waits, returning its event-timed duration.
func (c *cell) wait() (time.Duration, error) {
	switch c.dir {
	case H2D:
		return c.s.CopyH2D(c.dst, c.host)
	case D2H:
		return c.s.CopyD2H(c.host, c.src)
	}
	return c.s.CopyD2D(c.dst, c.src, c.size)
}

// queue enqueues n copies without waiting, in one call into the driver
// (host memory is outside the Go heap in every host mode).
func (c *cell) queue(n int) error {
	dir := map[Direction]gpu.CopyDir{H2D: gpu.H2D, D2H: gpu.D2H, D2D: gpu.D2D}[c.dir]
	host := c.host
	if c.dir == D2D {
		host = nil
	}
	return c.s.QueueRepeat(dir, c.dst, host, c.src, c.size, n)
}

func (c *cell) measure(cfg Config) (Result, error) {
	r := Result{Direction: c.dir, Size: c.size}
	for range cfg.Warmup {
		if _, err := c.wait(); err != nil {
			return r, err
		}
	}
	samples := make([]time.Duration, cfg.LatencyIters)
	for i := range samples {
		d, err := c.wait()
		if err != nil {
			return r, err
		}
		samples[i] = d
	}
	r.P50, r.P99 = Percentile(samples, 0.50), Percentile(samples, 0.99)

	r.Copies = int(max(8, cfg.BandwidthBytes/c.size))
	if err := c.s.Record(c.e0); err != nil {
		return r, err
	}
	t0 := time.Now()
	if err := c.queue(r.Copies); err != nil {
		return r, err
	}
	enqueue := time.Since(t0)
	if err := c.s.Record(c.e1); err != nil {
		_ = c.s.Sync()
		return r, err
	}
	if err := c.s.Sync(); err != nil {
		return r, err
	}
	el, err := c.e1.Since(c.e0)
	if err != nil {
		return r, err
	}
	if el <= 0 {
		return r, errors.New("batch took no measurable time")
	}
	r.BytesPerSec = float64(int64(r.Copies)*c.size) / el.Seconds()
	r.EnqueueNsPerCopy = float64(enqueue.Nanoseconds()) / float64(r.Copies)
	r.EnqueueShare = enqueue.Seconds() / el.Seconds()
	r.EnqueueBound = r.EnqueueShare >= enqueueBoundShare
	return r, nil
}

// Percentile returns the q-quantile of samples (nearest rank); it sorts
// samples in place. 0 for no samples.
func Percentile(samples []time.Duration, q float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	slices.Sort(samples)
	rank := int(q*float64(len(samples)) + 0.999999)
	rank = min(max(rank, 1), len(samples))
	return samples[rank-1]
}

// Verdict is the outcome of one target check.
type Verdict struct {
	Direction Direction `json:"direction"`
	Size      int64     `json:"size"`
	Ratio     float64   `json:"ratio"`
	Pass      bool      `json:"pass"`
	Reason    string    `json:"reason"`
}

// TargetSizes are the block sizes the link target applies to.
var TargetSizes = []int64{1 << 20, 4 << 20}

// Check compares H2D and D2H bandwidth at TargetSizes with minRatio × the
// link maximum. Without a known link maximum, or a missing cell, the
// verdict fails with the reason.
func (r Report) Check(minRatio float64) []Verdict {
	var out []Verdict
	for _, dir := range []Direction{H2D, D2H} {
		for _, size := range TargetSizes {
			v := Verdict{Direction: dir, Size: size}
			i := slices.IndexFunc(r.Results, func(x Result) bool { return x.Direction == dir && x.Size == size })
			switch {
			case i < 0:
				v.Reason = "not measured"
			case r.Link.MaxBytesPerSec <= 0:
				v.Reason = "link maximum unknown"
			default:
				v.Ratio = r.Results[i].LinkRatio
				v.Pass = v.Ratio >= minRatio
				v.Reason = fmt.Sprintf("%.1f GB/s = %.2f× of %.1f GB/s (target %.2f×)",
					r.Results[i].BytesPerSec/1e9, v.Ratio, r.Link.MaxBytesPerSec/1e9, minRatio)
			}
			out = append(out, v)
		}
	}
	return out
}
