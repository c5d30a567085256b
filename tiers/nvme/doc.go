// Package nvme is the NVMe tier of kvtier: KV blocks as codec frames in a
// Badger (v4) database on local disk, with a byte capacity, an in-memory
// index and background value-log garbage collection. It implements
// tiers.Tier, tiers.FrameTier, tiers.Scanner and tiers.Syncer.
//
// # What it owns
//
//   - The directory given to Open: a Badger database tuned for large values
//     (every frame in the value log, ValueThreshold 32 bytes; no compression,
//     no block cache, 8 MiB memtables, one version per key, two compactors;
//     Badger's logger routed to log/slog at Warn). Badger runs in managed
//     mode: the tier picks commit timestamps, going on from the newest on
//     disk at Open, and reads at the newest, so no transaction waits on
//     Badger's oracle (see badgerStore). Superseded and deleted versions
//     become discardable at each collection's flush.
//   - The frames: the Store encodes blocks in its codec policy's NVMe mode
//     (tiers.Codecs) and stores them with PutFrame, which verifies the
//     checksum and keeps the frame as it is; Put stores a raw frame,
//     encoded with codec.Encode into a pooled buffer. Get verifies
//     the CRC-32C of every frame with codec.Decode into the caller's dst.
//     Get reads the frame with one O_DIRECT pread of the value log file at
//     the value pointer Badger holds (direct.go; WithDirectReads(false)
//     reads through Badger's memory mapping instead), into a page-aligned
//     buffer kept outside the Go heap (readbuf.go), a few per size class,
//     unmapped when the tier closes.
//     PutFrame and GetFrame store and return frames as they are (checksum
//     verified, not decoded), whatever the namespace's mode: the Store
//     moves blocks that DRAM keeps compressed this way.
//   - Capacity: the sum of frame lengths (UsedBytes) never exceeds the bound
//     given to Open; a Put that would is refused with tiers.ErrFull. The tier
//     keeps no recency and never evicts on its own: the Store, which knows
//     what is used, evicts NVMe copies with Delete.
//   - The index: per block a 128-bit fingerprint of its binary key, a frame
//     length and a write sequence number, about 40 bytes of Go heap and no
//     pointer (see index.go). The one path that needs a block's key (a
//     repair at Open) reads it back from its meta key.
//
// # On disk
//
// Each block is two Badger keys written and deleted in one transaction: the
// frame under 0x01+binkey (value log) and an 18-byte meta (mode, layout,
// frame length) under 0x02+seq+binkey (LSM tree), where binkey is
// tiers.Key.AppendBinary and seq the block's write sequence number. Open
// rebuilds the index from the meta keys alone, in write order, without
// reading any frame; Scan reports blocks in that order. A 0x00 format key
// marks the directory; Open refuses a non-empty directory without it.
//
// # Disk space and damage
//
//   - Badger writes through memory mappings of sparse files, where a full
//     file system is SIGBUS, not an error. The tier checks free space before
//     every write and keeps a reserve for Badger's own writes; below it puts
//     fail with tiers.ErrNoSpace, reads go on, and writes resume once space
//     returns (TierStats.WritesStopped, FreeBytes). Open sizes Badger's files
//     to the capacity and lowers a capacity the file system cannot hold.
//     See space.go.
//   - A store that cannot open (a damaged table, a missing MANIFEST) is set
//     aside into QuarantineDir and the tier starts empty (WithRecover;
//     TierStats.Quarantined); blocks whose frames lie past the end of their
//     value log file are dropped at Open. See recover.go.
//
// # Caveats
//
//   - A frame that fails its checksum (twice: the read is retried once, as
//     value-log GC may move a frame under a reader) is a miss: counted
//     (TierStats.Corrupt), deleted, returned as tiers.ErrCorrupt; never
//     handed out.
//   - Direct reads depend on Badger v4 internals found by reflection
//     (Item's vptr and meta fields, the value log entry format); when they
//     do not match, reads fall back to Badger's own path (TestDirectReads
//     fails so an upgrade notices).
//   - A value log file found shorter than its entries, or a memory fault
//     inside Badger, "poisons" the tier: value-log GC stops (it would fault
//     on the file) and Close waits at most 5 s for Badger; reads and writes
//     go on. Restart to recover.
//   - Badger 4.9.6 has a data race between value-log GC and commits; the
//     tier holds writers off while each value log file is rewritten.
//   - ReservedBytes is the directory's allocated size on disk. Between value
//     log GC passes it can reach about capacity/(1-discard ratio) plus the
//     garbage of one GC trigger period; size the disk for that (see gc.go).
//   - The largest frame is the value log file size minus 4 KiB
//     (WithValueLogFileSize, default 256 MiB).
//   - Durability: a Put is durable once Sync returns (or at once with
//     WithSyncWrites(true)).
//   - The slice returned by Get is the caller's dst, extended; the tier keeps
//     no reference to it.
//   - Reads of blocks that are already in the page cache are faster with
//     WithDirectReads(false); so are strictly sequential cold reads, which
//     gain from the kernel's read-ahead. The default favours cold, random
//     reads, the NVMe tier's usual case behind the DRAM tier.
package nvme
