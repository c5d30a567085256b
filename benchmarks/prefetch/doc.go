// Package prefetch is the evaluation behind `kvtier bench prefetch`: it
// replays attention traces (the KV dumps of shared/testdata/kv, read with
// codec/kvfile) step by step through the real prefetch package and a real
// tiers.Store, at a fast-tier budget given as a fraction of a request's
// blocks, and reports per policy the attention-mass recall, the hit rate,
// the bytes moved, and the late and wasted prefetches.
//
// Caveats: a trace holds attention rows for its last positions only (16 in
// the fixtures), so a replay covers those decode steps; the query
// positions before them serve as a warm-up for the policies that learn
// from reported mass. The fast tier is a byte buffer of budget blocks per
// layer (this machine has no GPU): moves are real reads from the store
// copied into it, so bytes_moved is measured, not modelled.
package prefetch
