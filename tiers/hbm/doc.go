// Package hbm is the GPU-memory tier: a tiers.Tier whose blocks live in one
// device arena, allocated once at New (a size, or a fraction of the free
// device memory: FractionOfFree, CapacityFromDevice), and carved into slots
// by size class, as the DRAM arena is.
//
// Put copies a block host-to-device and Get device-to-host on the tier's own
// streams (a small pool; no goroutine per block), waiting for the copy
// before returning. Every copy is timed with events recorded around it;
// Latency reports p50/p99 of the copies and of whole operations. With
// WithHostRegion (the daemon passes its DRAM arena) the tier page-locks
// the region a chunk at a time as copies first touch it, so copies from
// and to it run at full link speed without staging, and memory that is
// never copied is never pinned (HostPinned reports the bytes).
//
// For engines on the same GPU, AttachIPC exports the arena under a lease
// and Locate gives a block's offset and length in it, so the engine copies
// device to device. Freeing an exported allocation while an importer maps
// it is undefined behaviour, so importers hold leases (RenewIPC,
// DetachIPC), Close signals Closing and frees the arena only once every
// lease has been detached or has lapsed (at most MaxIPCLease). The arena
// is allocated in whole 2 MiB granules, so the export is its own
// allocation and IPCLease.Offset is 0.
//
// Caveats:
//   - Capacity is a hard bound. Put never evicts: it returns an error
//     wrapping tiers.ErrFull, and the Store evicts HBM copies (free, since
//     DRAM is inclusive) and retries. A block larger than the arena is
//     tiers.ErrExhausted.
//   - Slots come by size class in chunks (WithChunkSize); a chunk returns to
//     the pool when its last slot is freed, so after a change in block sizes
//     the Store may evict several blocks before a chunk frees. Blocks larger
//     than half a chunk take whole chunks.
//   - A Locate offset is valid until the block is deleted or replaced;
//     the Store keeps blocks pinned while engines read them.
//   - HBM keeps no checksum; DRAM's copy is checksummed.
//   - Device calls cannot be cancelled once queued: a context is checked
//     before a copy starts and while waiting for a stream.
package hbm
