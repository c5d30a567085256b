package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvtier/kvtier/client"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// options of one soak run.
type options struct {
	clients  int           // half inline, half shared memory
	duration time.Duration // total
	interval time.Duration // between samples
	keys     int           // size of the shared key space
	maxTok   int           // largest block, in tokens (4 KiB each)
	rate     float64       // operations per second per client (0: as fast as it goes)
	seed     uint64
	settle   time.Duration // longest wait for the daemon to wind down after the clients
	opTime   time.Duration // an operation (or a sample's calls) taking longer is an error
}

// target is the daemon under test.
type target struct {
	socket  string // Unix socket
	metrics string // http://host:port/metrics
	pid     int    // its process, for RSS and open files
}

// sample is the daemon's state at one moment.
type sample struct {
	At         time.Duration
	RSSBytes   int64
	Goroutines int64
	HeapBytes  int64 // Go heap in use
	OpenFiles  int64
	Sockets    int64 // of OpenFiles, sockets (connections and listeners)
	Sessions   uint32
	Leases     uint32
	Pinned     uint64
	Blocks     uint64
	Ops        int64
	Errors     int64
}

// counters are the clients' shared tallies.
type counters struct {
	ops      [numOps]atomic.Int64
	expected atomic.Int64 // contention outcomes that are not errors
	errors   atomic.Int64
	wrong    atomic.Int64 // gets whose bytes differ from what was put

	mu       sync.Mutex // protects firstErr
	firstErr []string   // the first few errors, for the report
}

type op int

const (
	opPut op = iota
	opGet
	opLookup
	opDelete
	numOps
)

var opNames = [numOps]string{"put", "get", "lookup", "delete"}

func (c *counters) total() int64 {
	var n int64
	for i := range c.ops {
		n += c.ops[i].Load()
	}
	return n
}

func (c *counters) fail(what string, err error) {
	c.errors.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.firstErr) < 10 {
		c.firstErr = append(c.firstErr, what+": "+err.Error())
	}
}

// keySpace derives every block from its index: key, layout and bytes. The
// bytes are a window of one random pool, so a get is checked with one
// comparison and no allocation.
type keySpace struct {
	ns     string
	n      int
	maxTok int
	pool   []byte
}

func newKeySpace(n, maxTok int, seed uint64) *keySpace {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	ks := &keySpace{ns: "soak", n: n, maxTok: maxTok, pool: make([]byte, 2*maxTok*tokenBytes)}
	for i := range ks.pool {
		ks.pool[i] = byte(r.Uint32())
	}
	return ks
}

// tokenBytes is one token's KV bytes: K and V, 8 heads of 128 fp16.
const tokenBytes = 2 * 8 * 128 * 2

func (ks *keySpace) hash(i int) []byte {
	h := make([]byte, 16)
	copy(h, "soak-key")
	h[8], h[9], h[10], h[11] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
	return h
}

func (ks *keySpace) key(i int) *pb.Key { return &pb.Key{Namespace: ks.ns, Hash: ks.hash(i)} }

func (ks *keySpace) layout(i int) *pb.Layout {
	tok := 1 + (i*2654435761)%ks.maxTok
	return &pb.Layout{Dtype: pb.Dtype_DTYPE_FP16, Tokens: uint32(tok), KvHeads: 8, HeadDim: 128}
}

func (ks *keySpace) data(i int) []byte {
	n := int(ks.layout(i).GetTokens()) * tokenBytes
	off := (i * 4099 * 64) % (len(ks.pool) - n + 1)
	return ks.pool[off : off+n]
}

// run drives o.clients clients against t for o.duration, printing a sample
// every o.interval to w. It returns the samples (the first at the start)
// and the counters.
func run(ctx context.Context, t target, o options, w io.Writer) ([]sample, *counters, error) {
	ks := newKeySpace(o.keys, o.maxTok, o.seed)
	mon, err := client.Dial(client.UnixTarget(t.socket))
	if err != nil {
		return nil, nil, err
	}
	defer mon.Close()
	var c counters
	start := time.Now()
	snap := func() (sample, error) {
		s := sample{At: time.Since(start).Round(time.Second), Ops: c.total(), Errors: c.errors.Load()}
		sctx, cancel := context.WithTimeout(ctx, o.opTime)
		defer cancel()
		st, err := mon.Stats(sctx)
		if err != nil {
			return s, fmt.Errorf("stats: %w", err)
		}
		s.Sessions, s.Leases, s.Pinned, s.Blocks = st.GetSessions(), st.GetLeases(), st.GetPinnedBlocks(), st.GetIndexedBlocks()
		if s.RSSBytes, err = procRSS(t.pid); err != nil {
			return s, err
		}
		// Scrape first: the scrape's keep-alive connection is then counted
		// in every sample, the first included.
		g, err := scrapeGauges(sctx, t.metrics, "go_goroutines", "go_memstats_heap_inuse_bytes")
		if err != nil {
			return s, err
		}
		s.Goroutines, s.HeapBytes = g[0], g[1]
		if s.OpenFiles, s.Sockets, err = procFDs(t.pid); err != nil {
			return s, err
		}
		return s, nil
	}
	first, err := snap()
	if err != nil {
		return nil, nil, err
	}
	samples := []sample{first}
	fmt.Fprintf(w, "soak: %d clients (%d inline, %d shared memory), %v, %d keys of 4KiB..%s\n",
		o.clients, o.clients-o.clients/2, o.clients/2, o.duration, o.keys, fmtBytes(int64(o.maxTok*tokenBytes)))
	fmt.Fprintln(w, header)
	fmt.Fprintln(w, first.row())

	rctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	var wg sync.WaitGroup
	for i := range o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := drive(rctx, t, ks, o, i, &c); err != nil {
				c.fail(fmt.Sprintf("client %d", i), err)
			}
		}()
	}
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
loop:
	for {
		select {
		case <-rctx.Done():
			break loop
		case <-tick.C:
			s, err := snap()
			if err != nil {
				c.fail("sample", err)
				continue
			}
			samples = append(samples, s)
			fmt.Fprintln(w, s.row())
		}
	}
	wg.Wait()
	// Connections, sessions and the daemon's idle stream workers (kept
	// 30 s for reuse) wind down: wait for the start's level, o.settle at
	// most.
	var last sample
	for settle := time.Now().Add(o.settle); ; {
		time.Sleep(time.Second)
		if last, err = snap(); err != nil {
			return samples, &c, err
		}
		back := last.Goroutines <= first.Goroutines+goroutineSlack && last.Sockets <= first.Sockets &&
			last.Sessions == 0 && last.Leases == 0 && last.Pinned == 0
		if back || time.Now().After(settle) || ctx.Err() != nil {
			break
		}
	}
	samples = append(samples, last)
	fmt.Fprintln(w, last.row(), "(after the clients closed)")
	return samples, &c, nil
}

const header = "| elapsed | RSS MiB | Go heap MiB | goroutines | open files (sockets) | sessions | leases | pinned | blocks | ops | errors |\n|---|---|---|---|---|---|---|---|---|---|---|"

func (s sample) row() string {
	return fmt.Sprintf("| %v | %.1f | %.1f | %d | %d (%d) | %d | %d | %d | %d | %d | %d |",
		s.At, float64(s.RSSBytes)/(1<<20), float64(s.HeapBytes)/(1<<20), s.Goroutines, s.OpenFiles, s.Sockets, s.Sessions, s.Leases, s.Pinned, s.Blocks, s.Ops, s.Errors)
}

// drive is one client: its own connection, on the inline plane (even i)
// or shared memory (odd i), doing a random mix of operations.
func drive(ctx context.Context, t target, ks *keySpace, o options, i int, c *counters) error {
	cl, err := client.Dial(client.UnixTarget(t.socket))
	if err != nil {
		return err
	}
	defer cl.Close()
	var shm *client.Shm
	if i%2 == 1 {
		if shm, err = cl.Attach(ctx, fmt.Sprintf("soak-%d", i)); err != nil {
			return err
		}
		defer shm.Close()
	}
	r := rand.New(rand.NewPCG(o.seed, uint64(i)))
	buf := make([]byte, 0, o.maxTok*tokenBytes)
	var pace *time.Ticker
	if o.rate > 0 {
		pace = time.NewTicker(time.Duration(float64(time.Second) / o.rate))
		defer pace.Stop()
	}
	for ctx.Err() == nil {
		if pace != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-pace.C:
			}
		}
		k := r.IntN(ks.n)
		var which op
		switch p := r.IntN(100); {
		case p < 40:
			which = opPut
		case p < 75:
			which = opGet
		case p < 90:
			which = opLookup
		default:
			which = opDelete
		}
		octx, cancel := context.WithTimeout(ctx, o.opTime)
		err := do(octx, cl, shm, ks, which, k, r, &buf, c)
		cancel()
		if dl, ok := ctx.Deadline(); ctx.Err() != nil || ok && !time.Now().Before(dl) {
			return nil // the run ended mid-call (its deadline may reach the daemon first)
		}
		c.ops[which].Add(1)
		if err != nil {
			c.fail(fmt.Sprintf("client %d %s key %d", i, opNames[which], k), err)
		}
	}
	return nil
}

// errWrongBytes is a get whose bytes differ from the block's.
var errWrongBytes = errors.New("soak: get returned bytes that differ from what was put")

// do runs one operation. It returns nil for success and for outcomes
// expected under contention (counted in c.expected).
func do(ctx context.Context, cl *client.Client, shm *client.Shm, ks *keySpace, which op, k int, r *rand.Rand, buf *[]byte, c *counters) error {
	expect := func(err error, codes ...codes.Code) error {
		for _, code := range codes {
			if status.Code(err) == code {
				c.expected.Add(1)
				return nil
			}
		}
		return err
	}
	switch which {
	case opPut:
		if shm != nil {
			return shm.Put(ctx, ks.key(k), ks.layout(k), ks.data(k), client.PutOptions{})
		}
		return cl.Put(ctx, ks.key(k), ks.layout(k), ks.data(k), client.PutOptions{})
	case opGet:
		var (
			b   client.Block
			err error
		)
		if shm != nil {
			b, err = shm.Get(ctx, ks.key(k), (*buf)[:0], client.GetOptions{})
		} else {
			b, err = cl.Get(ctx, ks.key(k), (*buf)[:0], client.GetOptions{})
		}
		if err != nil {
			return expect(err, codes.NotFound)
		}
		*buf = b.Data
		if !bytes.Equal(b.Data, ks.data(k)) {
			c.wrong.Add(1)
			return errWrongBytes
		}
		return nil
	case opLookup:
		n := 1 + r.IntN(64)
		hashes := make([][]byte, n)
		for j := range hashes {
			hashes[j] = ks.hash((k + j) % ks.n)
		}
		resp, err := cl.LookupHashes(ctx, ks.ns, 0, hashes)
		if err == nil && resp.GetTotalBlocks() != uint32(n) {
			err = fmt.Errorf("lookup of %d blocks reports %d in all", n, resp.GetTotalBlocks())
		}
		return err
	case opDelete:
		return expect(cl.Delete(ctx, ks.key(k)), codes.NotFound, codes.FailedPrecondition)
	}
	return nil
}

// goroutineSlack is how many goroutines above the start's count the end
// may keep (timers, a scrape's HTTP connection).
const goroutineSlack = 4

// flat reports what did not stay flat. After the clients closed, the
// daemon must be back to its start in goroutines, sockets, sessions,
// leases and pins. Memory and files cannot be compared with the start:
// the DRAM arena's pages count in RSS once touched, and the NVMe tier's
// files and caches grow with what it holds, up to its cap. So they are
// compared between the sample a third into the run and the last one under
// load: RSS may grow by a quarter, the Go heap by half (plus 8 MiB), open
// files other than sockets by 16.
func flat(samples []sample) []string {
	if len(samples) < 2 {
		return []string{"fewer than two samples"}
	}
	base, last := samples[0], samples[len(samples)-1]
	var bad []string
	if last.Goroutines > base.Goroutines+goroutineSlack {
		bad = append(bad, fmt.Sprintf("goroutines %d after the clients closed, %d at the start", last.Goroutines, base.Goroutines))
	}
	if last.Sockets > base.Sockets {
		bad = append(bad, fmt.Sprintf("sockets %d after the clients closed, %d at the start", last.Sockets, base.Sockets))
	}
	if last.Sessions != 0 || last.Leases != 0 || last.Pinned != 0 {
		bad = append(bad, fmt.Sprintf("%d sessions, %d leases, %d pinned blocks left after the clients closed", last.Sessions, last.Leases, last.Pinned))
	}
	if n := len(samples) - 2; n >= 3 {
		ref, end := samples[1+n/3], samples[n]
		if end.RSSBytes > ref.RSSBytes*5/4 {
			bad = append(bad, fmt.Sprintf("RSS %s at the end of the load, %s at %v", fmtBytes(end.RSSBytes), fmtBytes(ref.RSSBytes), ref.At))
		}
		if end.HeapBytes > ref.HeapBytes*3/2+(8<<20) {
			bad = append(bad, fmt.Sprintf("Go heap %s at the end of the load, %s at %v", fmtBytes(end.HeapBytes), fmtBytes(ref.HeapBytes), ref.At))
		}
		if files, refFiles := end.OpenFiles-end.Sockets, ref.OpenFiles-ref.Sockets; files > refFiles+16 {
			bad = append(bad, fmt.Sprintf("%d open files (not sockets) at the end of the load, %d at %v", files, refFiles, ref.At))
		}
	}
	return bad
}

// procRSS reads a process's resident set size.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("soak: no VmRSS in /proc/%d/status", pid)
}

// procFDs counts a process's open file descriptors, and the sockets
// among them.
func procFDs(pid int) (all, sockets int64, err error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			sockets++
		}
	}
	return int64(len(ents)), sockets, nil
}

// scrapeGauges reads gauges from a Prometheus text endpoint.
func scrapeGauges(ctx context.Context, url string, names ...string) ([]int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("soak: parsing %s: %w", url, err)
	}
	out := make([]int64, len(names))
	for i, name := range names {
		f, ok := fams[name]
		if !ok || len(f.GetMetric()) == 0 {
			return nil, fmt.Errorf("soak: %s has no %s", url, name)
		}
		out[i] = int64(f.GetMetric()[0].GetGauge().GetValue())
	}
	return out, nil
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%dKiB", n>>10)
}
