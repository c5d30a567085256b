package engine

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/kvtier/kvtier/client"
	"github.com/kvtier/kvtier/internal/kvfile"
)

// startKV starts an in-process daemon and returns a client and a
// shared-memory session on it.
func startKV(t testing.TB) (*client.Client, *client.Shm) {
	t.Helper()
	d, err := StartDaemon(64<<20, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(client.UnixTarget(d.Socket))
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shm, err := c.Attach(ctx, "engine-test")
	if err != nil {
		c.Close()
		d.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		shm.Close()
		c.Close()
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return c, shm
}

func fixturePrompt(t testing.TB, i int) []int {
	t.Helper()
	f, err := kvfile.Open(filepath.Join("testdata", []string{"kv-p00.bin", "kv-p01.bin", "kv-p02.bin"}[i]))
	if err != nil {
		t.Fatal(err)
	}
	return tokensOf(f.Meta.Prompt.Text)
}

// TestPrefixReuse: a request sharing 448 of its 480 tokens with a cached
// one loads 28 blocks per layer, computes 32 tokens, and predicts what a
// full recompute predicts; on both data planes.
func TestPrefixReuse(t *testing.T) {
	m := tinyModel(t)
	c, shm := startKV(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// 448 of 480 tokens shared; race builds (ten times slower) share 96 of 112.
	total, shared := 480, 448
	if raceOn {
		total, shared = 112, 96
	}
	a, other := fixturePrompt(t, 0)[:total], fixturePrompt(t, 1)
	b := append(append([]int(nil), a[:shared]...), other[:total-shared]...)
	for _, plane := range []struct {
		name   string
		blocks Blocks
	}{{"shm", shm}, {"inline", c}} {
		t.Run(plane.name, func(t *testing.T) {
			kc := NewKVCache(m, c, plane.blocks, "tiny-"+plane.name, nil)
			s := m.NewSession()
			r, chain, err := kc.Prefill(ctx, s, a)
			if err != nil {
				t.Fatal(err)
			}
			if r.CachedBlocks != 0 || r.Computed != total {
				t.Fatalf("cold request: %+v", r)
			}
			if _, _, err := kc.Save(ctx, s, chain, 0, len(chain)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			ref := m.NewSession()
			want, err := ref.Prefill(b, nil)
			if err != nil {
				t.Fatal(err)
			}
			recompute := time.Since(start)
			start = time.Now()
			r, _, err = kc.Prefill(ctx, s, b)
			if err != nil {
				t.Fatal(err)
			}
			reuse := time.Since(start)
			nb := shared / BlockTokens
			if r.CachedBlocks != nb || r.Computed != total-shared || r.BytesLoaded != nb*m.Layers*m.BlockBytes() {
				t.Fatalf("warm request: %+v", r)
			}
			if Argmax(r.Logits) != Argmax(want) {
				t.Fatalf("greedy token %d with reuse, %d recomputed", Argmax(r.Logits), Argmax(want))
			}
			for i := range want {
				if d := want[i] - r.Logits[i]; d > 1e-2 || d < -1e-2 {
					t.Fatalf("logit %d: %v reused, %v recomputed", i, r.Logits[i], want[i])
				}
			}
			t.Logf("TTFT recompute %v, with reuse %v (%.1fx)", recompute, reuse, float64(recompute)/float64(reuse))
		})
	}
}

// BenchmarkPrefixReuse measures TTFT of a 480-token request sharing 448
// tokens with a cached one, through kvtier (shared memory) and by
// recomputing, alternating in one loop: ns/op is one of each; the
// metrics are each one's mean and their ratio.
func BenchmarkPrefixReuse(b *testing.B) {
	m := tinyModel(b)
	c, shm := startKV(b)
	ctx := context.Background()
	a, other := fixturePrompt(b, 0), fixturePrompt(b, 1)
	req := append(append([]int(nil), a[:448]...), other[:32]...)
	kc := NewKVCache(m, c, shm, "bench-reuse", nil)
	s := m.NewSession()
	_, chain, err := kc.Prefill(ctx, s, a)
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := kc.Save(ctx, s, chain, 0, len(chain)); err != nil {
		b.Fatal(err)
	}
	ref := m.NewSession()
	var reuse, recompute time.Duration
	b.SetBytes(int64(28 * m.Layers * m.BlockBytes()))
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		r, _, err := kc.Prefill(ctx, s, req)
		reuse += time.Since(start)
		if err != nil || r.CachedBlocks != 28 {
			b.Fatalf("reuse: %v, %d blocks cached", err, r.CachedBlocks)
		}
		start = time.Now()
		ref.Reset()
		if _, err := ref.Prefill(req, nil); err != nil {
			b.Fatal(err)
		}
		recompute += time.Since(start)
	}
	b.ReportMetric(float64(reuse.Milliseconds())/float64(b.N), "reuse-ms")
	b.ReportMetric(float64(recompute.Milliseconds())/float64(b.N), "recompute-ms")
	b.ReportMetric(float64(recompute)/float64(reuse), "speedup")
}
