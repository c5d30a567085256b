package daemon_test

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvtier/kvtier/client"
	"github.com/kvtier/kvtier/daemon"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// A 4 MiB block: fp16, 1024 tokens, 8 KV heads, head dim 128.
func fourMiBLayout() *pb.Layout {
	return &pb.Layout{Dtype: pb.Dtype_DTYPE_FP16, Tokens: 1024, KvHeads: 8, HeadDim: 128}
}

const fourMiB = 4 << 20

// stallPut opens a Put stream on c, sends the header of a 4 MiB block and
// 1 KiB of data, and then sends nothing more: a client that stalled.
func stallPut(t *testing.T, ctx context.Context, c *client.Client, k *pb.Key) pb.KVTierService_PutClient {
	t.Helper()
	st, err := c.API().Put(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&pb.PutRequest{Header: &pb.PutHeader{Key: k, Layout: fourMiBLayout()}, Data: make([]byte, 1024)}); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestStalledPutIdleTimeout: stalled inline puts used to hold their DRAM
// reservations for as long as the client kept the stream open; now each
// is aborted after the idle timeout and its reservation freed.
func TestStalledPutIdleTimeout(t *testing.T) {
	e := startEnv(t, envOptions{cfg: func(c *daemon.Config) { c.StreamIdleTimeout = 2 * time.Second }})
	ctx := ctxT(t)
	var streams []pb.KVTierService_PutClient
	for i := range 4 {
		streams = append(streams, stallPut(t, ctx, e.dial(""), keyOf("stall", i)))
	}
	// The reservations exist for a while, then go; no other client acts.
	eventually(t, "the stalled puts' reservations to be freed", func() bool {
		return dramStats(stats(t, e.cl)).GetReservedBytes() == 0
	})
	for i, st := range streams {
		_, err := st.CloseAndRecv()
		if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "idle") {
			t.Errorf("stalled put %d ended with %v, want DEADLINE_EXCEEDED naming the idle timeout", i, err)
		}
	}
	// The DRAM is usable again.
	k := keyOf("stall", 100)
	if err := e.cl.Put(ctx, k, fourMiBLayout(), blockData(k, fourMiB), client.PutOptions{}); err != nil {
		t.Fatalf("put after the stalled ones were aborted: %v", err)
	}
}

// TestSlowPutIsNotIdle: a put that keeps sending, however slowly, is not
// aborted even when the whole stream lasts longer than the idle timeout.
func TestSlowPutIsNotIdle(t *testing.T) {
	idle := 2 * time.Second
	e := startEnv(t, envOptions{cfg: func(c *daemon.Config) { c.StreamIdleTimeout = idle }})
	ctx := ctxT(t)
	k := keyOf("slow", 1)
	data := blockData(k, fourMiB)
	st, err := e.cl.API().Put(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 4
	for i := range n {
		m := &pb.PutRequest{Data: data[i*fourMiB/n : (i+1)*fourMiB/n]}
		if i == 0 {
			m.Header = &pb.PutHeader{Key: k, Layout: fourMiBLayout()}
		}
		if err := st.Send(m); err != nil {
			t.Fatal(err)
		}
		time.Sleep(idle / 3) // the stream lasts longer than idle, each step less
	}
	if _, err := st.CloseAndRecv(); err != nil {
		t.Fatalf("slow put: %v", err)
	}
	b, err := e.cl.Get(ctx, k, nil, client.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkData(t, k, b.Data)
}

// TestPutReservationLimits: the bytes inline puts in flight hold are
// bounded per connection and per token, so one client cannot fill the DRAM
// tier with reservations; the error says which bound was hit.
func TestPutReservationLimits(t *testing.T) {
	tokens := writeTokens(t)
	e := startEnv(t, envOptions{
		dramCap: 64 << 20,
		token:   adminToken,
		cfg: func(c *daemon.Config) {
			c.TokensFile = tokens
			c.MaxPutBytesPerConn = 8 << 20
			c.MaxPutBytesPerToken = 12 << 20
		},
	})
	ctx := ctxT(t)
	tenant1 := e.dial(tenantToken)
	tenant2 := e.dial(tenantToken)
	// Two stalled 4 MiB puts fill tenant1's connection budget.
	stallPut(t, ctx, tenant1, keyOf("a/x", 1))
	stallPut(t, ctx, tenant1, keyOf("a/x", 2))
	eventually(t, "two reservations", func() bool { return dramStats(stats(t, e.cl)).GetReservedBytes() >= 8<<20 })
	put := func(c *client.Client, k *pb.Key) error {
		return c.Put(ctx, k, fourMiBLayout(), blockData(k, fourMiB), client.PutOptions{})
	}
	cases := []struct {
		name string
		c    *client.Client
		k    *pb.Key
		want string // "" for success
	}{
		{"same connection over its bound", tenant1, keyOf("a/x", 3), "connection"},
		{"other connection, same token, within the token's bound", tenant2, keyOf("a/x", 4), ""},
		{"another token", e.cl, keyOf("b", 5), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := put(tc.c, tc.k)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("put: %v", err)
			case tc.want != "" && (status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("put = %v, want RESOURCE_EXHAUSTED naming the %s", err, tc.want)
			}
		})
	}
	// The token's bound: a second connection's stalled put brings the
	// token to 12 MiB; one more put of it is refused whatever connection.
	stallPut(t, ctx, tenant2, keyOf("a/x", 6))
	eventually(t, "three reservations", func() bool { return dramStats(stats(t, e.cl)).GetReservedBytes() >= 12<<20+8<<20 })
	tenant3 := e.dial(tenantToken)
	if err := put(tenant3, keyOf("a/x", 7)); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "token") {
		t.Fatalf("put over the token's bound = %v, want RESOURCE_EXHAUSTED naming the token", err)
	}
}

// TestExhaustedNamesReservations: when puts in flight hold the DRAM tier,
// the error says so instead of blaming pinned blocks (there are none).
func TestExhaustedNamesReservations(t *testing.T) {
	e := startEnv(t, envOptions{dramCap: 16 << 20})
	ctx := ctxT(t)
	for i := range 3 {
		stallPut(t, ctx, e.dial(""), keyOf("hold", i))
	}
	eventually(t, "three reservations", func() bool { return dramStats(stats(t, e.cl)).GetReservedBytes() >= 12<<20 })
	k := keyOf("hold", 10)
	eight := &pb.Layout{Dtype: pb.Dtype_DTYPE_FP16, Tokens: 2048, KvHeads: 8, HeadDim: 128}
	err := e.cl.Put(ctx, k, eight, blockData(k, 8<<20), client.PutOptions{})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("put into a DRAM tier held by reservations = %v, want RESOURCE_EXHAUSTED", err)
	}
	msg := status.Convert(err).Message()
	if !strings.Contains(msg, "3 inline puts in flight") || !strings.Contains(msg, "0 pinned blocks") {
		t.Errorf("message %q does not name the 3 inline puts in flight and 0 pinned blocks", msg)
	}
}

// TestStalledGetIdleTimeout: a Get whose client reads one chunk and stops
// used to keep its block pinned forever; now the pin goes after the idle
// timeout and the stream ends with DEADLINE_EXCEEDED.
func TestStalledGetIdleTimeout(t *testing.T) {
	e := startEnv(t, envOptions{cfg: func(c *daemon.Config) { c.StreamIdleTimeout = 2 * time.Second }})
	ctx := ctxT(t)
	k := keyOf("stall-get", 1)
	if err := e.cl.Put(ctx, k, fourMiBLayout(), blockData(k, fourMiB), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// Small flow-control windows: the daemon cannot send the whole block
	// ahead of a client that does not read.
	slow := e.dial("", client.WithDialOptions(grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10)))
	var streams []pb.KVTierService_GetClient
	for range 3 {
		st, err := slow.API().Get(ctx, &pb.GetRequest{Key: k, ChunkBytes: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	eventually(t, "the stalled gets' pins to be dropped", func() bool { return stats(t, e.cl).GetPinnedBlocks() == 0 })
	for i, st := range streams {
		var err error
		for err == nil {
			_, err = st.Recv()
		}
		if err == io.EOF || status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "idle") {
			t.Errorf("stalled get %d ended with %v, want DEADLINE_EXCEEDED naming the idle timeout", i, err)
		}
	}
	if err := e.cl.Delete(ctx, k); err != nil {
		t.Errorf("Delete once the pins went: %v", err)
	}
}

// TestAttachFromAnotherDirectory: with a relative socket path, Attach used
// to return a relative descriptor socket, which a client in another
// directory could not dial. The daemon now makes the path absolute.
func TestAttachFromAnotherDirectory(t *testing.T) {
	dir := socketDir(t)
	t.Chdir(dir)
	startEnv(t, envOptions{cfg: func(c *daemon.Config) { c.Socket = "r.sock" }})
	t.Chdir(t.TempDir())
	c, err := client.Dial(client.UnixTarget(filepath.Join(dir, "r.sock")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	shm, err := c.Attach(ctx, "elsewhere")
	if err != nil {
		t.Fatalf("Attach from another directory: %v", err)
	}
	defer shm.Close()
	if fd := shm.Session().GetFdSocket(); !filepath.IsAbs(fd) && !strings.HasPrefix(fd, "@") {
		t.Errorf("fd socket %q is neither absolute nor abstract", fd)
	}
	k := keyOf("elsewhere", 1)
	if err := shm.Put(ctx, k, smallLayout(), blockData(k, smallSize), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := c.Get(ctx, k, nil, client.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkData(t, k, b.Data)
}

// TestLookupMixedHashSizes: a chain is of one hash function, so a Lookup
// whose hashes mix 16- and 32-byte digests is refused, naming the first
// odd one; it used to be looked up as if it were one chain.
func TestLookupMixedHashSizes(t *testing.T) {
	e := startEnv(t, envOptions{})
	ctx := ctxT(t)
	long := make([]byte, 32)
	copy(long, hashOf(2))
	cases := []struct {
		name   string
		hashes [][]byte
		field  string // "" when valid
	}{
		{"all 16 bytes", [][]byte{hashOf(1), hashOf(2)}, ""},
		{"all 32 bytes", [][]byte{long, long}, ""},
		{"16 then 32", [][]byte{hashOf(1), long}, "hashes[1]"},
		{"32 then 16", [][]byte{long, long, hashOf(1)}, "hashes[2]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.cl.API().Lookup(ctx, &pb.LookupRequest{Namespace: "mixed", Hashes: tc.hashes})
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("Lookup: %v", err)
			case tc.field != "" && (status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.field)):
				t.Fatalf("Lookup = %v, want INVALID_ARGUMENT naming %s", err, tc.field)
			}
		})
	}
}

// TestPutReservationLimitTCP: the per-connection bound holds on TCP too,
// whose connections carry their budget in wrapped credentials.
func TestPutReservationLimitTCP(t *testing.T) {
	e := startEnv(t, envOptions{
		dramCap: 64 << 20,
		cfg: func(c *daemon.Config) {
			c.Addr, c.Insecure = "127.0.0.1:0", true
			c.MaxPutBytesPerConn = 4 << 20
		},
	})
	ctx := ctxT(t)
	tcp, err := client.Dial(e.srv.TCPAddr(), client.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	stallPut(t, ctx, tcp, keyOf("tcp", 1))
	eventually(t, "the reservation", func() bool { return dramStats(stats(t, e.cl)).GetReservedBytes() >= 4<<20 })
	k := keyOf("tcp", 2)
	err = tcp.Put(ctx, k, fourMiBLayout(), blockData(k, fourMiB), client.PutOptions{})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "connection") {
		t.Fatalf("second put on the TCP connection = %v, want RESOURCE_EXHAUSTED naming the connection", err)
	}
	if err := e.cl.Put(ctx, k, fourMiBLayout(), blockData(k, fourMiB), client.PutOptions{}); err != nil {
		t.Fatalf("the same put on another connection: %v", err)
	}
}
