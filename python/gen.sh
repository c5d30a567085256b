#!/usr/bin/env bash
# Regenerates the Python stubs of proto/kvtier/v1 (python/kvtier/v1/), or
# checks that the committed ones are up to date. Uses Debian's protoc and
# grpc_python_plugin (packages protobuf-compiler, protobuf-compiler-grpc):
# the output then loads with Debian's python3-protobuf 3.21 and
# python3-grpcio, and proto3 `optional` fields are supported.
#
#   python/gen.sh          regenerate in place     (make py-proto)
#   python/gen.sh check    regenerate into a temp dir and diff (make py-proto-check)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
for t in protoc grpc_python_plugin; do
	command -v "$t" >/dev/null || { echo "py-proto: $t missing (apt-get install protobuf-compiler protobuf-compiler-grpc)" >&2; exit 1; }
done
gen() { # gen outdir
	mkdir -p "$1"
	protoc -I proto --python_out="$1" --grpc_python_out="$1" \
		--plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" \
		proto/kvtier/v1/kvtier.proto
}
case "${1:-generate}" in
generate)
	gen python
	;;
check)
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	gen "$tmp"
	stale=0
	for f in kvtier/v1/kvtier_pb2.py kvtier/v1/kvtier_pb2_grpc.py; do
		if ! cmp -s "$tmp/$f" "python/$f"; then
			echo "py-proto: python/$f is stale or missing; run 'make py-proto' and commit the result" >&2
			stale=1
		fi
	done
	exit $stale
	;;
*)
	echo "usage: $0 [generate|check]" >&2
	exit 2
	;;
esac
