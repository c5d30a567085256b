// Package gputest builds and controls the fake GPU driver used by kvtier's
// tests, so the cgo binding (cgo/gpu), the HBM tier and the Store's use of
// HBM are exercised in CI, which has no GPU.
//
// BuildFake compiles testdata/fakegpu.c with the system C compiler into the
// test's temporary directory and loads it. The fake exports the CUDA driver
// and HIP runtime symbols that cgo/gpu binds, implemented over host memory:
// device memory is bounded (out of memory), copies are range-checked and run
// synchronously, events read a monotonic clock, CUDA calls fail without a
// current context (so thread binding is tested), IPC handles can be opened
// from another process. Fail injects an error into any entry point on its
// Nth call; Stat and Calls expose counters and live objects for leak checks;
// Flag variants drop symbols (missing required symbol, _v2 fallback, no
// optional symbols, one vendor only).
//
// Caveats: every BuildFake call loads a separate copy of the library, with
// its own state, that stays loaded until the process exits. Without a C
// compiler the tests are skipped, unless the CI environment variable is set,
// in which case they fail. Without cgo, BuildFake skips the same way.
//
// CompileC is the compiler helper on its own, for other fake libraries
// (cgo/nvmlinfo builds a fake NVML with it).
package gputest
