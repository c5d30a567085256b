package scripts

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// stubGo stands in for the go command: `env` answers from the environment
// (CGO_ENABLED defaults to 1), `build -o X` writes an executable X (the
// gpulink stub when X is bin/gpulink), `test` passes.
const stubGo = `#!/usr/bin/env bash
case "$1" in
version) echo "go version stub" ;;
env)
	case "$2" in
	CGO_ENABLED) echo "${CGO_ENABLED:-1}" ;;
	CC) echo "${CC:-true}" ;;
	esac ;;
build)
	out=$3
	mkdir -p "$(dirname "$out")"
	if [ "$(basename "$out")" = gpulink ]; then
		cp "$STUB_DIR/gpulink" "$out"
	else
		printf '#!/bin/sh\nexit 0\n' >"$out"
	fi
	chmod +x "$out" ;;
test) echo "ok  	stub" ;;
esac
`

// stubGpulink fails its -check run (a missed target) and writes JSON.
const stubGpulink = `#!/usr/bin/env bash
for a in "$@"; do
	if [ "$a" = -json ]; then echo '{"results":[]}'; exit 0; fi
done
echo "FAIL h2d 1MiB: 0.41 of the link maximum"
exit 1
`

type checkRun struct {
	root, out string
	stdout    string
	code      int
	took      time.Duration
}

// runCheck copies gpu-check.sh into a scratch tree (so bin/ is written
// there) and runs it with the stub go and gpulink, smi as nvidia-smi (none
// when empty), and env added.
func runCheck(t *testing.T, smi string, env ...string) checkRun {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not found")
	}
	src, err := os.ReadFile("gpu-check.sh")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	stub := filepath.Join(root, "stub")
	for _, d := range []string{filepath.Join(root, "scripts"), stub} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "scripts", "gpu-check.sh"), string(src))
	write(filepath.Join(stub, "go"), stubGo)
	write(filepath.Join(stub, "gpulink"), stubGpulink)
	if smi != "" {
		write(filepath.Join(stub, "nvidia-smi"), smi)
	}
	out := filepath.Join(root, "report")
	// Bounded, so a script that hangs fails the test instead of stalling it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "gpu-check.sh"))
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(),
		"PATH="+stub+":"+os.Getenv("PATH"),
		"GO="+filepath.Join(stub, "go"),
		"STUB_DIR="+stub,
		"GPU_CHECK_DIR="+out,
		"CGO_ENABLED=", "CC=true")
	cmd.Env = append(cmd.Env, env...)
	start := time.Now()
	b, err := cmd.CombinedOutput()
	r := checkRun{root: root, out: out, stdout: string(b), took: time.Since(start)}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("running gpu-check.sh: %v", err)
		}
		r.code = ee.ExitCode()
	}
	return r
}

const okSMI = "#!/bin/sh\necho 'NVIDIA-SMI stub'\n"

func TestGPUCheckFailingLinkKeepsEveryReport(t *testing.T) {
	r := runCheck(t, okSMI)
	if r.code != 1 {
		t.Errorf("exit %d, want 1 (a target was missed)\n%s", r.code, r.stdout)
	}
	for _, f := range []string{"gpulink.txt", "gpulink.json"} {
		b, err := os.ReadFile(filepath.Join(r.out, f))
		if err != nil || len(b) == 0 {
			t.Errorf("report %s missing or empty after a failed check (%v)\n%s", f, err, r.stdout)
		}
	}
	for _, want := range []string{"FAIL  GPU links", "FAIL h2d 1MiB", "gpu-check: FAIL", "=== summary"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q\n%s", want, r.stdout)
		}
	}
}

func TestGPUCheckHungNvidiaSMIIsBounded(t *testing.T) {
	if _, err := exec.LookPath("timeout"); err != nil {
		t.Skip("timeout(1) not found")
	}
	r := runCheck(t, "#!/bin/sh\nexec sleep 600\n", "GPU_CHECK_SMI_TIMEOUT=1")
	if r.took > 30*time.Second {
		t.Errorf("a hung nvidia-smi held the script for %v", r.took)
	}
	if !strings.Contains(r.stdout, "did not answer within 1s") {
		t.Errorf("output does not say nvidia-smi hung\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "=== summary") {
		t.Errorf("the script did not reach its summary\n%s", r.stdout)
	}
}

func TestGPUCheckStopsWithoutCgo(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"CGO_ENABLED=0", []string{"CGO_ENABLED=0"}, "cgo is disabled"},
		{"no C compiler", []string{"CC=kvtier-no-such-cc"}, "C compiler \"kvtier-no-such-cc\" not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCheck(t, okSMI, tc.env...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2\n%s", r.code, r.stdout)
			}
			if !strings.Contains(r.stdout, tc.want) || !strings.Contains(r.stdout, "cgo") {
				t.Errorf("output lacks %q naming cgo\n%s", tc.want, r.stdout)
			}
			if _, err := os.Stat(filepath.Join(r.root, "bin")); err == nil {
				t.Errorf("the script built something before stopping")
			}
		})
	}
}

// TestMakeGPUCheckWithoutCgo runs the real target: `CGO_ENABLED=0 make
// gpu-check` must stop at once, naming cgo, before building anything.
func TestMakeGPUCheckWithoutCgo(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not found")
	}
	cmd := exec.Command("make", "-s", "-C", "..", "gpu-check")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GPU_CHECK_DIR="+t.TempDir())
	start := time.Now()
	b, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("make gpu-check with CGO_ENABLED=0 succeeded:\n%s", b)
	}
	if !strings.Contains(string(b), "cgo is disabled") {
		t.Errorf("output does not name cgo:\n%s", b)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %v to stop", d)
	}
}
