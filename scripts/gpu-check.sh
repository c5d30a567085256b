#!/usr/bin/env bash
# gpu-check: on a machine with a GPU, build kvtier, run the GPU-tagged tests
# against the real driver, measure the GPU links (H2D, D2H, D2D bandwidth and
# p50/p99 latency at 64 KiB-4 MiB, next to the link maximum from NVML) and
# the HBM tier's Get latency, and print a summary. Every step has a time
# limit (150 s + 180 s + 100 s), so the whole script stays under 8 minutes.
#
# Environment:
#   GPULINK_ARGS   extra flags for the link measurement (see gpulink -h)
#   GPU_CHECK_DIR  where logs and the JSON report go (default bin/gpu-check)
#   GPU_CHECK_SMI_TIMEOUT  seconds each nvidia-smi/rocm-smi call may take (20)
# Exit status: 0 when every step passed, 1 when a step failed (every report
# is still written), 2 when the check cannot run here (no cgo).
set -euo pipefail
cd "$(dirname "$0")/.."

export GO=${GO:-go}
export OUT=${GPU_CHECK_DIR:-bin/gpu-check}
smi_timeout=${GPU_CHECK_SMI_TIMEOUT:-20}

# The GPU code is cgo: without it (CGO_ENABLED=0, or no C compiler, which
# makes go build turn cgo off silently) every GPU step would only report
# "built without cgo". Stop at once instead.
cgo=$($GO env CGO_ENABLED 2>/dev/null || echo 0)
cc=$($GO env CC 2>/dev/null || echo gcc)
cc=${cc%% *}
if [ "$cgo" != "1" ]; then
	echo "gpu-check: cgo is disabled (go env CGO_ENABLED=${cgo:-?}): the GPU check needs cgo and a C compiler ($cc); unset CGO_ENABLED or install gcc" >&2
	exit 2
fi
if ! command -v "$cc" >/dev/null 2>&1; then
	echo "gpu-check: C compiler \"$cc\" not found: the GPU check needs cgo, so install gcc (apt-get install -y gcc) or set CC" >&2
	exit 2
fi
mkdir -p "$OUT"
start=$SECONDS
declare -a summary=()
failed=0

# limit SECONDS FUNC: run an exported shell function in a child bash,
# killed (with everything it started) after SECONDS when timeout(1) exists.
limit() {
	local s=$1
	shift
	if command -v timeout >/dev/null 2>&1; then
		timeout --kill-after=10 "$s" bash -c 'set -euo pipefail; "$@"' _ "$@"
	else
		bash -c 'set -euo pipefail; "$@"' _ "$@"
	fi
}

# step NAME SECONDS FUNC: run a step, record PASS/FAIL and its duration.
step() {
	local name=$1 secs=$2
	shift 2
	local t0=$SECONDS rc=0
	echo
	echo "=== $name"
	limit "$secs" "$@" || rc=$?
	local took=$((SECONDS - t0))
	if [ "$rc" -eq 0 ]; then
		summary+=("PASS  $name (${took}s)")
	else
		[ "$rc" -eq 124 ] && echo "--- $name: timed out after ${secs}s"
		summary+=("FAIL  $name (${took}s, exit $rc)")
		failed=1
	fi
}

# smi TOOL ARGS: run a vendor tool with a time limit; on a hung GPU it would
# otherwise block forever.
smi() {
	local rc=0
	timeout --kill-after=5 "$smi_timeout" "$@" || rc=$?
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		echo "--- $1 did not answer within ${smi_timeout}s (a hung GPU or driver?)"
	fi
	return 0
}

echo "=== gpu-check on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
if command -v nvidia-smi >/dev/null 2>&1; then
	smi nvidia-smi
	smi nvidia-smi --query-gpu=name,pcie.link.gen.max,pcie.link.width.max,pcie.link.gen.current,pcie.link.width.current --format=csv
elif command -v rocm-smi >/dev/null 2>&1; then
	smi rocm-smi
else
	echo "nvidia-smi not found"
fi
$GO version

build() {
	$GO build -o bin/kvtier ./cmd/kvtier &&
		CGO_ENABLED=0 $GO build -o bin/kvtier-nocgo ./cmd/kvtier &&
		$GO build -o bin/gpulink ./benchmarks/gpulink/cmd/gpulink
}
export -f build
step "build (kvtier, kvtier without cgo, gpulink)" 150 build

gpu_tests() {
	local rc=0
	$GO test -tags gpu -count=1 -timeout 160s -v ./cgo/... ./tiers/hbm/... >"$OUT/test.log" 2>&1 || rc=$?
	# The verdicts, and what the GPU tests logged about the device.
	grep -E '^(--- (FAIL|PASS): TestGPU|ok |FAIL|panic)|device:|telemetry:|latency:' "$OUT/test.log" || true
	if [ "$rc" -ne 0 ]; then
		echo "--- failures (full log in $OUT/test.log):"
		grep -E -- '--- FAIL|^[[:space:]]+[[:alnum:]_]+_test\.go:[0-9]+:' "$OUT/test.log" | head -80 || tail -60 "$OUT/test.log"
	fi
	return "$rc"
}
export -f gpu_tests
step "GPU-tagged tests against the real driver (go test -tags gpu ./cgo/... ./tiers/hbm/...)" 180 gpu_tests

links() {
	[ -x bin/gpulink ] || { echo "bin/gpulink was not built"; return 1; }
	# No pipe here: under set -e and pipefail a failing gpulink would end
	# the step before the JSON report is written. Both runs always happen
	# and each has its own deadline inside the step's 100 s.
	local rc=0
	# shellcheck disable=SC2086 # GPULINK_ARGS is a list of flags
	bin/gpulink -check -timeout 55s -min-ratio 0.8 -tier-size 1MiB -tier-gets 1000 ${GPULINK_ARGS:-} >"$OUT/gpulink.txt" 2>&1 || rc=$?
	cat "$OUT/gpulink.txt"
	[ "$rc" -eq 0 ] || echo "--- gpulink -check exited $rc"
	local jrc=0
	# shellcheck disable=SC2086
	bin/gpulink -json -timeout 30s -iters 50 -bw-bytes 256MiB -tier-gets 200 ${GPULINK_ARGS:-} >"$OUT/gpulink.json" 2>"$OUT/gpulink-json.err" || jrc=$?
	[ "$jrc" -eq 0 ] || echo "--- gpulink -json exited $jrc (stderr in $OUT/gpulink-json.err)"
	echo "reports: $OUT/gpulink.txt $OUT/gpulink.json"
	return "$rc"
}
export -f links
step "GPU links: H2D/D2H >= 0.8x link max at 1 MiB and 4 MiB; HBM tier get latency" 100 links

echo
echo "=== summary ($((SECONDS - start))s)"
for line in "${summary[@]}"; do
	echo "$line"
done
if [ -f "$OUT/gpulink.txt" ]; then
	grep -E '^(PASS|FAIL) |^hbm tier get' "$OUT/gpulink.txt" | sed 's/^/  /' || true
fi
if [ "$failed" -ne 0 ]; then
	echo "gpu-check: FAIL"
	exit 1
fi
echo "gpu-check: PASS"
