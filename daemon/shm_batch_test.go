package daemon_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvtier/kvtier/client"
	"github.com/kvtier/kvtier/daemon"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// pinBlocksEnv is a daemon holding blocks keyOf("pb", 0..n-1) and a session.
func pinBlocksEnv(t *testing.T, n int) (*testEnv, *client.Shm) {
	t.Helper()
	e := startEnv(t, envOptions{})
	ctx := ctxT(t)
	for i := range n {
		k := keyOf("pb", i)
		if err := e.cl.Put(ctx, k, smallLayout(), blockData(k, smallSize), client.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := e.cl.Attach(ctx, "batch")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return e, s
}

func TestPinBlocks(t *testing.T) {
	e, s := pinBlocksEnv(t, 3)
	ctx := ctxT(t)
	id := shmSessionID(s)
	keys := []*pb.Key{keyOf("pb", 0), keyOf("pb", 7), keyOf("pb", 1), keyOf("pb", 0), keyOf("pb", 2)}
	resp, err := e.cl.API().PinBlocks(ctx, &pb.PinBlocksRequest{SessionId: id, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetLeaseId() == 0 || resp.GetPinned() != 4 || len(resp.GetEntries()) != len(keys) {
		t.Fatalf("lease %d pinned %d entries %d, want a lease, 4 and %d", resp.GetLeaseId(), resp.GetPinned(), len(resp.GetEntries()), len(keys))
	}
	for i, en := range resp.GetEntries() {
		wantCode := codes.OK
		if i == 1 {
			wantCode = codes.NotFound
		}
		if codes.Code(en.GetCode()) != wantCode {
			t.Errorf("entry %d: code %v (%q), want %v", i, codes.Code(en.GetCode()), en.GetMessage(), wantCode)
		}
		if wantCode == codes.OK && (en.GetSlot().GetLength() != smallSize || en.GetLayout().GetTokens() != smallLayout().GetTokens()) {
			t.Errorf("entry %d: slot %v layout %v", i, en.GetSlot(), en.GetLayout())
		}
		if wantCode != codes.OK && (en.GetSlot() != nil || en.GetMessage() == "") {
			t.Errorf("failed entry %d: slot %v message %q", i, en.GetSlot(), en.GetMessage())
		}
	}
	if a, b := resp.GetEntries()[0].GetSlot(), resp.GetEntries()[3].GetSlot(); a.GetOffset() != b.GetOffset() {
		t.Errorf("a repeated key pinned at %d and %d", a.GetOffset(), b.GetOffset())
	}
	// One lease for the batch; three distinct blocks pinned.
	if st := stats(t, e.cl); st.GetLeases() != 1 || st.GetPinnedBlocks() != 3 {
		t.Fatalf("leases %d pinned %d, want 1 and 3", st.GetLeases(), st.GetPinnedBlocks())
	}
	// A pinned block cannot be deleted.
	if err := e.cl.Delete(ctx, keyOf("pb", 2)); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Delete of a batch-pinned block: %v, want FailedPrecondition", err)
	}
	rel, err := e.cl.API().Release(ctx, &pb.ReleaseRequest{SessionId: id, LeaseIds: []uint64{resp.GetLeaseId()}})
	if err != nil || rel.GetReleased() != 1 {
		t.Fatalf("Release: %v, %v", rel, err)
	}
	if st := stats(t, e.cl); st.GetLeases() != 0 || st.GetPinnedBlocks() != 0 {
		t.Errorf("after release: leases %d pinned %d", st.GetLeases(), st.GetPinnedBlocks())
	}
	_, err = e.cl.API().Release(ctx, &pb.ReleaseRequest{SessionId: id, LeaseIds: []uint64{resp.GetLeaseId()}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second Release: %v, want FailedPrecondition", err)
	}
}

func TestPinBlocksAllMissing(t *testing.T) {
	e, s := pinBlocksEnv(t, 0)
	resp, err := e.cl.API().PinBlocks(ctxT(t), &pb.PinBlocksRequest{SessionId: shmSessionID(s), Keys: []*pb.Key{keyOf("pb", 1), keyOf("pb", 2)}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetLeaseId() != 0 || resp.GetPinned() != 0 {
		t.Errorf("lease %d pinned %d, want none", resp.GetLeaseId(), resp.GetPinned())
	}
	for i, en := range resp.GetEntries() {
		if codes.Code(en.GetCode()) != codes.NotFound {
			t.Errorf("entry %d: %v", i, codes.Code(en.GetCode()))
		}
	}
	if st := stats(t, e.cl); st.GetLeases() != 0 {
		t.Errorf("leases %d after a batch of misses", st.GetLeases())
	}
}

func TestPinBlocksInvalid(t *testing.T) {
	e, s := pinBlocksEnv(t, 1)
	ctx := ctxT(t)
	id := shmSessionID(s)
	good := keyOf("pb", 0)
	many := make([]*pb.Key, daemon.MaxPinBlocksKeys+1)
	for i := range many {
		many[i] = good
	}
	for _, tc := range []struct {
		name string
		req  *pb.PinBlocksRequest
		want codes.Code
	}{
		{"no keys", &pb.PinBlocksRequest{SessionId: id}, codes.InvalidArgument},
		{"too many keys", &pb.PinBlocksRequest{SessionId: id, Keys: many}, codes.InvalidArgument},
		{"bad key", &pb.PinBlocksRequest{SessionId: id, Keys: []*pb.Key{good, {Namespace: "pb", Hash: []byte{1}}}}, codes.InvalidArgument},
		{"nil key", &pb.PinBlocksRequest{SessionId: id, Keys: []*pb.Key{nil}}, codes.InvalidArgument},
		{"bad promote", &pb.PinBlocksRequest{SessionId: id, Keys: []*pb.Key{good}, Promote: 99}, codes.InvalidArgument},
		{"ttl over the max", &pb.PinBlocksRequest{SessionId: id, Keys: []*pb.Key{good}, LeaseTtlMs: 1 << 31}, codes.InvalidArgument},
		{"short session id", &pb.PinBlocksRequest{SessionId: id[:3], Keys: []*pb.Key{good}}, codes.InvalidArgument},
		{"unknown session", &pb.PinBlocksRequest{SessionId: make([]byte, 16), Keys: []*pb.Key{good}}, codes.FailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.cl.API().PinBlocks(ctx, tc.req)
			if status.Code(err) != tc.want {
				t.Errorf("%v, want %v", err, tc.want)
			}
		})
	}
	if st := stats(t, e.cl); st.GetLeases() != 0 || st.GetPinnedBlocks() != 0 {
		t.Errorf("rejected calls left leases %d pinned %d", st.GetLeases(), st.GetPinnedBlocks())
	}
}

func TestPinBlocksLeaseLimit(t *testing.T) {
	e := startEnv(t, envOptions{cfg: func(c *daemon.Config) { c.MaxLeases = 1 }})
	ctx := ctxT(t)
	k := keyOf("pb", 0)
	if err := e.cl.Put(ctx, k, smallLayout(), blockData(k, smallSize), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := e.cl.Attach(ctx, "limited")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	req := &pb.PinBlocksRequest{SessionId: shmSessionID(s), Keys: []*pb.Key{k, k, k}}
	first, err := e.cl.API().PinBlocks(ctx, req)
	if err != nil {
		t.Fatalf("a batch is one lease, within a limit of 1: %v", err)
	}
	if _, err := e.cl.API().PinBlocks(ctx, req); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("second batch over the limit: %v, want ResourceExhausted", err)
	}
	// The piggybacked release frees the first lease before the second pins.
	req.ReleaseLeaseIds = []uint64{first.GetLeaseId()}
	if _, err := e.cl.API().PinBlocks(ctx, req); err != nil {
		t.Errorf("batch releasing the first: %v", err)
	}
}

func TestPinBlocksLeaseExpiry(t *testing.T) {
	e, s := pinBlocksEnv(t, 2)
	ctx := ctxT(t)
	id := shmSessionID(s)
	resp, err := e.cl.API().PinBlocks(ctx, &pb.PinBlocksRequest{SessionId: id, Keys: []*pb.Key{keyOf("pb", 0), keyOf("pb", 1)}, LeaseTtlMs: 20})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetLeaseTtlMs() != 20 {
		t.Errorf("granted ttl %d ms, want 20", resp.GetLeaseTtlMs())
	}
	eventually(t, "expiry report", func() bool { return s.Expired() == 1 })
	if st := stats(t, e.cl); st.GetPinnedBlocks() != 0 || st.GetLeases() != 0 {
		t.Errorf("after expiry: leases %d pinned %d", st.GetLeases(), st.GetPinnedBlocks())
	}
	_, err = e.cl.API().Release(ctx, &pb.ReleaseRequest{SessionId: id, LeaseIds: []uint64{resp.GetLeaseId()}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Release of an expired batch: %v, want FailedPrecondition", err)
	}
}

// TestPinBlocksVanishingClient: a client gone while holding batch pins
// leaves nothing pinned.
func TestPinBlocksVanishingClient(t *testing.T) {
	e, _ := pinBlocksEnv(t, 3)
	ctx := ctxT(t)
	c := e.dial("")
	s, err := c.Attach(ctx, "doomed")
	if err != nil {
		t.Fatal(err)
	}
	keys := []*pb.Key{keyOf("pb", 0), keyOf("pb", 1), keyOf("pb", 2)}
	for range 2 {
		if _, err := c.API().PinBlocks(ctx, &pb.PinBlocksRequest{SessionId: shmSessionID(s), Keys: keys}); err != nil {
			t.Fatal(err)
		}
	}
	if st := stats(t, e.cl); st.GetPinnedBlocks() != 3 || st.GetLeases() != 2 {
		t.Fatalf("pinned %d leases %d, want 3 and 2", st.GetPinnedBlocks(), st.GetLeases())
	}
	c.Close()
	eventually(t, "pins released", func() bool {
		st := stats(t, e.cl)
		return st.GetPinnedBlocks() == 0 && st.GetLeases() == 0
	})
	for _, k := range keys {
		if err := e.cl.Delete(ctx, k); err != nil {
			t.Errorf("Delete after the pins went: %v", err)
		}
	}
}
