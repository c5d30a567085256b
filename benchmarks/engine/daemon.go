package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/kvtier/kvtier/daemon"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/dram"
	"github.com/kvtier/kvtier/tiers/nvme"
)

// Daemon is a kvtier daemon run in this process for the benchmarks: a DRAM
// arena shared over a Unix socket, and an NVMe tier when a directory is
// given.
type Daemon struct {
	Socket string
	dir    string
	cancel context.CancelFunc
	done   chan error
}

// StartDaemon starts an in-process daemon with dramBytes of DRAM (and
// nvmeBytes of NVMe under nvmeDir when nvmeDir is not "").
func StartDaemon(dramBytes int64, nvmeDir string, nvmeBytes int64) (*Daemon, error) {
	dir, err := os.MkdirTemp("", "kvte")
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	arena, err := dram.New(dramBytes, dram.WithHugePages(false))
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("engine: DRAM arena: %w", err)
	}
	cfg := tiers.Config{DRAM: arena, Logger: log}
	if nvmeDir != "" {
		nv, err := nvme.Open(nvmeDir, nvmeBytes, nvme.WithLogger(log, slog.LevelError))
		if err != nil {
			arena.Close()
			os.RemoveAll(dir)
			return nil, fmt.Errorf("engine: NVMe tier: %w", err)
		}
		cfg.NVMe = nv
	}
	store, err := tiers.Open(context.Background(), cfg)
	if err != nil {
		arena.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	d := &Daemon{Socket: filepath.Join(dir, "kvtier.sock"), dir: dir, done: make(chan error, 1)}
	srv, err := daemon.New(daemon.Config{Socket: d.Socket, Logger: log, ShutdownTimeout: 5 * time.Second}, store, daemon.WithArena(arena))
	if err != nil {
		store.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
		return d, nil
	case err := <-d.done:
		cancel()
		os.RemoveAll(dir)
		return nil, errors.Join(errors.New("engine: daemon did not start"), err)
	}
}

// Close stops the daemon and removes its socket directory.
func (d *Daemon) Close() error {
	d.cancel()
	var err error
	select {
	case err = <-d.done:
	case <-time.After(30 * time.Second):
		err = errors.New("engine: daemon did not stop within 30s")
	}
	return errors.Join(err, os.RemoveAll(d.dir))
}
