package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvtier/kvtier/internal/ntcopy"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// ErrShmClosed is returned by calls on a closed or ended shared-memory session.
var ErrShmClosed = errors.New("client: shared-memory session closed")

const (
	// releaseBatch is how many deferred releases ride on one PinBlock.
	releaseBatch = 64
	// releaseDelay is how long a deferred release waits for a PinBlock to
	// carry it before it is sent on its own.
	releaseDelay = 2 * time.Millisecond
)

// Shm is a shared-memory session: the daemon's DRAM arena mapped into this
// process. Safe for concurrent use. Close it to release everything it holds.
type Shm struct {
	c      *Client
	id     []byte
	mem    []byte // the arena mapping; unmapped by Close
	sess   *pb.AttachSession
	ctx    context.Context // the session's lifetime: cancelled by Close
	cancel context.CancelFunc
	done   chan struct{} // closed when the Attach stream ends

	pinMu    sync.Mutex  // protects ps and noStream
	ps       *pinStream  // nil until the first pin, or after the stream broke
	noStream bool        // the daemon has no PinStream: pin with unary calls
	noBatch  atomic.Bool // the daemon has no PinBlocks: GetBatch uses the pin stream
	nextPin  atomic.Uint64

	mu           sync.Mutex // protects the fields below
	closed       bool       // no new calls: Close was called or the session ended
	unmapped     bool       // Close has run
	endErr       error      // why the Attach stream ended
	pending      []uint64   // pin leases whose release is deferred
	pendingSince time.Time  // when pending last became non-empty
	flushing     bool       // a delayed flush is scheduled
	expired      int        // leases the daemon reported expired
	flushErr     error      // the last deferred release's error, reported by Flush
}

// Attach opens a shared-memory session (Unix socket only). name shows in
// the daemon's logs.
func (c *Client) Attach(ctx context.Context, name string) (*Shm, error) {
	if !c.unix {
		return nil, status.Error(codes.FailedPrecondition, "client: shared memory needs the Unix socket")
	}
	sctx, cancel := context.WithCancel(context.Background())
	st, err := c.api.Attach(sctx, &pb.AttachRequest{ClientName: name})
	if err != nil {
		cancel()
		return nil, err
	}
	first, err := recvCtx(ctx, st.Recv)
	if err != nil {
		cancel()
		return nil, err
	}
	sess := first.GetSession()
	if sess == nil || len(sess.GetSessionId()) == 0 {
		cancel()
		return nil, status.Error(codes.Internal, "client: Attach answered without a session")
	}
	mem, err := mapArena(ctx, sess.GetFdSocket(), sess.GetFdToken(), sess.GetArenaBytes())
	if err != nil {
		cancel()
		return nil, fmt.Errorf("client: mapping the arena: %w", err)
	}
	s := &Shm{c: c, id: sess.GetSessionId(), mem: mem, sess: sess, ctx: sctx, cancel: cancel, done: make(chan struct{})}
	go s.watch(st)
	return s, nil
}

// recvCtx waits for one stream message or ctx.
func recvCtx(ctx context.Context, recv func() (*pb.AttachResponse, error)) (*pb.AttachResponse, error) {
	type r struct {
		m   *pb.AttachResponse
		err error
	}
	ch := make(chan r, 1)
	go func() { m, err := recv(); ch <- r{m, err} }()
	select {
	case x := <-ch:
		return x.m, x.err
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// watch reads the Attach stream: lease expiries, and its end.
func (s *Shm) watch(st pb.KVTierService_AttachClient) {
	defer close(s.done)
	for {
		m, err := st.Recv()
		if err != nil {
			s.mu.Lock()
			s.closed = true
			if err == io.EOF {
				err = ErrShmClosed
			}
			s.endErr = err
			s.mu.Unlock()
			return
		}
		s.mu.Lock()
		s.expired += len(m.GetExpiredLeaseIds())
		s.mu.Unlock()
	}
}

// Session describes the session (arena size, lease limits).
func (s *Shm) Session() *pb.AttachSession { return s.sess }

// Expired returns how many leases the daemon has reported expired.
func (s *Shm) Expired() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expired
}

func (s *Shm) check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		if s.endErr != nil && s.endErr != ErrShmClosed {
			return fmt.Errorf("%w: %v", ErrShmClosed, s.endErr)
		}
		return ErrShmClosed
	}
	return nil
}

// view returns the mapping's bytes at a slot, checking the bounds.
func (s *Shm) view(sl *pb.ArenaSlot) ([]byte, error) {
	off, n := sl.GetOffset(), sl.GetLength()
	if off > uint64(len(s.mem)) || n > uint64(len(s.mem))-off {
		return nil, status.Errorf(codes.Internal, "client: slot [%d, +%d) outside the %d-byte arena", off, n, len(s.mem))
	}
	return s.mem[off : off+n : off+n], nil
}

// Reservation is room in the arena for a block being written in place.
type Reservation struct {
	s       *Shm
	leaseID uint64
	// Data is the reserved region: write exactly len(Data) bytes, then Commit.
	Data []byte
	// Slot is where Data lives in the arena.
	Slot *pb.ArenaSlot
}

// Reserve reserves room for a block of layout l under key.
func (s *Shm) Reserve(ctx context.Context, key *pb.Key, l *pb.Layout) (*Reservation, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	resp, err := s.c.api.ReserveSlot(ctx, &pb.ReserveSlotRequest{SessionId: s.id, Key: key, Layout: l})
	if err != nil {
		return nil, err
	}
	return s.reservation(resp)
}

func (s *Shm) reservation(resp *pb.ReserveSlotResponse) (*Reservation, error) {
	v, err := s.view(resp.GetSlot())
	if err != nil {
		return nil, err
	}
	return &Reservation{s: s, leaseID: resp.GetLeaseId(), Data: v, Slot: resp.GetSlot()}, nil
}

// LeaseID returns the reservation's lease.
func (r *Reservation) LeaseID() uint64 { return r.leaseID }

// Commit publishes the block written into Data.
func (r *Reservation) Commit(ctx context.Context, opts PutOptions) error {
	_, err := r.s.c.api.CommitSlot(ctx, &pb.CommitSlotRequest{
		SessionId: r.s.id, LeaseId: r.leaseID, ParentHash: opts.Parent, Durable: opts.Durable,
	})
	r.Data = nil
	return err
}

// Abort drops the reservation.
func (r *Reservation) Abort(ctx context.Context) error {
	_, err := r.s.c.api.AbortSlot(ctx, &pb.AbortSlotRequest{SessionId: r.s.id, LeaseId: r.leaseID})
	r.Data = nil
	return err
}

// Put stores data through shared memory: reserve, copy, commit. A block
// the daemon already holds with this layout is only refreshed (and synced
// to NVMe when opts.Durable): there is nothing to copy.
func (s *Shm) Put(ctx context.Context, key *pb.Key, l *pb.Layout, data []byte, opts PutOptions) error {
	if err := s.check(); err != nil {
		return err
	}
	resp, err := s.c.api.ReserveSlot(ctx, &pb.ReserveSlotRequest{
		SessionId: s.id, Key: key, Layout: l, SkipIfCached: true, Durable: opts.Durable,
	})
	if err != nil {
		return err
	}
	if resp.GetAlreadyCached() {
		if uint64(len(data)) != resp.GetBlockBytes() {
			return status.Errorf(codes.InvalidArgument, "client: %d bytes given, the layout needs %d", len(data), resp.GetBlockBytes())
		}
		return nil
	}
	r, err := s.reservation(resp)
	if err != nil {
		return err
	}
	if len(data) != len(r.Data) {
		aerr := r.Abort(ctx)
		return errors.Join(status.Errorf(codes.InvalidArgument,
			"client: %d bytes given, the layout needs %d", len(data), len(r.Data)), aerr)
	}
	ntcopy.Copy(r.Data, data) // straight to memory: the daemon, not this process, reads it next
	return r.Commit(ctx, opts)
}

// Pinned is a block pinned in the arena.
type Pinned struct {
	s       *Shm
	leaseID uint64
	// Data is the block's bytes in the arena: read-only, valid until Release.
	Data   []byte
	Layout *pb.Layout
	From   pb.Tier
	Slot   *pb.ArenaSlot
	// Deadline is when the lease expires at the earliest.
	Deadline time.Time
}

// LeaseID returns the pin's lease.
func (p *Pinned) LeaseID() uint64 { return p.leaseID }

// Pin pins a block and returns its bytes in place.
func (s *Shm) Pin(ctx context.Context, key *pb.Key, opts GetOptions) (*Pinned, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	start := time.Now()
	rel := s.takePending()
	resp, err := s.pinBlock(ctx, &pb.PinBlockRequest{
		SessionId: s.id, Key: key, Promote: opts.Promote, ReleaseLeaseIds: rel,
	})
	if err != nil {
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown, codes.Internal:
			// The daemon may not have seen the releases: send them again
			// (releasing twice is harmless).
			s.deferRelease(rel...)
		}
		return nil, err
	}
	v, err := s.view(resp.GetSlot())
	if err != nil {
		s.deferRelease(resp.GetLeaseId())
		return nil, err
	}
	ttl := time.Duration(resp.GetLeaseTtlMs()) * time.Millisecond
	return &Pinned{
		s: s, leaseID: resp.GetLeaseId(), Data: v, Layout: resp.GetLayout(), From: resp.GetFrom(),
		Slot: resp.GetSlot(), Deadline: start.Add(ttl),
	}, nil
}

// Release drops the pin now and confirms it was still held: after a nil
// error, what was read from Data is the block's.
func (p *Pinned) Release(ctx context.Context) error {
	p.Data = nil
	_, err := p.s.c.api.Release(ctx, &pb.ReleaseRequest{SessionId: p.s.id, LeaseIds: []uint64{p.leaseID}})
	return err
}

// safetyMargin is how much of a lease's lifetime Get keeps in reserve when
// trusting a copy without a synchronous release.
func safetyMargin(ttl time.Duration) time.Duration { return ttl / 4 }

// Get copies a block out of the arena into dst[:0] (grown as needed).
func (s *Shm) Get(ctx context.Context, key *pb.Key, dst []byte, opts GetOptions) (Block, error) {
	p, err := s.Pin(ctx, key, opts)
	if err != nil {
		return Block{}, err
	}
	if cap(dst) < len(p.Data) {
		dst = make([]byte, len(p.Data))
	}
	dst = dst[:len(p.Data)]
	copy(dst, p.Data)
	b := Block{Layout: p.Layout, From: p.From, Data: dst}
	ttl := time.Duration(0)
	if d := time.Until(p.Deadline); d > 0 {
		ttl = d
	}
	if ttl > safetyMargin(time.Duration(s.sess.GetDefaultLeaseTtlMs())*time.Millisecond) {
		// The lease was certainly held during the copy: release it later.
		s.deferRelease(p.leaseID)
		return b, nil
	}
	if err := p.Release(ctx); err != nil {
		return Block{}, fmt.Errorf("client: the pin may have expired during the copy: %w", err)
	}
	return b, nil
}

// deferRelease queues pin releases for the next PinBlock, or for a flush
// once the oldest has waited releaseDelay.
func (s *Shm) deferRelease(ids ...uint64) {
	if len(ids) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 {
		s.pendingSince = time.Now()
	}
	s.pending = append(s.pending, ids...)
	if !s.flushing && !s.closed {
		s.flushing = true
		time.AfterFunc(releaseDelay, s.flushLater)
	}
}

// flushLater runs on a timer: it sends the deferred releases if the oldest
// has waited releaseDelay (no PinBlock carried it), else waits some more.
func (s *Shm) flushLater() {
	s.mu.Lock()
	if len(s.pending) == 0 || s.closed {
		s.flushing = false
		s.mu.Unlock()
		return
	}
	if wait := releaseDelay - time.Since(s.pendingSince); wait > 0 {
		time.AfterFunc(wait, s.flushLater)
		s.mu.Unlock()
		return
	}
	s.flushing = false
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.flush(ctx)
}

func (s *Shm) flush(ctx context.Context) error {
	s.mu.Lock()
	ids := s.pending
	s.pending = nil
	closed := s.closed
	s.mu.Unlock()
	if len(ids) == 0 || closed {
		return nil
	}
	_, err := s.c.api.Release(ctx, &pb.ReleaseRequest{SessionId: s.id, LeaseIds: ids})
	if err != nil && status.Code(err) != codes.FailedPrecondition {
		s.mu.Lock()
		s.flushErr = err
		s.mu.Unlock()
	}
	return err
}

// Flush sends every deferred release now.
func (s *Shm) Flush(ctx context.Context) error {
	err := s.flush(ctx)
	s.mu.Lock()
	ferr := s.flushErr
	s.flushErr = nil
	s.mu.Unlock()
	if err == nil {
		err = ferr
	}
	return err
}

// Close releases deferred pins, ends the session (the daemon then drops
// every lease it still holds) and unmaps the arena. Call it once, after
// every other call on the Shm has returned; views into the arena
// (Pinned.Data, Reservation.Data) must not be used afterwards.
func (s *Shm) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.flush(ctx)
	if status.Code(err) == codes.FailedPrecondition || errors.Is(err, ErrShmClosed) {
		err = nil
	}
	s.mu.Lock()
	if s.unmapped {
		s.mu.Unlock()
		return ErrShmClosed
	}
	s.closed, s.unmapped = true, true
	s.mu.Unlock()
	s.cancel()
	<-s.done
	return errors.Join(err, unmapArena(s.mem))
}

// pinStream is a PinStream call shared by the pins of one Shm: requests are
// sent under sendMu, and a dispatcher goroutine hands each response to the
// caller waiting for its id.
type pinStream struct {
	st     pb.KVTierService_PinStreamClient
	sendMu sync.Mutex // serializes Send

	mu      sync.Mutex // protects waiters and broken
	waiters map[uint64]chan pinResult
	broken  error // set once the stream failed
}

type pinResult struct {
	resp *pb.PinBlockResponse
	err  error
}

var errStreamEnded = status.Error(codes.Unavailable, "client: the pin stream ended")

// stream returns the Shm's pin stream, opening it if needed; nil when the
// daemon does not offer one.
func (s *Shm) stream() (*pinStream, error) {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	if s.noStream {
		return nil, nil
	}
	if s.ps != nil {
		s.ps.mu.Lock()
		broken := s.ps.broken
		s.ps.mu.Unlock()
		if broken == nil {
			return s.ps, nil
		}
	}
	st, err := s.c.api.PinStream(s.ctx)
	if err != nil {
		return nil, err
	}
	ps := &pinStream{st: st, waiters: map[uint64]chan pinResult{}}
	s.ps = ps
	go s.dispatch(ps)
	return ps, nil
}

// dispatch delivers the stream's responses to their callers.
func (s *Shm) dispatch(ps *pinStream) {
	for {
		m, err := ps.st.Recv()
		if err != nil {
			if err == io.EOF {
				err = errStreamEnded
			}
			ps.mu.Lock()
			ps.broken = err
			ws := ps.waiters
			ps.waiters = nil
			ps.mu.Unlock()
			for _, ch := range ws {
				ch <- pinResult{err: err}
			}
			return
		}
		ps.mu.Lock()
		ch := ps.waiters[m.GetId()]
		delete(ps.waiters, m.GetId())
		ps.mu.Unlock()
		r := pinResult{resp: m.GetPin()}
		if m.GetCode() != 0 {
			r = pinResult{err: status.Error(codes.Code(m.GetCode()), m.GetMessage())}
		}
		switch {
		case ch != nil:
			ch <- r
		case r.resp != nil:
			// Its caller gave up waiting: let the pin go.
			s.deferRelease(r.resp.GetLeaseId())
		}
	}
}

// pinBlock pins through the Shm's PinStream, or with a unary PinBlock when
// the daemon has no PinStream.
func (s *Shm) pinBlock(ctx context.Context, req *pb.PinBlockRequest) (*pb.PinBlockResponse, error) {
	ps, err := s.stream()
	if err != nil {
		return nil, err
	}
	if ps == nil {
		return s.c.api.PinBlock(ctx, req)
	}
	resp, err := ps.pin(ctx, s.nextPin.Add(1), req)
	if status.Code(err) == codes.Unimplemented && resp == nil {
		// An older daemon: pin with unary calls from now on.
		s.pinMu.Lock()
		s.noStream = true
		s.pinMu.Unlock()
		return s.c.api.PinBlock(ctx, req)
	}
	return resp, err
}

func (ps *pinStream) pin(ctx context.Context, id uint64, req *pb.PinBlockRequest) (*pb.PinBlockResponse, error) {
	ch, err := ps.send(id, req)
	if err != nil {
		return nil, err
	}
	// On io.EOF the stream ended: the dispatcher answers with the reason.
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-ctx.Done():
		ps.forget([]uint64{id})
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}
