# kvtier — build, test, run. Go dependencies come from the Go module proxy;
# the proto targets use Debian's protoc (protobuf-compiler, installed with
# apt-get when missing) and build the two Go plugins at pinned versions.
GO      ?= go
BIN     ?= bin/kvtier
PKGS    ?= ./...
# CI runs on 2 cores: keep the race-enabled suite under 10 minutes there.
TESTFLAGS ?= -race -timeout 15m

.PHONY: all build build-nocgo test test-go vet run bench bench-go proto proto-check fmt lint gpu-check clean py-deps py-proto py-proto-check py-test soak

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

# `go vet` above runs every analyzer over the same packages and their tests,
# so go test's own vet pass (a subset, in the race build) is skipped. Tests
# that need the daemon binary use bin/kvtier (KVTIER_BIN) instead of linking
# it again. docs/make-test.md has the cold timings; scripts/cold-test.sh
# measures them.
test: vet build-nocgo proto-check py-test test-go

# The go test step of `make test` alone (it relies on make test's go vet).
test-go: build
	KVTIER_BIN=$(CURDIR)/$(BIN) $(GO) test -vet=off $(TESTFLAGS) $(PKGS)

# Regenerate proto/kvtier/v1's Go code: protoc-gen-go and protoc-gen-go-grpc
# are pinned in proto/gen.sh and built once into bin/proto-tools.
proto:
	GO=$(GO) proto/gen.sh generate

# Fail when the committed generated code differs from what `make proto` makes.
proto-check:
	GO=$(GO) proto/gen.sh check

# The Python client (python/, docs/python.md): Debian's python3 and packages.
PY ?= /usr/bin/python3
py-deps:
	PY=$(PY) python/deps.sh
py-proto: py-deps
	python/gen.sh generate
py-proto-check: py-deps
	python/gen.sh check
py-test: build py-proto-check
	KVTIER_BIN=$(CURDIR)/$(BIN) $(PY) -m pytest -q -p no:cacheprovider python/tests

run: build
	$(BIN) serve

# A short run of the built-in benchmarks (under two minutes on 2 cores):
# codec, tiers (DRAM, NVMe, promotion at 64 KiB and 1 MiB, in BENCH_DIR), load
# (a 64 KiB get sweep, against Redis when redis-server is installed).
# bench-go runs every go test benchmark instead (long).
BENCH_DIR ?= $(or $(TMPDIR),/tmp)
bench: build
	$(BIN) bench codec --modes int8,int4,lossless --time 50ms --disk-mib 64
	$(BIN) bench tiers --sizes 64KiB,1MiB --duration 150ms --dram-bytes 64MiB --nvme-set-bytes 256MiB --dir $(BENCH_DIR)
	$(BIN) bench load --scenario sweep --levels 1,4,16 --duration 1s --vs-redis

bench-go:
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
