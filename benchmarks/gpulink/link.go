package gpulink

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kvtier/kvtier/cgo/gpu"
	"github.com/kvtier/kvtier/cgo/nvmlinfo"
)

// Link describes the host link of a GPU and its maximum.
type Link struct {
	Source string `json:"source"` // "nvml", "sysfs", or "" when unknown
	Name   string `json:"name,omitempty"`
	// Current and maximum PCIe generation and width.
	Gen      int `json:"gen,omitempty"`
	Width    int `json:"width,omitempty"`
	MaxGen   int `json:"max_gen,omitempty"`
	MaxWidth int `json:"max_width,omitempty"`
	// MaxBytesPerSec is the per-direction link maximum; 0 when unknown.
	MaxBytesPerSec float64 `json:"max_bytes_per_sec"`
	// UtilGPU is the GPU utilization when the link was read (NVML), -1
	// when unknown: a busy GPU explains a slow measurement.
	UtilGPU int `json:"util_gpu"`
}

// LinkFor finds dev's host link: from NVML (matched by PCI bus id, or the
// first device when the driver gives no bus id), else from sysfs, else an
// empty Link. nvmlOpts go to nvmlinfo (a library path, in tests).
func LinkFor(dev gpu.Device, nvmlOpts ...nvmlinfo.Option) Link {
	info := dev.Info()
	opts := nvmlOpts
	if info.PCIBusID != "" {
		opts = append(opts, nvmlinfo.WithPCIBusID(info.PCIBusID))
	}
	if info.Vendor == gpu.VendorCUDA {
		if t, err := nvmlinfo.Read(opts...); err == nil {
			return Link{
				Source: "nvml", Name: t.Name,
				Gen: t.PCIeGen, Width: t.PCIeWidth, MaxGen: t.PCIeMaxGen, MaxWidth: t.PCIeMaxWidth,
				MaxBytesPerSec: t.LinkMaxBytesPerSec, UtilGPU: t.UtilGPU,
			}
		}
	}
	if l, err := linkFromSysfs("/sys/bus/pci/devices", info.PCIBusID); err == nil {
		return l
	}
	return Link{UtilGPU: -1}
}

var errNoSysfs = errors.New("gpulink: no sysfs link information")

// linkFromSysfs reads max_link_speed ("32.0 GT/s PCIe") and max_link_width
// of the PCI device busID under root.
func linkFromSysfs(root, busID string) (Link, error) {
	if busID == "" {
		return Link{}, errNoSysfs
	}
	dir := filepath.Join(root, sysfsID(busID))
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	gen := genOfSpeed(read("max_link_speed"))
	width, _ := strconv.Atoi(read("max_link_width"))
	if gen == 0 || width == 0 {
		return Link{}, errNoSysfs
	}
	l := Link{Source: "sysfs", MaxGen: gen, MaxWidth: width, UtilGPU: -1,
		MaxBytesPerSec: nvmlinfo.LinkBandwidth(gen, width)}
	l.Gen = genOfSpeed(read("current_link_speed"))
	l.Width, _ = strconv.Atoi(read("current_link_width"))
	return l, nil
}

// genOfSpeed maps a sysfs link speed ("16.0 GT/s PCIe") to a generation.
func genOfSpeed(s string) int {
	f, _, _ := strings.Cut(s, " ")
	switch f {
	case "2.5":
		return 1
	case "5.0", "5":
		return 2
	case "8.0", "8":
		return 3
	case "16.0", "16":
		return 4
	case "32.0", "32":
		return 5
	case "64.0", "64":
		return 6
	}
	return 0
}

// sysfsID turns a bus id as CUDA or NVML print it ("00000000:3B:00.0")
// into sysfs's device name (dddd:bb:dd.f, lower case).
func sysfsID(busID string) string {
	id := strings.ToLower(busID)
	if dom, rest, ok := strings.Cut(id, ":"); ok && len(dom) > 4 {
		id = dom[len(dom)-4:] + ":" + rest
	}
	return id
}
