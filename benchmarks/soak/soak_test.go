package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvtier/kvtier/daemon"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/dram"
)

// TestShortSoak runs the soak for a few seconds against an in-process
// daemon: every operation of both planes runs, no error, and the samples
// are taken.
func TestShortSoak(t *testing.T) {
	dir, err := os.MkdirTemp("", "kvs")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	arena, err := dram.New(32<<20, dram.WithChunkSize(64<<10), dram.WithHugePages(false))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := tiers.Open(context.Background(), tiers.Config{DRAM: arena, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cfg := daemon.Config{Socket: filepath.Join(dir, "s"), MetricsAddr: "127.0.0.1:0", Logger: log}
	srv, err := daemon.New(cfg, store, daemon.WithArena(arena))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	<-srv.Ready()
	var out strings.Builder
	o := options{clients: 4, duration: 3 * time.Second, interval: time.Second, keys: 64, maxTok: 16, rate: 50, seed: 1, settle: 3 * time.Second, opTime: 30 * time.Second}
	samples, c, err := run(ctx, target{socket: cfg.Socket, metrics: "http://" + srv.MetricsAddr() + "/metrics", pid: os.Getpid()}, o, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	if n := c.errors.Load(); n != 0 {
		t.Errorf("%d errors: %v", n, c.firstErr)
	}
	for i, n := range opNames {
		if c.ops[i].Load() == 0 {
			t.Errorf("no %s ran", n)
		}
	}
	if len(samples) < 3 {
		t.Errorf("%d samples, want at least the start, one interval and the end", len(samples))
	}
	if last := samples[len(samples)-1]; last.Sessions != 0 || last.Leases != 0 || last.Pinned != 0 || last.RSSBytes == 0 || last.Goroutines == 0 || last.OpenFiles == 0 {
		t.Errorf("last sample %+v: want no sessions, leases or pins left, and RSS, goroutines and open files read", last)
	}
}
