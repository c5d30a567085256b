# kvtier — build, test, run. Everything here installs what it needs from the
# Go module proxy; no system protoc is required.
GO      ?= go
BIN     ?= bin/kvtier
PKGS    ?= ./...
# CI runs on 2 cores: keep the race-enabled suite under 10 minutes there.
TESTFLAGS ?= -race -timeout 15m

.PHONY: all build build-nocgo test vet run bench proto proto-check fmt lint gpu-check clean soak

# go-nvml's headers use deprecated declarations; keep the build output readable.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

all: build

build:
	$(GO) build -o $(BIN) ./cmd/kvtier

# The binary must also build without cgo (the GPU is then reported unavailable).
build-nocgo:
	CGO_ENABLED=0 $(GO) build -o $(BIN)-nocgo ./cmd/kvtier

vet:
	$(GO) vet $(PKGS)

test: vet build-nocgo proto-check
	$(GO) test $(TESTFLAGS) $(PKGS)

# Regenerate proto/kvtier/v1's Go code: buf and the protoc plugins are pinned
# in proto/gen.sh and built once from the Go module proxy into bin/proto-tools.
proto:
	GO=$(GO) proto/gen.sh generate

# Fail when the committed generated code differs from what `make proto` makes.
proto-check:
	GO=$(GO) proto/gen.sh check

run: build
	$(BIN) serve

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# Soak (not part of test): a fresh daemon under 64 clients on both data
# planes for 10 minutes, sampled every minute. Shorten with
# SOAKFLAGS='-duration 2m -interval 20s'.
SOAKFLAGS ?=
soak: build
	$(GO) build -o bin/soak ./benchmarks/soak
	bin/soak -kvtier $(BIN) $(SOAKFLAGS)

fmt:
	gofmt -s -w $$(git ls-files '*.go')

lint: vet
	@out=$$(gofmt -s -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# On a machine with an NVIDIA GPU: GPU-tagged tests against the real driver,
# link bandwidth and latency next to the NVML link maximum, and a summary.
gpu-check:
	bash scripts/gpu-check.sh

clean:
	rm -rf bin
