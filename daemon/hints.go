package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/kvtier/kvtier/prefetch"
)

// Hints receives engine hints (see prefetch.Hints, which owns the hint
// types); the prefetcher implements it.
type Hints = prefetch.Hints

// noHints is the Hints of a daemon without a prefetcher: every kind is
// unimplemented.
type noHints struct{}

var errNoPrefetcher = fmt.Errorf("%w: no prefetcher handles hints in this daemon", errors.ErrUnsupported)

func (noHints) RequestArrived(context.Context, prefetch.RequestArrived) (int, error) {
	return 0, fmt.Errorf("request_arrived: %w", errNoPrefetcher)
}

func (noHints) LayerAttention(context.Context, prefetch.LayerAttention) (int, error) {
	return 0, fmt.Errorf("layer_attention: %w", errNoPrefetcher)
}

func (noHints) RequestFinished(context.Context, prefetch.RequestFinished) error {
	return fmt.Errorf("request_finished: %w", errNoPrefetcher)
}
