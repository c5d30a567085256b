#!/usr/bin/env bash
# Regenerates the Go code for proto/kvtier/v1, or checks that the committed
# code is up to date.
#
#   proto/gen.sh          regenerate in place                    (make proto)
#   proto/gen.sh check    regenerate into a temp dir and compare (make proto-check)
#
# protoc is Debian's (package protobuf-compiler, installed with apt-get when
# missing); the two Go plugins are built from the Go module proxy at the
# versions pinned below, once, into bin/proto-tools/<versions>/. Building them
# takes seconds, where buf and its dependency tree took minutes on a cold cache.
#
# The generated files name the protoc that made them; that line is written as
# "(unknown)" so the committed bytes do not depend on the distribution's
# protoc release (the code itself does not: protoc only parses the .proto).
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12      # matches google.golang.org/protobuf in go.mod
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

root=$(cd "$(dirname "$0")/.." && pwd)
go=${GO:-go}
tools="$root/bin/proto-tools/go-$PROTOC_GEN_GO_VERSION.grpc-$PROTOC_GEN_GO_GRPC_VERSION"

if ! command -v protoc >/dev/null; then
	echo "proto: protoc missing; installing Debian's protobuf-compiler" >&2
	sudo=; [[ $(id -u) -eq 0 ]] || sudo=sudo
	$sudo apt-get install -y --no-install-recommends protobuf-compiler >&2
fi

install_tool() { # install_tool binary module-path@version
	if [[ ! -x "$tools/$1" ]]; then
		echo "proto: building $2" >&2
		# Outside the main module so its go.mod is not consulted or changed.
		(cd / && GOBIN="$tools" GOFLAGS=-mod=mod "$go" install "$2")
	fi
}
install_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION
install_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION

gen() { # gen outdir
	protoc -I . \
		--plugin=protoc-gen-go="$tools/protoc-gen-go" \
		--plugin=protoc-gen-go-grpc="$tools/protoc-gen-go-grpc" \
		--go_out="$1" --go_opt=paths=source_relative \
		--go-grpc_out="$1" --go-grpc_opt=paths=source_relative,require_unimplemented_servers=true \
		$(find kvtier -name '*.proto' | sort)
	find "$1" -name '*.pb.go' -exec sed -i -E \
		-e 's|^(// 	protoc        ).*$|\1(unknown)|' \
		-e 's|^(// - protoc             ).*$|\1(unknown)|' {} +
}

cd "$root/proto"
case "${1:-generate}" in
generate)
	gen .
	;;
check)
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	gen "$tmp"
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
