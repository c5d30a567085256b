//go:build gpu

package nvmlinfo_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/kvtier/kvtier/cgo/nvmlinfo"
)

const gpuChildEnv = "KVTIER_NVML_GPU_CHILD"

// TestGPUTelemetry reads the real NVML in a child process: this process may
// have bound go-nvml to the fake library already.
func TestGPUTelemetry(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestGPUTelemetryChild$", "-test.v")
	cmd.Env = append(os.Environ(), gpuChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil || !strings.Contains(string(out), "telemetry ok") {
		t.Fatalf("child: %v", err)
	}
}

func TestGPUTelemetryChild(t *testing.T) {
	if os.Getenv(gpuChildEnv) == "" {
		t.Skip("run by TestGPUTelemetry")
	}
	tel, err := nvmlinfo.Read()
	if err != nil {
		t.Fatalf("the gpu-tagged tests need NVML: %v", err)
	}
	t.Logf("telemetry: %+v (link max %.1f GB/s)", tel, tel.LinkMaxBytesPerSec/1e9)
	if tel.Name == "" || tel.MemTotal <= 0 || tel.MemFree > tel.MemTotal || tel.PCIeMaxGen <= 0 || tel.LinkMaxBytesPerSec <= 0 {
		t.Fatalf("implausible telemetry %+v", tel)
	}
	t.Log("telemetry ok")
}
