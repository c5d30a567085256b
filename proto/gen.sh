#!/usr/bin/env bash
# Regenerates the Go code for proto/kvtier/v1, or checks that the committed
# code is up to date. Everything comes from the Go module proxy at pinned
# versions; no system protoc is needed.
#
#   proto/gen.sh          lint, then regenerate in place     (make proto)
#   proto/gen.sh check    lint, regenerate into a temp dir and diff (make proto-check)
#
# The tools are built once into bin/proto-tools/<versions>/ and reused while
# the versions below stay the same.
set -euo pipefail

BUF_VERSION=v1.75.0
PROTOC_GEN_GO_VERSION=v1.36.12      # matches google.golang.org/protobuf in go.mod
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

root=$(cd "$(dirname "$0")/.." && pwd)
go=${GO:-go}
tools="$root/bin/proto-tools/buf-$BUF_VERSION.go-$PROTOC_GEN_GO_VERSION.grpc-$PROTOC_GEN_GO_GRPC_VERSION"

install_tool() { # install_tool binary module-path@version
	if [[ ! -x "$tools/$1" ]]; then
		echo "proto: building $2" >&2
		# Outside the main module so its go.mod is not consulted or changed.
		(cd / && GOBIN="$tools" GOFLAGS=-mod=mod "$go" install "$2")
	fi
}
install_tool buf github.com/bufbuild/buf/cmd/buf@$BUF_VERSION
install_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION
install_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION

export PATH="$tools:$PATH"
# buf keeps a cache; keep it inside the build tree, not in $HOME.
export BUF_CACHE_DIR="$root/bin/proto-tools/cache"
cd "$root/proto"
buf lint

case "${1:-generate}" in
generate)
	buf generate
	;;
check)
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	buf generate -o "$tmp"
	stale=0
	while IFS= read -r f; do
		rel=${f#"$tmp"/}
		if ! cmp -s "$f" "$rel"; then
			echo "proto: $rel is stale or missing; run 'make proto' and commit the result" >&2
			stale=1
		fi
	done < <(find "$tmp" -type f -name '*.go')
	while IFS= read -r f; do
		if [[ ! -e "$tmp/$f" ]]; then
			echo "proto: $f has no .proto source any more; delete it" >&2
			stale=1
		fi
	done < <(find . -type f \( -name '*.pb.go' -o -name '*_grpc.pb.go' \))
	if [[ $stale -ne 0 ]]; then exit 1; fi
	echo "proto: generated code is up to date" >&2
	;;
*)
	echo "usage: proto/gen.sh [generate|check]" >&2
	exit 2
	;;
esac
