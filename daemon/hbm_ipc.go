package daemon

import (
	"errors"
	"fmt"
	"io"
	"time"

	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers"
)

// HBMExport is one importer's lease on the HBM arena's IPC export.
type HBMExport struct {
	ID     uint64
	Handle [64]byte
	// Offset is where the arena starts in the exported allocation; Size
	// its length.
	Offset, Size int64
}

// HBMArena is the HBM tier's IPC export with importer leases (the
// command line adapts *hbm.Tier to it): the tier frees its arena only when
// every lease was detached or lapsed.
type HBMArena interface {
	AttachIPC(ttl time.Duration) (HBMExport, error)
	RenewIPC(id uint64, ttl time.Duration) error
	DetachIPC(id uint64) error
	// Closing is closed when the tier starts closing.
	Closing() <-chan struct{}
}

// hbmLeaseTTL is how long an importer's lease outlives a stream that ends
// without detach; the stream renews it every third of that while open.
const hbmLeaseTTL = 30 * time.Second

// WithHBMArena offers the HBM arena to local engines (AttachHbmArena).
func WithHBMArena(a HBMArena) Option { return func(s *Server) { s.hbmArena = a } }

// AttachHbmArena leases the HBM arena's IPC handle for as long as the
// stream lasts; see the proto for the protocol.
func (s *Server) AttachHbmArena(stream pb.KVTierService_AttachHbmArenaServer) error {
	ctx := stream.Context()
	if s.hbmArena == nil {
		return fmt.Errorf("%w: this daemon has no HBM tier", tiers.ErrUnavailable)
	}
	cred, err := localPeer(ctx, "the HBM arena", tiers.ErrUnavailable)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if err := validateName("client_name", first.GetClientName()); err != nil {
		return err
	}
	select {
	case <-s.stopping:
		return ErrShuttingDown
	default:
	}
	ex, err := s.hbmArena.AttachIPC(hbmLeaseTTL)
	if err != nil {
		return err
	}
	detached := false
	defer func() {
		// Without a detach the engine may still map the arena: its lease
		// stays until it lapses.
		if detached {
			_ = s.hbmArena.DetachIPC(ex.ID)
		}
	}()
	if err := stream.Send(&pb.AttachHbmArenaResponse{
		IpcHandle: ex.Handle[:], Offset: uint64(ex.Offset), ArenaBytes: uint64(ex.Size),
		LeaseTtlMs: uint32(hbmLeaseTTL.Milliseconds()),
	}); err != nil {
		return err
	}
	s.log.Info("daemon: HBM arena leased", "client", first.GetClientName(), "pid", cred.PID, "lease", ex.ID)

	// One reader per stream: whether the client detached, or why the
	// stream ended.
	type next struct {
		detach bool
		err    error
	}
	recv := make(chan next, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err == nil && !req.GetDetach() {
				continue
			}
			recv <- next{detach: err == nil, err: err}
			return
		}
	}()
	renew := time.NewTicker(hbmLeaseTTL / 3)
	defer renew.Stop()
	closing, stopping := s.hbmArena.Closing(), s.stopping
	notified := false
	notify := func() error {
		closing, stopping = nil, nil
		if notified {
			return nil
		}
		notified = true
		return stream.Send(&pb.AttachHbmArenaResponse{Closing: true})
	}
	for {
		select {
		case n := <-recv:
			switch {
			case n.detach:
				detached = true
				s.log.Info("daemon: HBM arena detached", "lease", ex.ID)
				return nil
			case errors.Is(n.err, io.EOF):
				return fmt.Errorf("%w: stream ended without detach; the lease lapses in %v", ErrNoLease, hbmLeaseTTL)
			}
			return n.err
		case <-renew.C:
			if err := s.hbmArena.RenewIPC(ex.ID, hbmLeaseTTL); err != nil {
				return err
			}
		case <-closing:
			if err := notify(); err != nil {
				return err
			}
		case <-stopping:
			if err := notify(); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
