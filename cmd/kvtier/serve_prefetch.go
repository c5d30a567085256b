package main

import (
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/kvtier/kvtier/daemon"
	"github.com/kvtier/kvtier/prefetch"
	"github.com/kvtier/kvtier/tiers"
)

// prefetchFlags are the serve flags of the prefetcher.
type prefetchFlags struct {
	on        bool
	workers   int
	budget    float64
	layerTime time.Duration
	decay     float64
	eviction  string
}

func (p *prefetchFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&p.on, "prefetch", true, "handle engine hints: stage arriving requests' prefixes and promote the blocks attention is predicted to read")
	fs.IntVar(&p.workers, "prefetch-workers", 4, "goroutines moving blocks for the prefetcher (bounds its transfers in flight)")
	fs.Float64Var(&p.budget, "prefetch-budget", 0.25, "share of a request's blocks a layer plan promotes")
	fs.DurationVar(&p.layerTime, "prefetch-layer-time", 20*time.Millisecond, "deadline of a layer plan; what is not moved by then is dropped and counted late")
	fs.Float64Var(&p.decay, "prefetch-decay", 0.3, "importance a block keeps per decode step")
	fs.StringVar(&p.eviction, "eviction", "importance", "eviction policy with the prefetcher on: importance (active requests' least important blocks first, then LRU) or lru")
}

// options returns the daemon options that plug the prefetcher into store:
// none with --prefetch=false.
func (p *prefetchFlags) options(store *tiers.Store, log *slog.Logger) ([]daemon.Option, error) {
	if p.eviction != "importance" && p.eviction != "lru" {
		return nil, fmt.Errorf("--eviction %q: want importance or lru", p.eviction)
	}
	if !p.on {
		return nil, nil
	}
	pf, err := prefetch.New(prefetch.Config{
		Store: store, Workers: p.workers, Budget: p.budget, LayerTime: p.layerTime,
		Options: prefetch.Options{Decay: p.decay}, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("prefetcher: %w", err)
	}
	if p.eviction == "importance" {
		store.SetVictims(pf)
	}
	return []daemon.Option{daemon.WithHints(pf), daemon.WithBeforeStoreClose(func() { store.SetVictims(nil); _ = pf.Close() })}, nil
}
