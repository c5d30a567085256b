// Package gpulink measures the links of a GPU: host-to-device,
// device-to-host and device-to-device copy bandwidth and per-copy latency
// (p50/p99) at the block sizes kvtier moves, next to the host link's
// maximum from NVML (or sysfs), and the HBM tier's Get latency. It is the
// measurement code behind `make gpu-check` (cmd/gpulink) and is meant to be
// reused by the tier benchmark command.
//
// Method: for each direction and size, Warmup copies, then LatencyIters
// single copies each timed by events recorded around it on the stream
// (device time; p50 and p99 by nearest rank), then BandwidthBytes streamed
// as back-to-back asynchronous copies on one stream between two events.
// Host buffers are pinned (cuMemHostAlloc) by default; Registered uses an
// mmap registered with the driver (the DRAM arena's case) and Pageable the
// same mmap unregistered, as a reference.
//
// Caveats: against the fake device library (tests) the numbers are memmove
// speeds and mean nothing; LinkRatio compares with the raw link rate after
// line encoding, so about 0.8-0.9 is what a healthy PCIe link reaches.
package gpulink
