package load

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kvtier/kvtier/client"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers/prefixhash"
)

const (
	getClients    = 4
	getBlocks     = 32 // distinct 1 MiB values, cycled through
	getSize       = 1 << 20
	lookupClients = 16
	lookupBlocks  = 8192
	blockTokens   = 16
)

// env is the daemon (and Redis) shared by every benchmark of the run,
// started as the bench load command starts them (StartDaemon, StartRedis).
type env struct {
	dir     string
	bin     string
	daemon  *Proc
	socket  string
	redis   *Proc
	redisSk string
	redisOK error // why Redis is unavailable, nil when it runs
	loaded  map[string]bool
}

var (
	setupOnce sync.Once
	theEnv    *env
	setupErr  error
	throughMu sync.Mutex
	through   = map[string]float64{} // plane → bytes/s of its last (largest) run
)

func TestMain(m *testing.M) {
	code := m.Run()
	if theEnv != nil {
		theEnv.close()
	}
	os.Exit(code)
}

func setup(tb testing.TB) *env {
	tb.Helper()
	setupOnce.Do(func() { theEnv, setupErr = newEnv() })
	if setupErr != nil {
		tb.Fatal(setupErr)
	}
	return theEnv
}

func newEnv() (*env, error) {
	dir, err := os.MkdirTemp("", "kvtld")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir, bin: filepath.Join(dir, "kvtier"), loaded: map[string]bool{}}
	// make test builds bin/kvtier first and names it in KVTIER_BIN: use it
	// rather than linking the same binary again.
	if b := os.Getenv("KVTIER_BIN"); b != "" {
		e.bin = b
	} else if out, err := exec.Command("go", "build", "-o", e.bin, "github.com/kvtier/kvtier/cmd/kvtier").CombinedOutput(); err != nil {
		e.close()
		return nil, fmt.Errorf("building kvtier: %v\n%s", err, out)
	}
	ctx := context.Background()
	if e.daemon, err = StartDaemon(ctx, e.bin, "--dram-bytes", "512MiB", "--nvme-dir", "", "--hbm", "off"); err != nil {
		e.close()
		return nil, err
	}
	e.socket = e.daemon.Socket
	if e.redis, e.redisOK = StartRedis(ctx); e.redisOK == nil {
		e.redisSk = e.redis.Socket
	}
	return e, nil
}

func (e *env) close() {
	e.daemon.Close()
	e.redis.Close()
	os.RemoveAll(e.dir)
}

func (e *env) dial(b *testing.B) *client.Client {
	c, err := client.Dial(client.UnixTarget(e.socket))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// 1 MiB blocks: fp16, 256 tokens, 8 KV heads, head dim 128.
var mibLayout = &pb.Layout{Dtype: pb.Dtype_DTYPE_FP16, Tokens: 256, KvHeads: 8, HeadDim: 128}

func getKey(i int) *pb.Key {
	h := make([]byte, 16)
	h[0], h[15] = 0xb1, byte(i)
	return &pb.Key{Namespace: "bench", Hash: h, Layer: 0}
}

func getValue(i int) []byte {
	v := make([]byte, getSize)
	for j := 0; j < len(v); j += 4096 {
		v[j] = byte(i + j>>12)
	}
	return v
}

// loadGets stores the 1 MiB values in the daemon and in Redis, once.
func (e *env) loadGets(b *testing.B, ctx context.Context) {
	if e.loaded["get"] {
		return
	}
	c := e.dial(b)
	for i := range getBlocks {
		if err := c.Put(ctx, getKey(i), mibLayout, getValue(i), client.PutOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	if e.redisOK == nil {
		r := redis.NewClient(&redis.Options{Network: "unix", Addr: e.redisSk})
		defer r.Close()
		for i := range getBlocks {
			if err := r.Set(ctx, fmt.Sprint("bench:", i), getValue(i), 0).Err(); err != nil {
				b.Fatal(err)
			}
		}
	}
	e.loaded["get"] = true
}

// getter reads value i into dst and returns the bytes read.
type getter func(ctx context.Context, i int, dst []byte) ([]byte, error)

// runGetters splits b.N reads over n concurrent clients made by mk.
func runGetters(b *testing.B, plane string, n int, mk func(b *testing.B) getter) {
	ctx := context.Background()
	gets := make([]getter, n)
	bufs := make([][]byte, n)
	for i := range gets {
		gets[i] = mk(b)
		bufs[i] = make([]byte, getSize)
		// Check once, outside the timing, that the plane returns the right bytes.
		got, err := gets[i](ctx, i, bufs[i])
		if err != nil {
			b.Fatal(err)
		}
		if !bytes.Equal(got, getValue(i%getBlocks)) {
			b.Fatalf("%s: value %d differs", plane, i)
		}
	}
	b.SetBytes(getSize)
	b.ReportAllocs()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	b.ResetTimer()
	start := time.Now()
	for c := range n {
		share := b.N / n
		if c < b.N%n {
			share++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range share {
				got, err := gets[c](ctx, (c*7+j)%getBlocks, bufs[c])
				if err != nil {
					errs <- err
					return
				}
				if len(got) != getSize {
					errs <- fmt.Errorf("%s: %d bytes", plane, len(got))
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	throughMu.Lock()
	through[plane] = float64(b.N) * getSize / elapsed.Seconds()
	throughMu.Unlock()
}

// BenchmarkGet measures 1 MiB Gets by 4 concurrent clients on each data
// plane, with Redis and memcpy as references in the same run.
func BenchmarkGet(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	e.loadGets(b, ctx)
	name := func(p string) string { return fmt.Sprintf("size=%d/clients=%d/%s", getSize, getClients, p) }
	b.Run(name("plane=shm"), func(b *testing.B) {
		runGetters(b, "shm", getClients, func(b *testing.B) getter {
			s, err := e.dial(b).Attach(ctx, "bench")
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return func(ctx context.Context, i int, dst []byte) ([]byte, error) {
				blk, err := s.Get(ctx, getKey(i), dst, client.GetOptions{})
				return blk.Data, err
			}
		})
	})
	b.Run(name("plane=inline"), func(b *testing.B) {
		runGetters(b, "inline", getClients, func(b *testing.B) getter {
			c := e.dial(b)
			return func(ctx context.Context, i int, dst []byte) ([]byte, error) {
				blk, err := c.Get(ctx, getKey(i), dst, client.GetOptions{})
				return blk.Data, err
			}
		})
	})
	b.Run(name("ref=redis"), func(b *testing.B) {
		if e.redisOK != nil {
			b.Skip(e.redisOK)
		}
		runGetters(b, "redis", getClients, func(b *testing.B) getter {
			r := redis.NewClient(&redis.Options{Network: "unix", Addr: e.redisSk, PoolSize: 1})
			b.Cleanup(func() { r.Close() })
			return func(ctx context.Context, i int, _ []byte) ([]byte, error) {
				return r.Get(ctx, fmt.Sprint("bench:", i)).Bytes()
			}
		})
	})
	b.Run(name("ref=memcpy"), func(b *testing.B) {
		src := make([][]byte, getBlocks)
		for i := range src {
			src[i] = getValue(i)
		}
		runGetters(b, "memcpy", getClients, func(*testing.B) getter {
			return func(_ context.Context, i int, dst []byte) ([]byte, error) {
				return dst[:copy(dst, src[i])], nil
			}
		})
	})
	throughMu.Lock()
	defer throughMu.Unlock()
	gb := func(p string) string { return fmt.Sprintf("%.2f GB/s", through[p]/1e9) }
	b.Logf("1 MiB Get, %d clients: shm %s, inline %s, redis %s, memcpy %s", getClients, gb("shm"), gb("inline"), gb("redis"), gb("memcpy"))
	ratio := func(a, c string) string {
		if through[a] == 0 || through[c] == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2fx", through[a]/through[c])
	}
	b.Logf("shm/inline %s (target >= 5), shm/redis %s (target >= 3), inline/redis %s (target >= 1)",
		ratio("shm", "inline"), ratio("shm", "redis"), ratio("inline", "redis"))
}

// lookupChain returns the tokens and hashes of the benchmark's chain.
func lookupChain(b *testing.B) ([]uint32, []byte) {
	tokens := make([]uint32, lookupBlocks*blockTokens)
	for i := range tokens {
		tokens[i] = uint32(i*2654435761) % 128000
	}
	hs, err := prefixhash.Chain(prefixhash.Params{Algo: prefixhash.XXH3, Seed: prefixhash.DefaultSeed, BlockTokens: blockTokens}, tokens)
	if err != nil {
		b.Fatal(err)
	}
	packed := make([]byte, 0, 16*len(hs))
	for _, h := range hs {
		packed = h.AppendTo(packed)
	}
	return tokens, packed
}

// BenchmarkLookup measures the longest-cached-prefix query of an
// 8192-block chain, all cached, by 16 concurrent clients.
func BenchmarkLookup(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	tokens, packed := lookupChain(b)
	if !e.loaded["lookup"] {
		c := e.dial(b)
		s, err := c.Attach(ctx, "bench-load")
		if err != nil {
			b.Fatal(err)
		}
		// Tiny blocks: only the index matters here.
		l := &pb.Layout{Dtype: pb.Dtype_DTYPE_FP8, Tokens: blockTokens, KvHeads: 1, HeadDim: 8}
		data := make([]byte, 2*blockTokens*8)
		var parent []byte
		for i := range lookupBlocks {
			h := packed[i*16 : (i+1)*16]
			if err := s.Put(ctx, &pb.Key{Namespace: "lookup", Hash: h, Layer: -1}, l, data, client.PutOptions{Parent: parent}); err != nil {
				b.Fatal(err)
			}
			parent = h
		}
		s.Close()
		e.loaded["lookup"] = true
	}
	params := &pb.HashParams{Algo: pb.HashAlgo_HASH_ALGO_XXH3, BlockTokens: blockTokens}
	for _, form := range []struct {
		name string
		req  *pb.LookupRequest
	}{
		{"packed-hashes", &pb.LookupRequest{Namespace: "lookup", Layer: -1, PackedHashes: packed, HashSize: 16}},
		{"token-ids", &pb.LookupRequest{Namespace: "lookup", Layer: -1, TokenIds: tokens, HashParams: params}},
	} {
		// The target is at 16 clients; one client shows the latency without queueing.
		for _, n := range []int{lookupClients, 1} {
			b.Run(fmt.Sprintf("blocks=%d/clients=%d/form=%s", lookupBlocks, n, form.name), func(b *testing.B) {
				runLookups(b, e, n, 0, form.req)
			})
		}
		// The same 16 clients, each sending at a fixed rate instead of back
		// to back (open loop): what an engine that looks up once per new
		// request sees below saturation. p50-µs and p99-µs count from the
		// moment a request is sent; sched-p50-µs and sched-p99-µs from the
		// moment it was due, so a backlog shows in them, and so does the
		// lateness of the sender's own wake-ups (Go's timers sleep in
		// epoll_wait, whose timeout has millisecond resolution).
		for _, rate := range []int{800, 1600} {
			b.Run(fmt.Sprintf("blocks=%d/clients=%d/form=%s/rate=%d", lookupBlocks, lookupClients, form.name, rate), func(b *testing.B) {
				runLookups(b, e, lookupClients, rate, form.req)
			})
		}
	}
}

// runLookups runs b.N lookups from lookupClients clients: back to back when
// rate is 0, else rate lookups a second in all, evenly spaced per client.
func runLookups(b *testing.B, e *env, lookupClients, rate int, req *pb.LookupRequest) {
	ctx := context.Background()
	clients := make([]*client.Client, lookupClients)
	for i := range clients {
		clients[i] = e.dial(b)
		resp, err := clients[i].Lookup(ctx, req) // warm up, and check the answer
		if err != nil {
			b.Fatal(err)
		}
		if resp.GetCachedBlocks() != lookupBlocks || len(resp.GetTiers()) != lookupBlocks {
			b.Fatalf("lookup found %d of %d blocks", resp.GetCachedBlocks(), lookupBlocks)
		}
	}
	b.ReportAllocs()
	lat := make([][]time.Duration, lookupClients)   // from sending
	sched := make([][]time.Duration, lookupClients) // from the due time (open loop only)
	var wg sync.WaitGroup
	errs := make(chan error, lookupClients)
	daemonCPU, clientCPU := processCPU(e.daemon.Pid()), processCPU(0)
	b.ResetTimer()
	for c := range lookupClients {
		share := b.N / lookupClients
		if c < b.N%lookupClients {
			share++
		}
		lat[c] = make([]time.Duration, 0, share)
		if rate > 0 {
			sched[c] = make([]time.Duration, 0, share)
		}
		var interval time.Duration
		if rate > 0 {
			interval = time.Duration(float64(time.Second) * float64(lookupClients) / float64(rate))
		}
		start := time.Now().Add(interval * time.Duration(c) / time.Duration(lookupClients))
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := new(pb.LookupResponse) // reused, as an engine's lookup loop would
			for j := range share {
				var due time.Time
				if interval > 0 {
					due = start.Add(interval * time.Duration(j))
					time.Sleep(time.Until(due))
				}
				t0 := time.Now()
				err := clients[c].LookupInto(ctx, req, resp)
				lat[c] = append(lat[c], time.Since(t0))
				if interval > 0 {
					sched[c] = append(sched[c], time.Since(due))
				}
				if err != nil {
					errs <- err
					return
				}
				if resp.GetCachedBlocks() != lookupBlocks {
					errs <- fmt.Errorf("lookup found %d blocks", resp.GetCachedBlocks())
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	// CPU per call, daemon and clients apart: with more clients than
	// cores, their sum rather than one call's latency sets the calls a second.
	if daemonCPU > 0 && clientCPU > 0 && b.N > 0 {
		b.ReportMetric(float64((processCPU(e.daemon.Pid())-daemonCPU).Nanoseconds())/1e3/float64(b.N), "daemon-cpu-µs/op")
		b.ReportMetric(float64((processCPU(0)-clientCPU).Nanoseconds())/1e3/float64(b.N), "client-cpu-µs/op")
	}
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	reportQuantiles(b, "", lat)
	if rate > 0 {
		reportQuantiles(b, "sched-", sched)
	}
}

// reportQuantiles reports the median and 99th percentile of the latencies
// of every client, in microseconds, as prefix+"p50-µs" and prefix+"p99-µs".
func reportQuantiles(b *testing.B, prefix string, perClient [][]time.Duration) {
	all := slices.Concat(perClient...)
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	q := func(p float64) float64 {
		return float64(all[min(len(all)-1, int(math.Ceil(p*float64(len(all))))-1)].Microseconds())
	}
	b.ReportMetric(q(0.50), prefix+"p50-µs")
	b.ReportMetric(q(0.99), prefix+"p99-µs")
}
