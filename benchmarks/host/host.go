package host

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/kvtier/kvtier/cgo/nvmlinfo"
)

// Info is a host description. Zero fields are unknown.
type Info struct {
	CPUModel string `json:"cpu_model,omitempty"`
	Cores    int    `json:"cores"`
	MemBytes int64  `json:"mem_bytes,omitempty"`
	OS       string `json:"os"`
	Disk     *Disk  `json:"disk,omitempty"`
	GPU      *GPU   `json:"gpu,omitempty"`
	// Note is the caller's remark on the host (e.g. "shared machine").
	Note string `json:"note,omitempty"`
}

// Disk is the block device and file system under a directory.
type Disk struct {
	Dir        string `json:"dir"`
	Device     string `json:"device,omitempty"`
	FileSystem string `json:"fs,omitempty"`
	Model      string `json:"model,omitempty"`
	Rotational bool   `json:"rotational,omitempty"`
}

// GPU is what NVML reports of the first GPU.
type GPU struct {
	Name               string  `json:"name"`
	MemBytes           int64   `json:"mem_bytes"`
	PCIe               string  `json:"pcie,omitempty"`
	LinkMaxBytesPerSec float64 `json:"link_max_bytes_per_sec,omitempty"`
}

// Describe returns the host description; diskDir ("" for none) names the
// directory whose disk and file system to describe.
func Describe(diskDir string) Info {
	in := Info{Cores: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	in.CPUModel, in.MemBytes = cpuAndMem()
	if diskDir != "" {
		d := describeDisk(diskDir)
		in.Disk = &d
	}
	if t, err := nvmlinfo.Read(); err == nil {
		g := GPU{Name: t.Name, MemBytes: t.MemTotal, LinkMaxBytesPerSec: t.LinkMaxBytesPerSec}
		if t.PCIeGen > 0 {
			g.PCIe = fmt.Sprintf("gen%d x%d (max gen%d x%d)", t.PCIeGen, t.PCIeWidth, t.PCIeMaxGen, t.PCIeMaxWidth)
		}
		in.GPU = &g
	}
	return in
}

// String is a one-line summary for table headers.
func (in Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s, %d cores", orUnknown(in.CPUModel), in.Cores)
	if in.MemBytes > 0 {
		fmt.Fprintf(&b, ", %.1f GiB memory", float64(in.MemBytes)/(1<<30))
	}
	if d := in.Disk; d != nil {
		fmt.Fprintf(&b, "; disk %s (%s", orUnknown(d.Device), orUnknown(d.FileSystem))
		if d.Model != "" {
			fmt.Fprintf(&b, ", %s", d.Model)
		}
		fmt.Fprintf(&b, ") at %s", d.Dir)
	}
	if g := in.GPU; g != nil {
		fmt.Fprintf(&b, "; GPU %s, %.0f GiB", g.Name, float64(g.MemBytes)/(1<<30))
		if g.PCIe != "" {
			fmt.Fprintf(&b, ", PCIe %s", g.PCIe)
		}
	} else {
		b.WriteString("; no GPU found")
	}
	if in.Note != "" {
		fmt.Fprintf(&b, "; %s", in.Note)
	}
	return b.String()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
