// Package tierbench measures kvtier's tiers and links at KV block sizes,
// each next to the physical reference measured in the same run: the DRAM
// tier (the Store over the shared-memory arena) against memcpy, the NVMe
// tier (Badger, direct reads) against raw O_DIRECT reads and writes of the
// same sizes in the same directory, and, where a GPU is found, the pinned
// PCIe copies against the NVML link maximum and the HBM tier against the
// plain driver copy (package gpulink). `kvtier bench tiers` and the go
// test benchmarks here run the same code (Run, RunPair).
//
// Method: RunPair interleaves the tier and its reference in rounds of one
// batch each (about 1 MiB, 4 MiB on disk), every worker running the same
// side at once and the side that goes first alternating, so a machine
// whose memory or disk speed drifts (other tenants, a virtual disk's host
// cache) slows both alike; the ratio tier/reference is the headline.
// Bandwidth is bytes over the wall time of a side's batches; latency is
// every operation's own time, in an HDR histogram (package latency).
//
// Caveats: disk bytes never come from the page cache: reads are O_DIRECT on
// both sides; the tier's writes go through Badger's page-cache writes and
// each batch ends with a timed Sync, the reference's are O_DIRECT with a
// timed fdatasync (Row.DirectIO and Row.Note say which). O_DIRECT needs a
// file system that supports it (not tmpfs): the NVMe rows fail with
// ErrUnsupported there. Writes are measured in one order only: where a put
// lands is the tier's choice. The GPU rows are timed with device events by
// gpulink and are not interleaved with a CPU reference.
package tierbench
