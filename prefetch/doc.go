// Package prefetch owns kvtier's prefetcher: the hint types and the Hints
// interface the daemon's Hint stream feeds, the per-request ranking state
// (Request, the Policy an engine can also drive in process), the Quest
// scorer, and the Prefetcher that stages and promotes blocks through
// tiers.Store. It may import tiers and nothing above it; it knows nothing
// of gRPC.
//
// # Two sources of importance
//
// Reported attention mass (LayerAttention hints, Request.ObserveMass): a
// decayed importance per (request, layer, block),
// Σ_s Decay^(t-s)·(1-Decay)·mass_s. A report may cover only some blocks
// (top-k or sampled): the others count as having received nothing at that
// step; several reports for one step add up.
//
// Queries (Request.ObserveQuery): engines on FlashAttention never see the
// scores but have the query. Every block carries, per layer and KV head,
// the per-channel minimum and maximum of its post-RoPE keys
// (tiers.SummarizeKeys, int8 codes rounded outwards with one float32 scale,
// 260 bytes per head at head dim 128: 3.2% of a 16-token fp16 block), and
// the Scorer bounds q·k over a block by Σ_c max(q_c·min_c, q_c·max_c): the
// Quest bound (Tang et al., "Quest: Query-Aware Sparsity for Efficient
// Long-Context LLM Inference", ICML 2024, arXiv:2406.10774). Grouped-query
// attention is handled by scoring every query head against its KV head's
// summary (CombineMass: per-head softmax of the bounds, averaged over
// heads, an estimate of each block's attention share) or by summing the
// group's split queries first (CombineSum: one dot product per block and
// KV head).
//
// Blocks with no information fall back to the sink (first blocks) and the
// recent window, which stay resident, and then to recency.
//
// # Moving blocks
//
// Prefetcher implements Hints and QueryHints over a tiers.Store: a fixed
// pool of workers stages arriving requests' prefixes (taking each block's
// key summary as it passes) and runs layer plans within a byte budget and
// a deadline; plans that miss it are dropped and counted late. As a
// tiers.VictimSource (Store.SetVictims) it makes eviction drop the blocks
// its plans ranked least important first.
//
// # Caveats
//
// A Request is not safe for concurrent use. Scores are relative within a
// request and layer; they are not comparable across requests. Request ids
// are per namespace: a second RequestArrived with the same id and
// namespace replaces (and cancels) the first, even from another stream.
package prefetch
