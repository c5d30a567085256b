package daemon

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// GPUStats is one GPU's telemetry as the daemon reports it in /metrics
// (kvtier_gpu_*) and Stats. Signed fields are -1 when the driver does not
// support the query; link fields are 0 when unknown.
type GPUStats struct {
	Index              int
	Name, PCIBusID     string
	MemUsed, MemTotal  int64
	PCIeTxBytesPerSec  float64
	PCIeRxBytesPerSec  float64
	UtilGPU, UtilMem   int // percent
	TemperatureC       int
	PowerWatts         float64
	LinkGen, LinkWidth int // now
	LinkMaxGen         int
	LinkMaxWidth       int
	LinkMaxBytesPerSec float64
}

// GPUSource reads the telemetry of every GPU on the host. The command line
// adapts cgo/nvmlinfo to it, so the daemon does not import cgo code.
type GPUSource interface {
	ReadGPUs() ([]GPUStats, error)
}

// GPUSourceFunc adapts a function to GPUSource.
type GPUSourceFunc func() ([]GPUStats, error)

// ReadGPUs calls f.
func (f GPUSourceFunc) ReadGPUs() ([]GPUStats, error) { return f() }

// gpuMaxAge is how long one reading serves scrapes and Stats calls: NVML's
// PCIe throughput query samples for 20 ms per direction and device.
const gpuMaxAge = time.Second

// WithGPUs adds GPU telemetry from src to /metrics and Stats.
func WithGPUs(src GPUSource) Option {
	return func(s *Server) { s.gpus = &gpuCache{src: src, now: time.Now} }
}

// gpuCache serves readings at most gpuMaxAge old; one caller reads at a
// time, the others wait for its result.
type gpuCache struct {
	src GPUSource
	now func() time.Time

	mu   sync.Mutex // protects the fields below, and serializes reads
	at   time.Time
	last []GPUStats
	err  error
}

func (c *gpuCache) read() ([]GPUStats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); c.at.IsZero() || now.Sub(c.at) >= gpuMaxAge {
		c.last, c.err = c.src.ReadGPUs()
		c.at = now
	}
	return c.last, c.err
}

// gpuStats returns the telemetry for StatsResponse: the devices, or why
// there are none.
func (s *Server) gpuStats() ([]*pb.GpuDeviceTelemetry, string) {
	if s.gpus == nil {
		return nil, ""
	}
	gs, err := s.gpus.read()
	if err != nil {
		return nil, err.Error()
	}
	out := make([]*pb.GpuDeviceTelemetry, 0, len(gs))
	for _, g := range gs {
		out = append(out, &pb.GpuDeviceTelemetry{
			Index:                     uint32(max(g.Index, 0)),
			Name:                      g.Name,
			PciBusId:                  g.PCIBusID,
			MemoryUsedBytes:           uint64(max(g.MemUsed, 0)),
			MemoryTotalBytes:          uint64(max(g.MemTotal, 0)),
			PcieTxBytesPerSecond:      g.PCIeTxBytesPerSec,
			PcieRxBytesPerSecond:      g.PCIeRxBytesPerSec,
			GpuUtilizationPercent:     int32(g.UtilGPU),
			MemoryUtilizationPercent:  int32(g.UtilMem),
			TemperatureCelsius:        int32(g.TemperatureC),
			PowerWatts:                g.PowerWatts,
			PcieLinkGeneration:        uint32(max(g.LinkGen, 0)),
			PcieLinkWidth:             uint32(max(g.LinkWidth, 0)),
			PcieLinkMaxGeneration:     uint32(max(g.LinkMaxGen, 0)),
			PcieLinkMaxWidth:          uint32(max(g.LinkMaxWidth, 0)),
			PcieLinkMaxBytesPerSecond: g.LinkMaxBytesPerSec,
		})
	}
	return out, ""
}

// gpuCollector exports the kvtier_gpu_* series at scrape time.
type gpuCollector struct{ c *gpuCache }

var (
	gpuLabels        = []string{"gpu", "name"}
	descGPUMemUsed   = prometheus.NewDesc("kvtier_gpu_memory_used_bytes", "Device memory in use, all processes (NVML).", gpuLabels, nil)
	descGPUMemTotal  = prometheus.NewDesc("kvtier_gpu_memory_total_bytes", "Device memory in total (NVML).", gpuLabels, nil)
	descGPUPCIe      = prometheus.NewDesc("kvtier_gpu_pcie_throughput_bytes_per_second", "PCIe traffic over NVML's last 20 ms sample; direction tx is from the GPU, rx into it.", append(gpuLabels, "direction"), nil)
	descGPUUtil      = prometheus.NewDesc("kvtier_gpu_utilization_ratio", "GPU (resource=gpu) and memory bandwidth (resource=memory) utilization over the driver's sample period, 0 to 1.", append(gpuLabels, "resource"), nil)
	descGPUTemp      = prometheus.NewDesc("kvtier_gpu_temperature_celsius", "GPU die temperature.", gpuLabels, nil)
	descGPUPower     = prometheus.NewDesc("kvtier_gpu_power_watts", "Board power draw.", gpuLabels, nil)
	descGPULinkGen   = prometheus.NewDesc("kvtier_gpu_pcie_link_generation", "PCIe link generation now (state=current; it drops at idle) and at most (state=max).", append(gpuLabels, "state"), nil)
	descGPULinkWidth = prometheus.NewDesc("kvtier_gpu_pcie_link_width", "PCIe link width in lanes now (state=current) and at most (state=max).", append(gpuLabels, "state"), nil)
	descGPULinkMax   = prometheus.NewDesc("kvtier_gpu_pcie_link_max_bytes_per_second", "Per-direction PCIe bandwidth at the link's maximum generation and width.", gpuLabels, nil)
	descGPUUp        = prometheus.NewDesc("kvtier_gpu_telemetry_up", "1 when the last NVML reading succeeded, 0 when it failed.", nil, nil)
	gpuDescs         = []*prometheus.Desc{descGPUMemUsed, descGPUMemTotal, descGPUPCIe, descGPUUtil, descGPUTemp, descGPUPower, descGPULinkGen, descGPULinkWidth, descGPULinkMax, descGPUUp}
)

func (gpuCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range gpuDescs {
		ch <- d
	}
}

func (c gpuCollector) Collect(ch chan<- prometheus.Metric) {
	gs, err := c.c.read()
	up := 1.0
	if err != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(descGPUUp, prometheus.GaugeValue, up)
	for _, g := range gs {
		lv := []string{strconv.Itoa(g.Index), g.Name}
		gauge := func(d *prometheus.Desc, v float64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append(lv, extra...)...)
		}
		// Unknown readings (negative, or a link of 0) are left out rather
		// than exported as a value that looks real.
		known := func(d *prometheus.Desc, v float64, extra ...string) {
			if v >= 0 {
				gauge(d, v, extra...)
			}
		}
		positive := func(d *prometheus.Desc, v float64, extra ...string) {
			if v > 0 {
				gauge(d, v, extra...)
			}
		}
		gauge(descGPUMemUsed, float64(g.MemUsed))
		gauge(descGPUMemTotal, float64(g.MemTotal))
		known(descGPUPCIe, g.PCIeTxBytesPerSec, "tx")
		known(descGPUPCIe, g.PCIeRxBytesPerSec, "rx")
		if g.UtilGPU >= 0 {
			gauge(descGPUUtil, float64(g.UtilGPU)/100, "gpu")
		}
		if g.UtilMem >= 0 {
			gauge(descGPUUtil, float64(g.UtilMem)/100, "memory")
		}
		known(descGPUTemp, float64(g.TemperatureC))
		known(descGPUPower, g.PowerWatts)
		positive(descGPULinkGen, float64(g.LinkGen), "current")
		positive(descGPULinkGen, float64(g.LinkMaxGen), "max")
		positive(descGPULinkWidth, float64(g.LinkWidth), "current")
		positive(descGPULinkWidth, float64(g.LinkMaxWidth), "max")
		positive(descGPULinkMax, g.LinkMaxBytesPerSec)
	}
}
