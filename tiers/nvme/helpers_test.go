package nvme

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
)

// testLayout returns a layout of 512*tokens bytes.
func testLayout(tokens uint32) codec.Layout {
	return codec.Layout{DType: codec.FP16, KVHeads: 2, HeadDim: 64, Tokens: tokens}
}

// frameLen is the frame length of a raw-mode block of layout l.
func frameLen(l codec.Layout) int64 { return codec.HeaderLen + l.Size() }

func testKey(ns string, i int) tiers.Key {
	var b [16]byte
	copy(b[:], "blk")
	binary.BigEndian.PutUint64(b[8:], uint64(i))
	h, err := tiers.HashFromBytes(b[:])
	if err != nil {
		panic(err)
	}
	return tiers.Key{Namespace: ns, Hash: h, Layer: int16(i % 3)}
}

// block returns deterministic pseudo-random bytes for layout l and seed.
func block(l codec.Layout, seed uint64) []byte {
	b := make([]byte, l.Size())
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

// tWriter sends log lines to t.Log until the test ends.
type tWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// smallOpts keeps Badger's files small so tests stay fast and GC has files
// to work on.
func smallOpts(t testing.TB) []Option {
	return []Option{
		WithMemTableSize(1 << 20),
		WithValueLogFileSize(1 << 20),
		WithGCInterval(0),
		WithGCAfterBytes(0),
		WithLogger(testLogger(t), slog.LevelWarn),
	}
}

func openTest(t testing.TB, dir string, capacity int64, opts ...Option) *Tier {
	t.Helper()
	tr, err := Open(dir, capacity, append(smallOpts(t), opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func mustPut(t testing.TB, tr *Tier, k tiers.Key, l codec.Layout, data []byte) {
	t.Helper()
	if err := tr.Put(context.Background(), k, l, data); err != nil {
		t.Fatalf("Put %v: %v", k, err)
	}
}

func mustGet(t testing.TB, tr *Tier, k tiers.Key, wantL codec.Layout, want []byte) {
	t.Helper()
	l, got, err := tr.Get(context.Background(), k, nil)
	if err != nil {
		t.Fatalf("Get %v: %v", k, err)
	}
	if l != wantL {
		t.Fatalf("Get %v: layout %v, want %v", k, l, wantL)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get %v: %d bytes differ from the %d put", k, len(got), len(want))
	}
}

// faultStore wraps a store and injects failures: the Nth write or read
// (1-based, counted since open) fails, or reads with a value numbered
// flipFrom..flipTo see one byte flipped.
type faultStore struct {
	store
	writes, reads       atomic.Int64
	failWrite, failRead atomic.Int64
	flipFrom, flipTo    atomic.Int64
	failErr             atomic.Pointer[storeWriteErr] // the failed write's error; nil: errInjected
}

// storeWriteErr is the error a failed write wraps.
type storeWriteErr struct{ err error }

var errInjected = errTest("injected I/O error")

type errTest string

func (e errTest) Error() string { return string(e) }

func (f *faultStore) write(ops []op) error {
	if n := f.failWrite.Load(); n > 0 && f.writes.Add(1) == n {
		if e := f.failErr.Load(); e != nil {
			return storeErr("write", e.err)
		}
		return storeErr("write", errInjected)
	}
	return f.store.write(ops)
}

func (f *faultStore) get(key []byte, fn func([]byte) error) (uint64, error) {
	if fn == nil {
		return f.store.get(key, nil)
	}
	n := f.reads.Add(1)
	if f.failRead.Load() == n {
		return 0, storeErr("read", errInjected)
	}
	if n >= f.flipFrom.Load() && n <= f.flipTo.Load() {
		return f.store.get(key, func(v []byte) error {
			c := append([]byte(nil), v...)
			if len(c) > 0 {
				c[len(c)/2] ^= 0x10
			}
			return fn(c)
		})
	}
	return f.store.get(key, fn)
}

func withFaults(f *faultStore) Option {
	return func(c *config) {
		c.wrapStore = func(s store) store { f.store = s; return f }
	}
}

// waitFor polls cond for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

// accounting is tr.Stats() without the free space of the file system,
// which other programs change.
func accounting(tr *Tier) tiers.TierStats {
	s := tr.Stats()
	s.FreeBytes = 0
	return s
}
