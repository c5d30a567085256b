// Package engine is kvtier's reference inference engine: a small, real,
// trained Llama-architecture model (models/tiny.f16, 4.2M parameters,
// byte-level, trained on Go source) run by a plain float32 forward pass in
// Go, whose KV cache lives in kvtier the way a production engine's would.
// It is a reference engine for benchmarks and end-to-end checks, not a
// product: no batching across requests, no sampling beyond greedy, one
// goroutine per forward pass.
//
// What it owns:
//   - Model: the weights (Load reads llama2.c's model.bin, version 0, or the
//     project's fp16 file; Tiny returns the embedded model) and the forward
//     pass (Session.Prefill for a batch of tokens, Session.Step for one).
//   - KV: per layer, per KV head, per token, head_dim float32 values rounded
//     to float16 precision (so a block stored as fp16 round-trips exactly,
//     and the all-resident engine and the offloaded one see the same keys).
//   - Blocks: 16-token per-layer blocks in the codec's KV-separate fp16
//     layout, keyed by the chained prefix hash (tiers.ChainHashes), put to
//     and loaded from the daemon through the Go client (store.go).
//   - Decode offload (decode.go): a device-memory budget standing in for
//     HBM, full and sparse attention, and the block selection policies
//     (policy.go: the oracle; prefetch_policy.go: PrefetchPolicy, the
//     prefetcher's lru, scores, queries and scores+queries fed with the
//     engine's read attention mass, its queries and the key summaries of
//     the blocks it writes).
//
// Caveats: the model was trained on 256-byte windows; its predictions past
// position 256 degrade, so quality is measured on windows of at most 256
// tokens. Sequences are limited to the header's 512 positions.
package engine
