#!/usr/bin/env bash
# Times each step of `make test` from a cold build cache: a fresh clone of
# HEAD, an empty GOCACHE (the module cache, GOMODCACHE, stays as it is, so
# nothing is downloaded), no bin/ (so the proto plugins are built too).
#
#   scripts/cold-test.sh [outdir]     (default: a new temp dir)
#
# Writes steps.txt (wall, user, sys seconds per step) and go-test.json
# (go test -json), and prints the slowest packages of the go test step.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$(mktemp -d /tmp/kvtier-cold.XXXX)}
mkdir -p "$out"
clone="$out/clone"
rm -rf "$clone"
git clone -q --no-hardlinks "$src" "$clone"
export GOCACHE="$out/gocache"
rm -rf "$GOCACHE"
echo "cold make test in $clone; GOCACHE=$GOCACHE (empty), GOMODCACHE=$(go env GOMODCACHE) (kept); $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/steps.txt"
step() { # step name make-args...
	local name=$1
	shift
	/usr/bin/time -f "$name %e s wall %U s user %S s sys" -a -o "$out/steps.txt" make -C "$clone" "$@" >"$out/$name.log" 2>&1 ||
		{ echo "$name failed; see $out/$name.log" | tee -a "$out/steps.txt"; }
	tail -n 1 "$out/steps.txt"
}
step vet vet
step build-nocgo build-nocgo
step proto-check proto-check
step py-test py-test
step test-go test-go TESTFLAGS="-race -timeout 15m -json"
mv "$out/test-go.log" "$out/go-test.json"
awk '{w+=$2; u+=$5; s+=$8} END {printf "total %.0f s wall %.0f s user %.0f s sys\n", w, u, s}' <(grep ' s wall ' "$out/steps.txt") | tee -a "$out/steps.txt"
/usr/bin/python3 - "$out/go-test.json" <<'PY'
import json, sys
pk = {}
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("Action") in ("pass", "fail", "skip") and not e.get("Test"):
        pk[e.get("Package", "?")] = (e["Action"], e.get("Elapsed", 0))
print("slowest packages (test run time, not build):")
for p, (a, el) in sorted(pk.items(), key=lambda x: -x[1][1])[:8]:
    print(f"  {el:7.1f} s {a} {p}")
PY
