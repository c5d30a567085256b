package prefetch

import (
	"context"

	"github.com/kvtier/kvtier/tiers"
)

// Hint kinds, as the prefetcher receives them. They carry store types only:
// the prefetcher knows nothing of gRPC.

// RequestArrived: a request with this prefix entered the engine's queue.
type RequestArrived struct {
	RequestID string
	Namespace string
	Layer     int16
	Hashes    []tiers.Hash // the prefix chain, in order; owned by the callee
	Target    tiers.Level  // LevelHBM or LevelDRAM
}

// LayerAttention: layer Layer of request RequestID, at decode step Step,
// paid attention Scores[i] to block BlockIndexes[i] of its prefix.
type LayerAttention struct {
	RequestID    string
	Namespace    string // from the request's RequestArrived hint
	Layer        int16
	Step         uint64
	BlockIndexes []uint32 // owned by the callee
	Scores       []float32
}

// LayerQuery: layer Layer of request RequestID attends, at decode step
// Step, with Query ([QHeads][HeadDim], post-RoPE).
type LayerQuery struct {
	RequestID                string
	Namespace                string // from the request's RequestArrived hint
	Layer                    int16
	Step                     uint64
	QHeads, KVHeads, HeadDim int
	Query                    []float32 // owned by the callee
}

// RequestFinished: the request left the engine.
type RequestFinished struct {
	RequestID string
	Namespace string
}

// Hints receives engine hints; the prefetcher implements it. A method that
// returns an error wrapping errors.ErrUnsupported ends the Hint stream with
// UNIMPLEMENTED. The int results are the blocks scheduled for promotion.
// Methods are called from one goroutine per Hint stream, so concurrently
// across streams.
type Hints interface {
	RequestArrived(ctx context.Context, h RequestArrived) (int, error)
	LayerAttention(ctx context.Context, h LayerAttention) (int, error)
	RequestFinished(ctx context.Context, h RequestFinished) error
}

// QueryHints is implemented by a Hints that also ranks by queries; the
// daemon answers layer_query hints with UNIMPLEMENTED without it.
type QueryHints interface {
	LayerQuery(ctx context.Context, h LayerQuery) (int, error)
}
