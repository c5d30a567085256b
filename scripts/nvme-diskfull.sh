#!/usr/bin/env bash
# Reproduces issue 11, fault 1 with the real daemon: a 64 MiB tmpfs as
# --nvme-dir, --nvme-bytes 16MiB, a 32 MiB DRAM tier, then puts of 1 MiB
# incompressible blocks (each --durable, so it lands on NVMe before the put
# returns). Then another file takes the rest of the tmpfs; puts go on,
# `kvtier stats` and /metrics show the NVMe tier stopped; the filler is
# removed and NVMe writes resume. Needs root (mount). Usage:
#   scripts/nvme-diskfull.sh [path/to/kvtier]
set -uo pipefail
bin=${1:-bin/kvtier}
work=$(mktemp -d)
mnt=$work/fs
mkdir -p "$mnt"
mount -t tmpfs -o size=64m tmpfs "$mnt" || { echo "cannot mount a tmpfs (root needed)"; exit 1; }
sock=$work/kvtier.sock
metrics=127.0.0.1:19377
cleanup() {
	[[ -n ${pid:-} ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	umount -l "$mnt"
	rm -rf "$work"
}
trap cleanup EXIT

start() {
	"$bin" serve --socket "$sock" --nvme-dir "$mnt/nvme" --nvme-bytes 16MiB --nvme-codec raw \
		--dram-bytes 32MiB --hbm off --metrics-addr "$metrics" --log-level info 2>>"$work/daemon.log" &
	pid=$!
	for _ in $(seq 100); do [[ -S $sock ]] && return 0; sleep 0.1; done
	echo "daemon did not start:"; cat "$work/daemon.log"; exit 1
}
# put N FIRST: N puts of 1 MiB random blocks with hashes FIRST, FIRST+1, ...
put() {
	local ok=0 fail=0 last=""
	for i in $(seq "$2" $(($2 + $1 - 1))); do
		head -c 1048576 /dev/urandom >"$work/blk"
		if out=$("$bin" put --socket "$sock" --ns bench --hash "$(printf '%032x' "$i")" --layer 0 \
			--dtype fp16 --tokens 2048 --kv-heads 2 --head-dim 64 $3 "$work/blk" 2>&1); then
			ok=$((ok + 1))
		else
			fail=$((fail + 1)); last=$out
		fi
	done
	echo "puts $3: $ok ok, $fail failed${last:+; last error: $last}"
}
nvme_line() { "$bin" stats --socket "$sock" --json | /usr/bin/python3 -c 'import json,sys; t=[t for t in json.load(sys.stdin)["tiers"] if t["name"]=="nvme"][0]; print({k:t[k] for k in ("capacity_bytes","used_bytes","blocks","writes_stopped","free_bytes","quarantined")})'; }

start
echo "== 200 durable puts of 1 MiB into a 16 MiB NVMe tier on a 64 MiB tmpfs"
put 200 0 --durable
nvme_line; df -B1 "$mnt" | tail -1
echo "== another file takes the rest of the tmpfs (leaves 3 MiB)"
dd if=/dev/urandom of="$mnt/filler" bs=1M 2>/dev/null
truncate -s -3M "$mnt/filler"
put 20 1000 --durable
put 40 2000 ""
"$bin" stats --socket "$sock" | tail -3
nvme_line
curl -s "http://$metrics/metrics" | grep -E '^kvtier_tier_(writes_stopped|free_bytes|quarantined_total)\{name="nvme"'
echo "== gets of the last blocks stored while the disk is full"
got=0; for i in $(seq 2030 2039); do "$bin" get --socket "$sock" --ns bench --hash "$(printf '%032x' "$i")" --layer 0 -o /dev/null 2>/dev/null && got=$((got+1)); done; echo "gets: $got of 10"
echo "== restart on the nearly full file system"
kill "$pid"; wait "$pid"; echo "daemon exit status $?"; pid=""
start; nvme_line
got=0; for i in $(seq 190 199); do "$bin" get --socket "$sock" --ns bench --hash "$(printf '%032x' "$i")" --layer 0 -o /dev/null 2>/dev/null && got=$((got+1)); done; echo "gets after restart (NVMe only): $got of 10"
echo "== filler removed"
rm "$mnt/filler"
sleep 6 # a store opened read-only retries a writable open every 5 s
put 5 3000 --durable
nvme_line
kill "$pid"; wait "$pid"; echo "daemon exit status $?"; pid=""
echo "== daemon log lines about space"
grep -E 'nvme: (out of disk|disk space|capacity)' "$work/daemon.log" | cut -c1-300
if grep -q 'SIGBUS\|fatal error' "$work/daemon.log"; then echo "DAEMON CRASHED"; grep -m3 'SIGBUS\|fatal error' "$work/daemon.log"; fi
