// Package prefetch will own kvtier's prefetcher: the attention-score
// tracker (an exponentially decayed importance per block, fed by the
// daemon's Hint stream), the planner that picks which blocks to promote
// before the next layer runs within a byte budget (keeping the sink block
// and the recent window resident), and the transfer scheduler that moves
// them NVMe → DRAM → HBM through tiers.Store.
//
// It is not written yet: until it is, the daemon answers every hint kind
// with UNIMPLEMENTED (see daemon.Hints, the interface it will implement).
// It may import tiers and nothing above it.
package prefetch
