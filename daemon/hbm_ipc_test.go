package daemon_test

import (
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvtier/kvtier/daemon"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// fakeArena records the leases the daemon takes on the HBM export.
type fakeArena struct {
	closing chan struct{}

	mu       sync.Mutex
	live     map[uint64]bool
	next     uint64
	renewals int
	detached []uint64
}

func newFakeArena() *fakeArena {
	return &fakeArena{closing: make(chan struct{}), live: map[uint64]bool{}}
}

func (a *fakeArena) AttachIPC(ttl time.Duration) (daemon.HBMExport, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.next++
	a.live[a.next] = true
	ex := daemon.HBMExport{ID: a.next, Offset: 0, Size: 64 << 20}
	ex.Handle[0], ex.Handle[63] = 0xAB, byte(a.next)
	return ex, nil
}

func (a *fakeArena) RenewIPC(id uint64, ttl time.Duration) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.renewals++
	return nil
}

func (a *fakeArena) DetachIPC(id uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.live, id)
	a.detached = append(a.detached, id)
	return nil
}

func (a *fakeArena) Closing() <-chan struct{} { return a.closing }

func (a *fakeArena) liveLeases() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.live)
}

// attachHbm starts a daemon leasing arena, opens an AttachHbmArena stream
// as "engine" and returns it with the lease (first response).
func attachHbm(t *testing.T, arena *fakeArena) (*testEnv, pb.KVTierService_AttachHbmArenaClient, *pb.AttachHbmArenaResponse) {
	t.Helper()
	e := startEnv(t, envOptions{opts: []daemon.Option{daemon.WithHBMArena(arena)}})
	st, err := e.cl.API().AttachHbmArena(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&pb.AttachHbmArenaRequest{ClientName: "engine"}); err != nil {
		t.Fatal(err)
	}
	first, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return e, st, first
}

func TestAttachHbmArena(t *testing.T) {
	arena := newFakeArena()
	// Lease, then detach after closing the mapping.
	_, st, first := attachHbm(t, arena)
	if len(first.IpcHandle) != 64 || first.IpcHandle[0] != 0xAB || first.ArenaBytes != 64<<20 || first.LeaseTtlMs == 0 {
		t.Fatalf("first response %+v", first)
	}
	if n := arena.liveLeases(); n != 1 {
		t.Fatalf("%d live leases, want 1", n)
	}
	// The tier starts closing: the engine is told.
	close(arena.closing)
	notice, err := st.Recv()
	if err != nil || !notice.Closing {
		t.Fatalf("closing notice: %+v, %v", notice, err)
	}
	if err := st.Send(&pb.AttachHbmArenaRequest{Detach: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); status.Code(err) != codes.OK && err.Error() != "EOF" {
		t.Fatalf("stream after detach: %v", err)
	}
	eventually(t, "the lease detached", func() bool { return arena.liveLeases() == 0 })
}

// A stream that breaks without detach keeps its lease: the engine may still
// map the arena, so only the lease's expiry releases it.
func TestAttachHbmArenaBrokenStreamKeepsLease(t *testing.T) {
	arena := newFakeArena()
	_, st, _ := attachHbm(t, arena)
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err == nil {
		t.Fatal("stream ended without detach: want an error")
	}
	time.Sleep(50 * time.Millisecond)
	arena.mu.Lock()
	detached := len(arena.detached)
	arena.mu.Unlock()
	if detached != 0 || arena.liveLeases() != 1 {
		t.Fatalf("%d detaches and %d live leases after a broken stream; want 0 and 1", detached, arena.liveLeases())
	}
}

func TestAttachHbmArenaRefused(t *testing.T) {
	e := startEnv(t, envOptions{})
	st, err := e.cl.API().AttachHbmArena(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&pb.AttachHbmArenaRequest{ClientName: "engine"})
	if _, err := st.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("without an HBM tier: %v, want FAILED_PRECONDITION", err)
	}
	arena := newFakeArena()
	e2 := startEnv(t, envOptions{opts: []daemon.Option{daemon.WithHBMArena(arena)}})
	st2, err := e2.cl.API().AttachHbmArena(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	st2.Send(&pb.AttachHbmArenaRequest{ClientName: string(make([]byte, 300))})
	if _, err := st2.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a 300-byte client name: %v, want INVALID_ARGUMENT", err)
	}
	if n := arena.liveLeases(); n != 0 {
		t.Fatalf("%d leases after a refused attach", n)
	}
}

// On shutdown the daemon tells every importer, which detaches; the daemon
// then stops without waiting for its shutdown timeout.
func TestAttachHbmArenaShutdownNotice(t *testing.T) {
	arena := newFakeArena()
	e, st, _ := attachHbm(t, arena)
	start := time.Now()
	stopped := make(chan struct{})
	go func() { e.stop(); close(stopped) }()
	notice, err := st.Recv()
	if err != nil || !notice.Closing {
		t.Fatalf("shutdown notice: %+v, %v", notice, err)
	}
	if err := st.Send(&pb.AttachHbmArenaRequest{Detach: true}); err != nil {
		t.Fatal(err)
	}
	<-stopped
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("shutdown took %v with a cooperating importer", d)
	}
	if n := arena.liveLeases(); n != 0 {
		t.Fatalf("%d live leases after the importer detached", n)
	}
}
