// Package dram is kvtier's host-memory tier: one arena of shared memory,
// allocated once in New, carved into slots by size class. It implements
// tiers.HostTier, the slot-addressed contract the Store uses: Alloc → fill →
// Seal → Free (or Abort), with Bytes for a slot's bytes in place. The Store
// keeps each block's slot in its own index, so the arena holds nothing per
// block on the Go heap.
//
// There is no key index here. This package's tests drive the allocator
// through a small keyed index over the slot API (keyed_test.go).
//
// # What it owns
//
// The mapping. On Linux it is a memfd mapped MAP_SHARED, sealed against
// shrinking and growing (an unlinked temporary file elsewhere on Unix, the Go
// heap on other platforms). It lives outside the Go heap, so the daemon can
//   - pass File to local clients over a Unix socket, which map it once and
//     then exchange slot offsets instead of bytes (the shared-memory data
//     plane: the Store allocates a slot, the client writes it, the Store
//     seals it; a pinned block's slot is read in place);
//   - register Base with the GPU as pinned host memory.
//
// Huge pages are requested with MADV_HUGEPAGE (best effort) and WithPrefault
// allocates every page up front; otherwise pages are allocated on first
// touch. The file fallback (no memfd_create, or not Linux) lives in
// os.TempDir: put TMPDIR on a RAM file system there, or the kernel writes
// the arena back to disk. The bookkeeping costs one 4-byte word per 4 KiB of arena (0.1%) on
// the Go heap, allocated in New.
//
// # Allocator
//
// The arena is a sequence of chunks (WithChunkSize, default 2 MiB, a power of
// two). A size class is a slot size; classes are spaced 1/8 octave apart from
// 4 KiB up to 8 chunks, rounded up to 4 KiB, so a block wastes less than 1/8
// of its length (or less than 4 KiB for blocks under 32 KiB). A class takes
// chunks in spans: runs of 1–16 contiguous chunks, the length chosen so that
// at most 1/16 of the span is left over after its last slot (a 5 MiB class
// with 2 MiB chunks uses 10 MiB spans of two slots). A block larger than 8
// chunks takes a dedicated run of whole chunks. Every slot is 4 KiB aligned,
// as O_DIRECT and GPU copies want. A span whose last slot is freed goes back
// to the chunk pool at once, so memory moves between classes (and between
// models of different block sizes) with chunk granularity. Free chunks are
// found first-fit.
//
// Capacity is a hard bound: with no free slot in the class and no run of free
// chunks long enough, Alloc returns an error wrapping tiers.ErrFull
// and evict nothing; the Store evicts and retries. Because slots are per
// class, the arena can be full for one size while another class's spans still
// have free slots; evicting blocks of that other class frees chunks once its
// spans empty. A block larger than the whole arena (MaxBlockLen) is
// ErrTooLarge, which wraps tiers.ErrFull: check for it before evicting.
//
// Accounting is exact: Stats reports UsedBytes (block lengths of sealed
// blocks), ReservedBytes (slot sizes of sealed blocks and outstanding
// reservations) and CapacityBytes (the mapping's length: the capacity given
// to New rounded down to a whole chunk). SlotSize says what a block of a
// given length will consume.
//
// # Generations
//
// Every time a slot is handed out (by Alloc) the generation of its start
// page is bumped (30 bits, wrapping to 1; 0 is never live) and returned in
// tiers.Slot.Gen. Seal and Abort act only on the exact outstanding
// reservation (offset and generation), anything else is ErrNotReserved, and
// Free only on the exact sealed block, anything else is ErrNotSealed.
// Validate tells whether a slot is still live, so the data plane can reject a
// client that holds a slot that was freed and handed out again.
//
// # Concurrency
//
// No lock or counter is shared by every operation (Stats sums counters
// spread by offset and per class). Each size class has a mutex over its
// spans' free bitmaps, held for a few bit operations per Alloc and free; when every block has the
// same size, as with one model, all of them share that one mutex. A mutex
// over the chunk pool is taken only when a span is carved or released. The
// state of a slot (free, reserved, sealed, generation) is an atomic word,
// and whoever swaps it out of reserved or sealed is the one that frees the
// slot, so a double Abort or an Abort racing a Seal cannot free twice.
// Alloc, Seal, Abort, Free, Bytes and Validate allocate nothing on the Go
// heap in steady state (errors other than a full arena do).
//
// # Caveats
//
//   - A view returned by Alloc, or by Bytes for a sealed slot, is valid
//     until the slot is aborted or freed, after which its bytes are reused
//     for other blocks without notice. The Store's pins guarantee this: it
//     never frees a pinned block's slot. Never keep a view past Release.
//   - Bytes in DRAM carry no checksum (memory is trusted; the NVMe tier
//     checksums its frames), so Stats().Corrupt is always 0.
//   - Close unmaps; afterwards every method returns tiers.ErrClosed. Views,
//     Base and File obtained earlier (or by an Alloc racing with Close) must
//     not be used after Close: touching an unmapped view crashes the process.
//     Stop using the tier before closing it, as the Store does.
//   - Generations are sequential, so they detect stale slots, not hostile
//     ones: the daemon must check that a client commits or aborts only
//     reservations it was given, and abort a client's reservations when it
//     disconnects.
package dram
