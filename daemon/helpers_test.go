package daemon_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kvtier/kvtier/client"
	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/daemon"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers"
	"github.com/kvtier/kvtier/tiers/dram"
	"github.com/kvtier/kvtier/tiers/nvme"
)

// testEnv is an in-process daemon over real DRAM (and optionally NVMe)
// tiers, listening on a Unix socket in a short temporary directory.
type testEnv struct {
	t      testing.TB
	srv    *daemon.Server
	socket string
	dir    string
	cancel context.CancelFunc
	done   chan error
	cl     *client.Client
}

type envOptions struct {
	cfg     func(*daemon.Config)
	dramCap int64
	nvme    bool
	nvmeDir string
	token   string // the default client's token
	opts    []daemon.Option
	noArena bool
	// dramCodec keeps DRAM blocks compressed in this mode (raw: not).
	dramCodec codec.Mode
	// hints, when set, builds the daemon's Hints over its store.
	hints func(*tiers.Store) daemon.Hints
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// socketDir returns a short directory for sockets (the 108-byte limit).
func socketDir(t testing.TB) string {
	d, err := os.MkdirTemp("", "kvt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func startEnv(t testing.TB, o envOptions) *testEnv {
	t.Helper()
	dir := socketDir(t)
	if o.dramCap == 0 {
		o.dramCap = 32 << 20
	}
	arena, err := dram.New(o.dramCap, dram.WithChunkSize(64<<10), dram.WithHugePages(false))
	if err != nil {
		t.Fatal(err)
	}
	scfg := tiers.Config{DRAM: arena, Logger: discardLogger()}
	if o.dramCodec != codec.Raw {
		scfg.Codecs = func(string) tiers.Codecs { return tiers.Codecs{DRAM: o.dramCodec, NVMe: o.dramCodec} }
	}
	if o.nvme {
		nd := o.nvmeDir
		if nd == "" {
			nd = t.TempDir()
		}
		nv, err := nvme.Open(nd, 128<<20, nvme.WithLogger(discardLogger(), slog.LevelError))
		if err != nil {
			arena.Close()
			t.Fatal(err)
		}
		scfg.NVMe = nv
	}
	store, err := tiers.Open(context.Background(), scfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := daemon.Config{Socket: filepath.Join(dir, "d.sock"), Logger: discardLogger(), ShutdownTimeout: 5 * time.Second}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	opts := o.opts
	if o.hints != nil {
		opts = append(opts, daemon.WithHints(o.hints(store)))
	}
	if !o.noArena {
		opts = append(opts, daemon.WithArena(arena))
	}
	srv, err := daemon.New(cfg, store, opts...)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &testEnv{t: t, srv: srv, socket: cfg.Socket, dir: dir, cancel: cancel, done: make(chan error, 1)}
	go func() { e.done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-e.done:
		t.Fatalf("daemon did not start: %v", err)
	}
	e.cl = e.dial(o.token)
	t.Cleanup(e.stop)
	return e
}

// dial opens a client on the Unix socket with token (none when "").
func (e *testEnv) dial(token string, opts ...client.Option) *client.Client {
	e.t.Helper()
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	c, err := client.Dial(client.UnixTarget(e.socket), opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// stop shuts the daemon down and waits for Run to return.
func (e *testEnv) stop() {
	e.cancel()
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("Run: %v", err)
		}
		e.done <- err // later stops return at once
	case <-time.After(30 * time.Second):
		e.t.Error("daemon did not stop within 30s")
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Small blocks: fp16, 16 tokens, 2 KV heads, head dim 64 → 8 KiB.
func smallLayout() *pb.Layout {
	return &pb.Layout{Dtype: pb.Dtype_DTYPE_FP16, Tokens: 16, KvHeads: 2, HeadDim: 64}
}

const smallSize = 2 * 16 * 2 * 64 * 2

// A 1 MiB block: fp16, 256 tokens, 8 KV heads, head dim 128.
func mibLayout() *pb.Layout {
	return &pb.Layout{Dtype: pb.Dtype_DTYPE_FP16, Tokens: 256, KvHeads: 8, HeadDim: 128}
}

// hashOf returns a 16-byte hash for i.
func hashOf(i int) []byte {
	s := sha256.Sum256(binary.LittleEndian.AppendUint64(nil, uint64(i)))
	return s[:16]
}

func keyOf(ns string, i int) *pb.Key { return &pb.Key{Namespace: ns, Hash: hashOf(i), Layer: 0} }

// blockData returns n bytes derived from the key, so any read can be checked.
func blockData(k *pb.Key, n int) []byte {
	out := make([]byte, 0, n+32)
	seed := sha256.Sum256(append([]byte(k.GetNamespace()), k.GetHash()...))
	for len(out) < n {
		out = append(out, seed[:]...)
		seed = sha256.Sum256(seed[:])
	}
	return out[:n]
}

func checkData(t testing.TB, k *pb.Key, got []byte) {
	t.Helper()
	if want := blockData(k, len(got)); !bytes.Equal(got, want) {
		t.Errorf("block %x: data differs from what was put", k.GetHash())
	}
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func stats(t testing.TB, c *client.Client) *pb.StatsResponse {
	t.Helper()
	st, err := c.Stats(ctxT(t))
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return st
}

func dramStats(st *pb.StatsResponse) *pb.TierStats {
	for _, ts := range st.GetTiers() {
		if ts.GetTier() == pb.Tier_TIER_DRAM {
			return ts
		}
	}
	return &pb.TierStats{}
}
