package nvmlinfo_test

import (
	_ "embed"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kvtier/kvtier/cgo/gpu/gputest"
	"github.com/kvtier/kvtier/cgo/nvmlinfo"
)

//go:embed testdata/fakenvml.c
var fakeNVML []byte

var (
	fakeOnce sync.Once
	fakeDir  string // holds the process's one fake NVML; removed by TestMain
	fakeErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fakeDir != "" {
		os.RemoveAll(fakeDir)
	}
	os.Exit(code)
}

// fakePath returns the fake NVML library, built once per process: go-nvml
// binds its calls to the first NVML it loads (RTLD_GLOBAL), so a test
// process must keep to one.
func fakePath(t *testing.T) string {
	t.Helper()
	gputest.RequireCgo(t)
	built := gputest.CompileC(t, "libnvidia-ml.so.1", fakeNVML)
	fakeOnce.Do(func() {
		if fakeDir, fakeErr = os.MkdirTemp("", "kvtier-nvml-"); fakeErr != nil {
			return
		}
		var b []byte
		if b, fakeErr = os.ReadFile(built); fakeErr == nil {
			fakeErr = os.WriteFile(filepath.Join(fakeDir, "libnvidia-ml.so.1"), b, 0o700)
		}
	})
	if fakeErr != nil {
		t.Fatal(fakeErr)
	}
	return filepath.Join(fakeDir, "libnvidia-ml.so.1")
}

func TestLinkBandwidth(t *testing.T) {
	tests := []struct {
		name       string
		gen, width int
		want       float64 // bytes per second, per direction
	}{
		{"gen3 x16", 3, 16, 15.754e9},
		{"gen4 x16", 4, 16, 31.508e9},
		{"gen5 x16", 5, 16, 63.015e9},
		{"gen5 x8", 5, 8, 31.508e9},
		{"gen1 x1", 1, 1, 0.25e9},
		{"gen6 x16", 6, 16, 121e9},
		{"unknown gen", 9, 16, 0},
		{"no width", 4, 0, 0},
		{"zero", 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := nvmlinfo.LinkBandwidth(tc.gen, tc.width)
			if math.Abs(got-tc.want) > tc.want*1e-3 {
				t.Fatalf("LinkBandwidth(%d, %d) = %.4g, want %.4g", tc.gen, tc.width, got, tc.want)
			}
		})
	}
}

func TestNoLibrary(t *testing.T) {
	_, err := nvmlinfo.Read(nvmlinfo.WithLibraryPath(filepath.Join(t.TempDir(), "libnvidia-ml.so.1")))
	if !errors.Is(err, nvmlinfo.ErrUnavailable) {
		t.Fatalf("Read without a library: %v, want ErrUnavailable", err)
	}
}

func TestFake(t *testing.T) {
	path := fakePath(t)
	want0 := nvmlinfo.Telemetry{
		Name: "Fake NVML GPU 0", PCIBusID: "00000000:10:00.0",
		MemTotal: 80 << 30, MemFree: 79 << 30,
		PCIeGen: 1, PCIeWidth: 16, PCIeMaxGen: 5, PCIeMaxWidth: 16,
		LinkMaxBytesPerSec: nvmlinfo.LinkBandwidth(5, 16),
		UtilGPU:            37,
		UtilMem:            12,
		MemUsed:            1 << 30,
		// The fake exports no throughput, temperature or power queries.
		PCIeTxBytesPerSec: -1, PCIeRxBytesPerSec: -1, TemperatureC: -1, PowerWatts: -1,
	}
	want1 := want0
	want1.Name, want1.PCIBusID, want1.MemFree, want1.MemUsed = "Fake NVML GPU 1", "00000000:11:00.0", 78<<30, 2<<30
	unsup := want0
	unsup.PCIeGen, unsup.PCIeWidth, unsup.PCIeMaxGen, unsup.PCIeMaxWidth = 0, 0, 0, 0
	unsup.LinkMaxBytesPerSec, unsup.UtilGPU, unsup.UtilMem = 0, -1, -1
	tests := []struct {
		name    string
		env     map[string]string
		opts    []nvmlinfo.Option
		want    nvmlinfo.Telemetry
		wantErr string // substring; the error must wrap ErrUnavailable
	}{
		{name: "first device", want: want0},
		{name: "by index", env: map[string]string{"FAKENVML_DEVICES": "2"}, opts: []nvmlinfo.Option{nvmlinfo.WithIndex(1)}, want: want1},
		{name: "by CUDA bus id", env: map[string]string{"FAKENVML_DEVICES": "2"}, opts: []nvmlinfo.Option{nvmlinfo.WithPCIBusID("0000:11:00.0")}, want: want1},
		{name: "bus id absent", opts: []nvmlinfo.Option{nvmlinfo.WithPCIBusID("0000:3b:00.0")}, wantErr: "0000:3b:00.0"},
		{name: "index out of range", opts: []nvmlinfo.Option{nvmlinfo.WithIndex(1)}, wantErr: "1 present"},
		{name: "no devices", env: map[string]string{"FAKENVML_DEVICES": "0"}, wantErr: "0 present"},
		{name: "driver not loaded", env: map[string]string{"FAKENVML_INIT": "9"}, wantErr: "Driver Not Loaded"},
		{name: "queries not supported", env: map[string]string{"FAKENVML_NOTSUP": "1"}, want: unsup},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			got, err := nvmlinfo.Read(append([]nvmlinfo.Option{nvmlinfo.WithLibraryPath(path)}, tc.opts...)...)
			if tc.wantErr != "" {
				if !errors.Is(err, nvmlinfo.ErrUnavailable) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v: want ErrUnavailable mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestReaderReuse(t *testing.T) {
	r, err := nvmlinfo.Open(nvmlinfo.WithLibraryPath(fakePath(t)))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if tel, err := r.Read(); err != nil || tel.Name == "" {
				t.Errorf("Read: %+v, %v", tel, err)
			}
		}()
	}
	wg.Wait()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(); !errors.Is(err, nvmlinfo.ErrClosed) {
		t.Fatalf("Read after Close: %v, want ErrClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

const childEnv = "KVTIER_NVML_CHILD"

// TestMissingSymbols loads an NVML without the PCIe link entry points (an
// old driver) in a child process (this process is bound to the full fake):
// the reading must come back with zero link fields, not abort the process.
func TestMissingSymbols(t *testing.T) {
	gputest.RequireCgo(t)
	path := gputest.CompileC(t, "libnvidia-ml.so.1", fakeNVML, "-DFAKE_NO_PCIE")
	cmd := exec.Command(os.Args[0], "-test.run=^TestMissingSymbolsChild$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nvml child ok") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func TestMissingSymbolsChild(t *testing.T) {
	path := os.Getenv(childEnv)
	if path == "" {
		t.Skip("run by TestMissingSymbols")
	}
	tel, err := nvmlinfo.Read(nvmlinfo.WithLibraryPath(path))
	if err != nil {
		t.Fatal(err)
	}
	if tel.Name == "" || tel.PCIeGen != 0 || tel.PCIeMaxGen != 0 || tel.LinkMaxBytesPerSec != 0 || tel.UtilGPU != 37 {
		t.Fatalf("telemetry %+v", tel)
	}
	t.Log("nvml child ok")
}
