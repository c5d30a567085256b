// Package daemon is kvtier's gRPC server: the kvtier.v1.KVTierService over a
// tiers.Store, on a Unix socket (mode 0600 by default) and/or TCP (TLS, or
// --insecure with a warning), plus grpc.health.v1, server reflection, and
// Prometheus metrics on a localhost HTTP address.
//
// What it owns:
//   - Request validation (validate.go): protobuf fields become store types or
//     a *FieldError naming the field ("header.layout.tokens").
//   - The one mapping from errors to gRPC codes (errors.go: Code and
//     Status), applied to every call by the interceptors, which also
//     authenticate bearer tokens (auth.go), recover panics and time calls.
//   - The inline data plane (service.go): Put streams into a DRAM
//     reservation and commits only a complete block; Get streams the pinned
//     DRAM view in chunks of at most 1 MiB and releases the pin when the
//     stream ends, however it ends.
//   - The shared-memory data plane (shm.go): Attach sessions over the Unix
//     socket, the descriptor socket that hands out the DRAM arena's memfd
//     (SCM_RIGHTS, after SO_PEERCRED checks), and leases: pins and
//     reservations that expire after a ttl and die with their session.
//   - Guards (guard.go): an inline stream that makes no progress for
//     StreamIdleTimeout is ended (DEADLINE_EXCEEDED) and its reservation or
//     pin freed; the reservations of inline puts in flight are bounded per
//     connection and per token; a full DRAM tier's RESOURCE_EXHAUSTED says
//     what holds it.
//   - Hints (hints.go): the Hint stream is passed to a Hints implementation
//     (the prefetcher); without one every hint kind is UNIMPLEMENTED.
//   - Lifecycle (server.go): Run listens, serves, and on cancellation stops
//     accepting, ends shared-memory sessions, lets calls in flight finish
//     (then cancels them after ShutdownTimeout), and closes the store, which
//     flushes the write-behind queue to NVMe.
//
// Caveats:
//   - Run takes ownership of the store and closes it before returning.
//   - Pins per client: an inline Get holds one pin while its stream runs, so
//     a connection holds at most MaxConcurrentStreams of them, each for at
//     most StreamIdleTimeout without progress; a shared-memory session
//     holds at most MaxLeases leases.
//   - An inline Put's receive loop, and a Get of more than one chunk, run
//     on a pooled worker goroutine besides gRPC's handler (a handler cannot
//     be unblocked from its own Recv or Send); workers idle for 30 s exit.
//   - A shared-memory client writes into the arena directly. A client that
//     keeps writing after its reservation expired can damage the block that
//     reuses the slot; that is why shared memory is only for processes of
//     the daemon's uid (or root) whose token allows every namespace.
//   - A put of a block already cached (same key and layout) takes no DRAM
//     and evicts nothing: inline, its bytes are read and dropped; over shared
//     memory, ReserveSlot with skip_if_cached answers already_cached (the
//     Go client's Shm.Put asks for that). A plain ReserveSlot still reserves.
//   - Nothing below this package knows gRPC: the store, the tiers and the
//     prefetcher get store types only.
package daemon
