// Package tiers owns block identity and the tier hierarchy.
//
// # Blocks and keys
//
// A block is a fixed-size piece of an LLM's KV cache: K and V for a run of
// tokens, for one layer or for all layers (Key.Layer == AllLayers). It is
// identified by a Key: a namespace (model, LoRA, tenant; isolates caches), a
// chained prefix hash (16 or 32 bytes, see package tiers/prefixhash), and
// the layer. Its Layout (dtype, layers, kv heads, head dim, tokens) travels
// with it; a block whose byte count does not match its layout is rejected.
//
// # Tiers
//
// A Tier is keyed block storage with a hard byte capacity: NVMe
// (tiers/nvme, on Badger) and HBM (tiers/hbm, GPU memory). DRAM is a
// HostTier instead (tiers/dram, an arena outside the Go heap): slots
// addressed by offset and generation, with no key index of its own, since
// the Store's index records each block's DRAM slot. Tiers know nothing of
// each other.
//
// # The Store
//
// Store owns the hierarchy: one index of every cached block, which levels
// hold a copy, recency per level, pins, and movement between levels:
//
//   - DRAM is the landing tier. Put copies the block there (or Reserve and
//     Commit let a client write it in place) and queues it for NVMe.
//   - NVMe is a write-behind copy of DRAM, so evicting a persisted DRAM block
//     is free and a restart finds NVMe warm. A durable put returns only once
//     its NVMe copy is synced. The write-behind queue is bounded; a full
//     queue makes Put wait.
//   - HBM is filled on request (GetOptions.Promote) and is included in DRAM:
//     evicting a block from DRAM drops its HBM copy.
//   - Get pins the block and returns its DRAM bytes in place, promoting it
//     from NVMe first if needed. Release unpins it.
//   - When a tier is full, unpinned copies are evicted, least recently used
//     first: exactly when the oldest copy is free to drop (the shard with
//     the oldest list tail is asked first), approximately otherwise (the
//     oldest of eight shards' candidates, shards taken round robin). Where a
//     copy is a block's last, chain leaves go first (blocks no cached block
//     continues, known from PutOptions.Parent), so every chain's cached part
//     stays a prefix. A DRAM copy NVMe lacks is demoted (written to NVMe)
//     before it is dropped. Pinned blocks are never evicted: when everything
//     is pinned, the operation fails with ErrExhausted and nothing is lost.
//   - Every copy on NVMe carries a checksum. A copy that fails it is a miss:
//     counted, removed, never returned.
//   - One codec policy (Config.Codecs, default DefaultCodecs: DRAM raw, NVMe
//     lossless) says per namespace how DRAM and NVMe keep blocks. DRAM may
//     keep them compressed: the slot holds the block's codec frame, and Get
//     decodes it into a staging slot shared by the block's readers and
//     freed on the last Release. The Store encodes NVMe copies and the NVMe
//     tier stores frames (FrameTier); a frame moves between DRAM and NVMe
//     as it is when it is in the mode the other side keeps, and is decoded
//     and encoded again otherwise, so each tier's mode always holds.
//
// Lookup answers how many leading blocks of a chain are cached, and where.
//
// # Caveats
//
// Block.Data and Reservation.Data point into the DRAM arena (for a
// compressed block, into its staging slot). They are valid until Release
// (for a Block) or Commit/Abort (for a Reservation), never after, and never
// after Close. A Get of a block DRAM keeps in a quantized mode returns the
// decoded values, not the bytes that were put. Blocks are content-addressed: a put of a key
// that is already cached with the same layout only refreshes its recency.
//
// # Concurrency
//
// Store is safe for concurrent use. The index is split into shards, each
// with its own lock; no lock is held across NVMe reads or writes except to
// delete a copy, and no shard lock is held while another is taken. A fixed
// pool of goroutines performs write-behind; none is started per block.
package tiers
