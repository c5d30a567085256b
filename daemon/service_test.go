package daemon_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvtier/kvtier/client"
	"github.com/kvtier/kvtier/daemon"
	"github.com/kvtier/kvtier/prefetch"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

const (
	adminToken   = "admin-token-0123456789"
	tenantToken  = "tenant-token-0123456789"
	tokensConfig = `{"tokens": [
  {"name": "admin", "token": "` + adminToken + `", "namespaces": ["*"]},
  {"name": "tenant-a", "token": "` + tenantToken + `", "namespaces": ["a/*", "shared"]}
]}`
)

func writeTokens(t testing.TB) string {
	p := filepath.Join(t.TempDir(), "tokens.json")
	if err := os.WriteFile(p, []byte(tokensConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRoundTripInline(t *testing.T) {
	e := startEnv(t, envOptions{})
	ctx := ctxT(t)
	for _, tc := range []struct {
		name   string
		layout *pb.Layout
		size   int
	}{
		{"size=8KiB", smallLayout(), smallSize},
		{"size=1MiB", mibLayout(), 1 << 20},
		{"size=3MiB+chunks", &pb.Layout{Dtype: pb.Dtype_DTYPE_FP32, Tokens: 384, KvHeads: 8, HeadDim: 128, Layers: 2}, 2 * 2 * 8 * 384 * 128 * 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := &pb.Key{Namespace: "rt", Hash: hashOf(tc.size), Layer: -1}
			data := blockData(k, tc.size)
			if err := e.cl.Put(ctx, k, tc.layout, data, client.PutOptions{}); err != nil {
				t.Fatalf("Put: %v", err)
			}
			b, err := e.cl.Get(ctx, k, nil, client.GetOptions{})
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if !bytes.Equal(b.Data, data) {
				t.Fatalf("Get returned %d bytes that differ from the %d put", len(b.Data), len(data))
			}
			if b.From != pb.Tier_TIER_DRAM || b.Layout.GetTokens() != tc.layout.GetTokens() {
				t.Errorf("Get: from %v layout %v", b.From, b.Layout)
			}
			resp, err := e.cl.LookupHashes(ctx, "rt", -1, [][]byte{k.Hash, hashOf(-1)})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetCachedBlocks() != 1 || resp.GetTotalBlocks() != 2 || len(resp.GetTiers()) != 1 || resp.GetTiers()[0] != pb.Tier_TIER_DRAM {
				t.Errorf("Lookup = %v", resp)
			}
		})
	}
	st := stats(t, e.cl)
	if st.GetPinnedBlocks() != 0 || dramStats(st).GetBlocks() != 3 {
		t.Errorf("after round trips: pinned %d, DRAM blocks %d", st.GetPinnedBlocks(), dramStats(st).GetBlocks())
	}
}

func TestRoundTripShm(t *testing.T) {
	e := startEnv(t, envOptions{})
	ctx := ctxT(t)
	s, err := e.cl.Attach(ctx, "test")
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	defer s.Close()
	k := keyOf("shm", 1)
	data := blockData(k, 1<<20)
	if err := s.Put(ctx, k, mibLayout(), data, client.PutOptions{}); err != nil {
		t.Fatalf("shm Put: %v", err)
	}
	// Read back through both planes.
	b, err := s.Get(ctx, k, nil, client.GetOptions{})
	if err != nil {
		t.Fatalf("shm Get: %v", err)
	}
	if !bytes.Equal(b.Data, data) {
		t.Fatal("shm Get differs from shm Put")
	}
	b, err = e.cl.Get(ctx, k, nil, client.GetOptions{})
	if err != nil || !bytes.Equal(b.Data, data) {
		t.Fatalf("inline Get of a shm Put: %v", err)
	}
	// Pin, read in place, release synchronously.
	p, err := s.Pin(ctx, k, client.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.Data, data) || p.Slot.GetGeneration() == 0 {
		t.Fatalf("pinned view differs or has no generation (%v)", p.Slot)
	}
	if err := p.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	// Deferred releases are flushed; nothing stays pinned.
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	eventually(t, "no pins", func() bool { st := stats(t, e.cl); return st.GetPinnedBlocks() == 0 && st.GetLeases() == 0 })
	// A reservation that is aborted leaves nothing.
	r, err := s.Reserve(ctx, keyOf("shm", 2), smallLayout())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cl.Get(ctx, keyOf("shm", 2), nil, client.GetOptions{}); status.Code(err) != codes.NotFound {
		t.Errorf("Get of an aborted reservation: %v, want NotFound", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	eventually(t, "session closed", func() bool { return stats(t, e.cl).GetSessions() == 0 })
}

// TestBadInput sends each kind of bad request and checks its code, and that
// the daemon still serves afterwards.
func TestBadInput(t *testing.T) {
	tokens := writeTokens(t)
	e := startEnv(t, envOptions{
		token: adminToken,
		cfg: func(c *daemon.Config) {
			c.TokensFile = tokens
			c.MaxMessageBytes = 1<<20 + 64<<10
			c.MaxLeases = 4
			c.Addr = "127.0.0.1:0"
			c.Insecure = true
		},
	})
	ctx := ctxT(t)
	admin := e.cl
	tenant := e.dial(tenantToken)
	noToken := e.dial("")
	wrongToken := e.dial("not-a-token-at-all-0000")
	tcp, err := client.Dial(e.srv.TCPAddr(), client.WithInsecure(), client.WithToken(adminToken))
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	shm, err := admin.Attach(ctx, "bad-input")
	if err != nil {
		t.Fatal(err)
	}
	defer shm.Close()
	good := keyOf("ns", 1)
	if err := admin.Put(ctx, good, smallLayout(), blockData(good, smallSize), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	put := func(c *client.Client, k *pb.Key, l *pb.Layout, n int) error {
		return c.Put(ctx, k, l, make([]byte, n), client.PutOptions{})
	}
	cases := []struct {
		name  string
		run   func() error
		code  codes.Code
		field string // the message must mention it
	}{
		{"wrong layout size", func() error { return put(admin, keyOf("ns", 2), smallLayout(), smallSize-1) }, codes.InvalidArgument, "data"},
		{"too many bytes", func() error { return put(admin, keyOf("ns", 2), smallLayout(), smallSize+1) }, codes.InvalidArgument, "data"},
		{"unknown dtype", func() error {
			l := smallLayout()
			l.Dtype = 99
			return put(admin, keyOf("ns", 2), l, smallSize)
		}, codes.InvalidArgument, "header.layout.dtype"},
		{"missing dtype", func() error {
			l := smallLayout()
			l.Dtype = pb.Dtype_DTYPE_UNSPECIFIED
			return put(admin, keyOf("ns", 2), l, smallSize)
		}, codes.InvalidArgument, "header.layout.dtype"},
		{"zero tokens", func() error {
			l := smallLayout()
			l.Tokens = 0
			return put(admin, keyOf("ns", 2), l, smallSize)
		}, codes.InvalidArgument, "header.layout.tokens"},
		{"head dim overflowing uint16", func() error {
			l := smallLayout()
			l.HeadDim = 1<<16 + 64
			return put(admin, keyOf("ns", 2), l, smallSize)
		}, codes.InvalidArgument, "header.layout.head_dim"},
		{"empty namespace", func() error { return put(admin, keyOf("", 2), smallLayout(), smallSize) }, codes.InvalidArgument, "header.key.namespace"},
		{"oversized namespace", func() error {
			return put(admin, keyOf(strings.Repeat("n", 129), 2), smallLayout(), smallSize)
		}, codes.InvalidArgument, "header.key.namespace"},
		{"namespace with a space", func() error {
			_, err := admin.Get(ctx, keyOf("a b", 2), nil, client.GetOptions{})
			return err
		}, codes.InvalidArgument, "key.namespace"},
		{"bad hash length", func() error {
			return put(admin, &pb.Key{Namespace: "ns", Hash: make([]byte, 15)}, smallLayout(), smallSize)
		}, codes.InvalidArgument, "header.key.hash"},
		{"bad layer", func() error {
			return put(admin, &pb.Key{Namespace: "ns", Hash: hashOf(3), Layer: 1024}, smallLayout(), smallSize)
		}, codes.InvalidArgument, "header.key.layer"},
		{"bad lookup hash", func() error {
			_, err := admin.Lookup(ctx, &pb.LookupRequest{Namespace: "ns", Hashes: [][]byte{hashOf(1), {1, 2, 3}}})
			return err
		}, codes.InvalidArgument, "hashes[1]"},
		{"lookup with hashes and tokens", func() error {
			_, err := admin.Lookup(ctx, &pb.LookupRequest{Namespace: "ns", Hashes: [][]byte{hashOf(1)}, TokenIds: []uint32{1}})
			return err
		}, codes.InvalidArgument, "hashes"},
		{"lookup tokens without params", func() error {
			_, err := admin.Lookup(ctx, &pb.LookupRequest{Namespace: "ns", TokenIds: []uint32{1, 2}})
			return err
		}, codes.InvalidArgument, "hash_params"},
		{"packed hashes of a bad size", func() error {
			_, err := admin.Lookup(ctx, &pb.LookupRequest{Namespace: "ns", PackedHashes: make([]byte, 40), HashSize: 16})
			return err
		}, codes.InvalidArgument, "packed_hashes"},
		{"oversize message", func() error {
			_, err := admin.Lookup(ctx, &pb.LookupRequest{Namespace: "ns", PackedHashes: make([]byte, 2<<20), HashSize: 16})
			return err
		}, codes.ResourceExhausted, ""},
		{"oversize chunk", func() error {
			st, err := admin.API().Put(ctx)
			if err != nil {
				return err
			}
			l := &pb.Layout{Dtype: pb.Dtype_DTYPE_FP32, Tokens: 512, KvHeads: 8, HeadDim: 128} // 4 MiB
			if err := st.Send(&pb.PutRequest{Header: &pb.PutHeader{Key: keyOf("ns", 4), Layout: l}, Data: make([]byte, 1<<20+1)}); err != nil {
				_, err = st.CloseAndRecv()
				return err
			}
			_, err = st.CloseAndRecv()
			return err
		}, codes.InvalidArgument, "data"},
		{"put without header", func() error {
			st, err := admin.API().Put(ctx)
			if err != nil {
				return err
			}
			_ = st.Send(&pb.PutRequest{Data: []byte{1}})
			_, err = st.CloseAndRecv()
			return err
		}, codes.InvalidArgument, "header"},
		{"missing token", func() error { _, err := noToken.Stats(ctx); return err }, codes.Unauthenticated, ""},
		{"wrong token", func() error { _, err := wrongToken.Stats(ctx); return err }, codes.Unauthenticated, ""},
		{"namespace not allowed", func() error {
			_, err := tenant.Get(ctx, good, nil, client.GetOptions{})
			return err
		}, codes.PermissionDenied, ""},
		{"namespace not allowed for put", func() error { return put(tenant, keyOf("b/x", 1), smallLayout(), smallSize) }, codes.PermissionDenied, ""},
		{"shm needs every namespace", func() error {
			s, err := tenant.Attach(ctx, "tenant")
			if err == nil {
				s.Close()
			}
			return err
		}, codes.PermissionDenied, ""},
		{"shm over TCP", func() error {
			_, err := tcp.API().PinBlock(ctx, &pb.PinBlockRequest{SessionId: make([]byte, 16), Key: good})
			return err
		}, codes.FailedPrecondition, ""},
		{"attach over TCP", func() error {
			st, err := tcp.API().Attach(ctx, &pb.AttachRequest{})
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}, codes.FailedPrecondition, ""},
		{"unknown session", func() error {
			_, err := admin.API().PinBlock(ctx, &pb.PinBlockRequest{SessionId: make([]byte, 16), Key: good})
			return err
		}, codes.FailedPrecondition, ""},
		{"release of an unknown lease", func() error {
			_, err := admin.API().Release(ctx, &pb.ReleaseRequest{SessionId: shmSessionID(shm), LeaseIds: []uint64{12345}})
			return err
		}, codes.FailedPrecondition, ""},
		{"double commit", func() error {
			r, err := shm.Reserve(ctx, keyOf("ns", 5), smallLayout())
			if err != nil {
				return err
			}
			id := r.LeaseID()
			if err := r.Commit(ctx, client.PutOptions{}); err != nil {
				return err
			}
			_, err = admin.API().CommitSlot(ctx, &pb.CommitSlotRequest{SessionId: shmSessionID(shm), LeaseId: id})
			return err
		}, codes.FailedPrecondition, ""},
		{"release of a reservation", func() error {
			r, err := shm.Reserve(ctx, keyOf("ns", 6), smallLayout())
			if err != nil {
				return err
			}
			defer r.Abort(ctx)
			_, err = admin.API().Release(ctx, &pb.ReleaseRequest{SessionId: shmSessionID(shm), LeaseIds: []uint64{r.LeaseID()}})
			return err
		}, codes.FailedPrecondition, ""},
		{"too many leases", func() error {
			var ps []*client.Pinned
			defer func() {
				for _, p := range ps {
					p.Release(ctx)
				}
			}()
			for range 5 {
				p, err := shm.Pin(ctx, good, client.GetOptions{})
				if err != nil {
					return err
				}
				ps = append(ps, p)
			}
			return nil
		}, codes.ResourceExhausted, ""},
		{"lease ttl too long", func() error {
			_, err := admin.API().PinBlock(ctx, &pb.PinBlockRequest{SessionId: shmSessionID(shm), Key: good, LeaseTtlMs: 1 << 31})
			return err
		}, codes.InvalidArgument, "lease_ttl_ms"},
		{"get of a missing block", func() error {
			_, err := admin.Get(ctx, keyOf("ns", 99), nil, client.GetOptions{})
			return err
		}, codes.NotFound, ""},
		{"pin of a missing block", func() error {
			_, err := shm.Pin(ctx, keyOf("ns", 99), client.GetOptions{})
			return err
		}, codes.NotFound, ""},
		{"durable put without NVMe", func() error {
			k := keyOf("ns", 7)
			return admin.Put(ctx, k, smallLayout(), make([]byte, smallSize), client.PutOptions{Durable: true})
		}, codes.FailedPrecondition, ""},
		{"promote to HBM without a GPU", func() error {
			_, err := admin.Get(ctx, good, nil, client.GetOptions{Promote: pb.Tier_TIER_HBM})
			return err
		}, codes.FailedPrecondition, ""},
		{"delete of a pinned block", func() error {
			p, err := shm.Pin(ctx, good, client.GetOptions{})
			if err != nil {
				return err
			}
			defer p.Release(ctx)
			return admin.Delete(ctx, good)
		}, codes.FailedPrecondition, ""},
		{"deadline mid-stream", func() error {
			dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			st, err := admin.API().Put(dctx)
			if err != nil {
				return err
			}
			l := &pb.Layout{Dtype: pb.Dtype_DTYPE_FP16, Tokens: 1024, KvHeads: 8, HeadDim: 128} // 4 MiB
			if err := st.Send(&pb.PutRequest{Header: &pb.PutHeader{Key: keyOf("ns", 8), Layout: l}, Data: make([]byte, 1<<20)}); err != nil {
				return err
			}
			// The client stalls without closing the stream; the deadline passes.
			return st.RecvMsg(&pb.PutResponse{})
		}, codes.DeadlineExceeded, ""},
		{"hint without a prefetcher", func() error {
			st, err := admin.API().Hint(ctx)
			if err != nil {
				return err
			}
			if err := st.Send(&pb.HintRequest{Hint: &pb.HintRequest_RequestArrived{RequestArrived: &pb.RequestArrivedHint{
				RequestId: "r1", Namespace: "ns", Hashes: [][]byte{hashOf(1)},
			}}}); err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}, codes.Unimplemented, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code %v (%v), want %v", got, err, tc.code)
			}
			if tc.field != "" && !strings.Contains(status.Convert(err).Message(), tc.field) {
				t.Errorf("message %q does not name %q", status.Convert(err).Message(), tc.field)
			}
			// The daemon still serves, and the good block is intact.
			b, err := admin.Get(ctx, good, nil, client.GetOptions{})
			if err != nil {
				t.Fatalf("daemon stopped serving: %v", err)
			}
			checkData(t, good, b.Data)
		})
	}
	// Nothing half-written or leaked: only committed blocks hold DRAM, nothing is pinned.
	if err := shm.Flush(ctx); err != nil && status.Code(err) != codes.FailedPrecondition {
		t.Fatal(err)
	}
	eventually(t, "no pins or reservations", func() bool {
		st := stats(t, admin)
		d := dramStats(st)
		return st.GetPinnedBlocks() == 0 && st.GetLeases() == 0 && d.GetUsedBytes() == d.GetBlocks()*smallSize
	})
}

// shmSessionID returns a session's id for raw calls.
func shmSessionID(s *client.Shm) []byte { return s.Session().GetSessionId() }

// TestVanishingClients: a client that goes away mid-put leaves nothing
// written, and one that goes away while holding pins leaves nothing pinned.
func TestVanishingClients(t *testing.T) {
	e := startEnv(t, envOptions{})
	ctx := ctxT(t)
	k := keyOf("gone", 1)
	if err := e.cl.Put(ctx, k, smallLayout(), blockData(k, smallSize), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Run("mid-stream", func(t *testing.T) {
		c := e.dial("")
		sctx, cancel := context.WithCancel(ctx)
		st, err := c.API().Put(sctx)
		if err != nil {
			t.Fatal(err)
		}
		l := &pb.Layout{Dtype: pb.Dtype_DTYPE_FP16, Tokens: 1024, KvHeads: 8, HeadDim: 128} // 4 MiB
		half := keyOf("gone", 2)
		if err := st.Send(&pb.PutRequest{Header: &pb.PutHeader{Key: half, Layout: l}, Data: make([]byte, 1<<20)}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the reservation", func() bool { return dramStats(stats(t, e.cl)).GetReservedBytes() > smallSize })
		cancel()
		c.Close()
		eventually(t, "the reservation's abort", func() bool {
			d := dramStats(stats(t, e.cl))
			return d.GetReservedBytes() == smallSize && d.GetBlocks() == 1
		})
		if _, err := e.cl.Get(ctx, half, nil, client.GetOptions{}); status.Code(err) != codes.NotFound {
			t.Errorf("half-written block: %v, want NotFound", err)
		}
	})
	t.Run("holding pins", func(t *testing.T) {
		c := e.dial("")
		s, err := c.Attach(ctx, "doomed")
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := s.Pin(ctx, k, client.GetOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Reserve(ctx, keyOf("gone", 3), smallLayout()); err != nil {
			t.Fatal(err)
		}
		if st := stats(t, e.cl); st.GetPinnedBlocks() != 1 || st.GetLeases() != 4 {
			t.Fatalf("pinned %d leases %d, want 1 and 4", st.GetPinnedBlocks(), st.GetLeases())
		}
		c.Close() // the connection goes; the session's Attach stream ends
		eventually(t, "pins released", func() bool {
			st := stats(t, e.cl)
			return st.GetPinnedBlocks() == 0 && st.GetLeases() == 0 && st.GetSessions() == 0 &&
				dramStats(st).GetReservedBytes() == smallSize
		})
		if err := e.cl.Delete(ctx, k); err != nil {
			t.Errorf("Delete after the pins went: %v", err)
		}
	})
}

func TestLeaseExpiry(t *testing.T) {
	e := startEnv(t, envOptions{})
	ctx := ctxT(t)
	k := keyOf("exp", 1)
	if err := e.cl.Put(ctx, k, smallLayout(), blockData(k, smallSize), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := e.cl.Attach(ctx, "slow")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id := shmSessionID(s)
	pin, err := e.cl.API().PinBlock(ctx, &pb.PinBlockRequest{SessionId: id, Key: k, LeaseTtlMs: 20})
	if err != nil {
		t.Fatal(err)
	}
	if pin.GetLeaseTtlMs() != 20 {
		t.Errorf("granted ttl %d ms, want 20", pin.GetLeaseTtlMs())
	}
	res, err := e.cl.API().ReserveSlot(ctx, &pb.ReserveSlotRequest{SessionId: id, Key: keyOf("exp", 2), Layout: smallLayout(), LeaseTtlMs: 20})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "expiry reports", func() bool { return s.Expired() == 2 })
	if st := stats(t, e.cl); st.GetPinnedBlocks() != 0 || st.GetLeases() != 0 || dramStats(st).GetReservedBytes() != smallSize {
		t.Errorf("after expiry: %v", st)
	}
	_, err = e.cl.API().Release(ctx, &pb.ReleaseRequest{SessionId: id, LeaseIds: []uint64{pin.GetLeaseId()}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Release of an expired pin: %v, want FailedPrecondition", err)
	}
	_, err = e.cl.API().CommitSlot(ctx, &pb.CommitSlotRequest{SessionId: id, LeaseId: res.GetLeaseId()})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Commit of an expired reservation: %v, want FailedPrecondition", err)
	}
	// A later reservation may reuse the slot, with another generation.
	res2, err := e.cl.API().ReserveSlot(ctx, &pb.ReserveSlotRequest{SessionId: id, Key: keyOf("exp", 2), Layout: smallLayout()})
	if err != nil {
		t.Fatal(err)
	}
	if res2.GetSlot().GetOffset() == res.GetSlot().GetOffset() && res2.GetSlot().GetGeneration() == res.GetSlot().GetGeneration() {
		t.Errorf("a reused slot kept its generation %d", res2.GetSlot().GetGeneration())
	}
	if _, err := e.cl.API().AbortSlot(ctx, &pb.AbortSlotRequest{SessionId: id, LeaseId: res2.GetLeaseId()}); err != nil {
		t.Fatal(err)
	}
}

func TestUnsupportedHintWithPrefetcher(t *testing.T) {
	h := &fakeHints{}
	e := startEnv(t, envOptions{opts: []daemon.Option{daemon.WithHints(h)}})
	ctx := ctxT(t)
	st, err := e.cl.API().Hint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(r *pb.HintRequest) {
		t.Helper()
		if err := st.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	send(&pb.HintRequest{Id: 1, Ack: true, Hint: &pb.HintRequest_RequestArrived{RequestArrived: &pb.RequestArrivedHint{
		RequestId: "r1", Namespace: "ns", Layer: -1,
		TokenIds: make([]uint32, 64), HashParams: &pb.HashParams{BlockTokens: 16},
	}}})
	ack, err := st.Recv()
	if err != nil || ack.GetId() != 1 || ack.GetBlocksScheduled() != 4 {
		t.Fatalf("ack %v, %v; want id 1 with 4 blocks", ack, err)
	}
	send(&pb.HintRequest{Id: 2, Ack: true, Hint: &pb.HintRequest_LayerAttention{LayerAttention: &pb.LayerAttentionHint{
		RequestId: "r1", Layer: 3, BlockIndexes: []uint32{0, 2}, Scores: []float32{0.9, 0.1},
	}}})
	if ack, err := st.Recv(); err != nil || ack.GetId() != 2 {
		t.Fatalf("ack %v, %v", ack, err)
	}
	// The fake does not handle request_finished: the stream ends UNIMPLEMENTED.
	send(&pb.HintRequest{Id: 3, Hint: &pb.HintRequest_RequestFinished{RequestFinished: &pb.RequestFinishedHint{RequestId: "r1"}}})
	if _, err := st.Recv(); status.Code(err) != codes.Unimplemented {
		t.Fatalf("request_finished: %v, want Unimplemented", err)
	}
	if h.arrived.Namespace != "ns" || len(h.arrived.Hashes) != 4 || h.attention.Namespace != "ns" || h.attention.Layer != 3 {
		t.Errorf("hints seen: %+v %+v", h.arrived, h.attention)
	}
	// A layer_attention for a request not announced on the stream is refused.
	st2, err := e.cl.API().Hint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st2.Send(&pb.HintRequest{Hint: &pb.HintRequest_LayerAttention{LayerAttention: &pb.LayerAttentionHint{RequestId: "r1"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st2.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("unannounced request: %v, want InvalidArgument", err)
	}
}

type fakeHints struct {
	arrived   prefetch.RequestArrived
	attention prefetch.LayerAttention
}

func (f *fakeHints) RequestArrived(_ context.Context, h prefetch.RequestArrived) (int, error) {
	f.arrived = h
	return len(h.Hashes), nil
}

func (f *fakeHints) LayerAttention(_ context.Context, h prefetch.LayerAttention) (int, error) {
	f.attention = h
	return len(h.BlockIndexes), nil
}

func (f *fakeHints) RequestFinished(context.Context, prefetch.RequestFinished) error {
	return errors.ErrUnsupported
}

// TestRepeatedPutDoesNotEvict: a put of a block that is already cached,
// inline or over shared memory, takes no room and evicts nothing, while a
// repeated put with the wrong byte count is still refused.
func TestRepeatedPutDoesNotEvict(t *testing.T) {
	e := startEnv(t, envOptions{dramCap: 64 << 10}) // room for 8 blocks of 8 KiB
	ctx := ctxT(t)
	shm, err := e.cl.Attach(ctx, "dup")
	if err != nil {
		t.Fatal(err)
	}
	defer shm.Close()
	const n = 8
	for i := range n {
		k := keyOf("dup", i)
		if err := e.cl.Put(ctx, k, smallLayout(), blockData(k, smallSize), client.PutOptions{}); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	for i := range 3 {
		k := keyOf("dup", i)
		if err := e.cl.Put(ctx, k, smallLayout(), blockData(k, smallSize), client.PutOptions{}); err != nil {
			t.Fatalf("repeated inline put: %v", err)
		}
		if err := shm.Put(ctx, k, smallLayout(), blockData(k, smallSize), client.PutOptions{}); err != nil {
			t.Fatalf("repeated shared-memory put: %v", err)
		}
	}
	if err := e.cl.Put(ctx, keyOf("dup", 0), smallLayout(), make([]byte, smallSize-2), client.PutOptions{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("repeated put with a short block = %v, want InvalidArgument", err)
	}
	if err := shm.Put(ctx, keyOf("dup", 0), smallLayout(), make([]byte, smallSize-2), client.PutOptions{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("repeated shared-memory put with a short block = %v, want InvalidArgument", err)
	}
	st := dramStats(stats(t, e.cl))
	if st.GetEvictions() != 0 || st.GetBlocks() != n {
		t.Fatalf("after repeated puts: %d evictions, %d blocks; want 0 and %d", st.GetEvictions(), st.GetBlocks(), n)
	}
	for i := range n {
		k := keyOf("dup", i)
		b, err := e.cl.Get(ctx, k, nil, client.GetOptions{})
		if err != nil {
			t.Fatalf("get %d: %v", i, err)
		}
		checkData(t, k, b.Data)
	}
}
