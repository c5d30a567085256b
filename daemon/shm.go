package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers"
)

// The shared-memory data plane.
//
// A local client Attaches over the Unix socket: the daemon checks the
// peer's uid (SO_PEERCRED, read when the connection was made) and that its
// token allows every namespace, opens a session, and answers with a
// session id, the arena size, and a one-time token for the descriptor
// socket. The client connects there, writes the token, and receives the
// arena's memfd (SCM_RIGHTS) after the daemon has checked that the
// connecting process has the Attach caller's uid and pid.
//
// Puts are ReserveSlot → the client writes at the slot's offset →
// CommitSlot; gets are PinBlock → the client reads → Release. Each
// reservation and pin is a lease of the session: it expires after its ttl
// (the pin is released, the reservation aborted), and all of a session's
// leases go when its Attach stream ends, which is when the client closes
// it, cancels it, or dies (the kernel closes its socket).

const (
	sessionIDLen = 16
	fdTokenLen   = 32
	// fdTokenTTL is how long after Attach the descriptor may be fetched.
	fdTokenTTL = 10 * time.Second
	// fdHandshakeTimeout bounds one connection to the descriptor socket.
	fdHandshakeTimeout = 5 * time.Second
)

type leaseKind uint8

const (
	leasePin leaseKind = iota + 1
	leaseSlot
)

// lease is one pin or reservation held by a session.
type lease struct {
	id    uint64
	kind  leaseKind
	key   tiers.Key
	res   tiers.Reservation // leaseSlot only
	slot  tiers.Slot        // where the block is (pins) or goes (reservations)
	timer *time.Timer       // expires the lease
	size  int64
	// A PinBlocks lease holds several pins: key and slot are the first
	// one's, more the others' (shm_batch.go).
	more []pinned
}

// slotValidator is implemented by arenas that can tell whether a slot is
// still the live one at its offset with its generation (tiers/dram does).
type slotValidator interface {
	Validate(tiers.Slot) bool
}

// session is one Attach stream's shared-memory state.
type session struct {
	id      [sessionIDLen]byte
	cred    PeerCred
	name    string
	created time.Time

	mu      sync.Mutex        // protects the fields below
	leases  map[uint64]*lease // outstanding leases by id
	pending int               // leases being granted (counted against the limit)
	nextID  uint64
	closed  bool
	expired []uint64      // expired lease ids not yet reported on the stream
	notify  chan struct{} // cap 1: wakes the Attach stream to report expiries
}

// shmPlane owns the sessions and the descriptor socket.
type shmPlane struct {
	s *Server

	leases atomic.Int64 // outstanding leases over all sessions

	mu       sync.RWMutex // protects the fields below
	sessions map[[sessionIDLen]byte]*session
	byToken  map[[fdTokenLen]byte]*session
	fdLn     *net.UnixListener
	fdPath   string
}

func newShmPlane(s *Server) *shmPlane {
	return &shmPlane{
		s:        s,
		sessions: map[[sessionIDLen]byte]*session{},
		byToken:  map[[fdTokenLen]byte]*session{},
	}
}

// listen opens the descriptor socket and serves it until closeListener.
func (p *shmPlane) listen(path string) error {
	if !fdPassingSupported {
		p.s.log.Warn("daemon: shared memory needs Linux; only the inline data plane is served")
		return nil
	}
	ln, err := listenUnix(path, 0o600)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.fdLn, p.fdPath = ln, path
	p.mu.Unlock()
	go p.acceptFD(ln)
	return nil
}

func (p *shmPlane) closeListener() {
	p.mu.Lock()
	ln, path := p.fdLn, p.fdPath
	p.fdLn = nil
	p.mu.Unlock()
	if ln != nil {
		ln.Close()
		os.Remove(path)
	}
}

func (p *shmPlane) acceptFD(ln *net.UnixListener) {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.s.log.Error("daemon: descriptor socket", "err", err)
			}
			return
		}
		go p.handleFD(c)
	}
}

// handleFD checks one descriptor request and answers with the arena's fd.
func (p *shmPlane) handleFD(c *net.UnixConn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(fdHandshakeTimeout))
	var tok [fdTokenLen]byte
	if _, err := io.ReadFull(c, tok[:]); err != nil {
		return
	}
	cred, err := peerCred(c)
	if err != nil {
		p.s.log.Warn("daemon: descriptor socket: no peer credentials", "err", err)
		return
	}
	p.mu.Lock()
	sess := p.byToken[tok]
	delete(p.byToken, tok) // one use, whatever the outcome
	p.mu.Unlock()
	switch {
	case sess == nil:
		p.s.log.Warn("daemon: descriptor socket: unknown token", "pid", cred.PID, "uid", cred.UID)
		return
	case time.Since(sess.created) > fdTokenTTL:
		p.s.log.Warn("daemon: descriptor socket: token expired", "session", sess.name)
		return
	case cred.UID != sess.cred.UID || cred.PID != sess.cred.PID:
		p.s.log.Warn("daemon: descriptor socket: peer is not the Attach caller",
			"pid", cred.PID, "uid", cred.UID, "want_pid", sess.cred.PID, "want_uid", sess.cred.UID)
		return
	}
	if err := sendFD(c, p.s.arena.File()); err != nil {
		p.s.log.Warn("daemon: descriptor socket: sending the arena", "err", err)
	}
}

// counts returns the open sessions and outstanding leases.
func (p *shmPlane) counts() (uint32, uint32) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return uint32(len(p.sessions)), clampUint32(p.leases.Load())
}

func (p *shmPlane) addLeases(n int) { p.leases.Add(int64(n)) }

func (p *shmPlane) collector() prometheus.Collector { return shmCollector{p} }

type shmCollector struct{ p *shmPlane }

var (
	descSessions = prometheus.NewDesc("kvtier_shm_sessions", "Open shared-memory sessions.", nil, nil)
	descLeases   = prometheus.NewDesc("kvtier_shm_leases", "Outstanding shared-memory leases (pins and reservations).", nil, nil)
)

func (shmCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descSessions; ch <- descLeases }
func (c shmCollector) Collect(ch chan<- prometheus.Metric) {
	s, l := c.p.counts()
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(s))
	ch <- prometheus.MustNewConstMetric(descLeases, prometheus.GaugeValue, float64(l))
}

// Attach opens a session that lasts as long as the stream.
func (s *Server) Attach(req *pb.AttachRequest, stream pb.KVTierService_AttachServer) error {
	ctx := stream.Context()
	if err := validateName("client_name", req.GetClientName()); err != nil {
		return err
	}
	sess, tok, err := s.shm.open(ctx, req.GetClientName())
	if err != nil {
		return err
	}
	defer s.shm.closeSession(sess)
	p := s.shm
	p.mu.Lock()
	fdPath := p.fdPath
	p.mu.Unlock()
	first := &pb.AttachResponse{Session: &pb.AttachSession{
		SessionId:         sess.id[:],
		ArenaBytes:        uint64(s.arena.Size()),
		FdSocket:          fdPath,
		FdToken:           tok[:],
		DefaultLeaseTtlMs: uint32(s.cfg.LeaseTTL.Milliseconds()),
		MaxLeaseTtlMs:     uint32(s.cfg.MaxLeaseTTL.Milliseconds()),
		MaxLeases:         uint32(s.cfg.MaxLeases),
	}}
	if err := stream.Send(first); err != nil {
		return err
	}
	s.log.Info("daemon: shared-memory session opened", "client", sess.name, "pid", sess.cred.PID, "uid", sess.cred.UID)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stopping:
			return fmt.Errorf("%w: shared-memory session ended", ErrShuttingDown)
		case <-sess.notify:
			sess.mu.Lock()
			exp := sess.expired
			sess.expired = nil
			closed := sess.closed
			sess.mu.Unlock()
			if closed {
				return fmt.Errorf("%w: shared-memory session ended", ErrShuttingDown)
			}
			if len(exp) > 0 {
				if err := stream.Send(&pb.AttachResponse{ExpiredLeaseIds: exp}); err != nil {
					return err
				}
			}
		}
	}
}

// localPeer checks that the caller may map the daemon's memory (what: in
// messages): a peer on the Unix socket with the daemon's uid or root,
// whose token allows every namespace. unavailable is wrapped when the call
// did not come over the Unix socket.
func localPeer(ctx context.Context, what string, unavailable error) (PeerCred, error) {
	cred, ok := peerCredOf(ctx)
	if !ok {
		return cred, fmt.Errorf("%w: %s is only offered on the Unix socket", unavailable, what)
	}
	if uid := uint32(os.Geteuid()); cred.UID != uid && cred.UID != 0 {
		return cred, fmt.Errorf("%w: %s is for uid %d (the daemon's) or root; peer is uid %d", ErrPermissionDenied, what, uid, cred.UID)
	}
	if pr := principalOf(ctx); !pr.all {
		return cred, fmt.Errorf("%w: %s needs a token allowed every namespace; %q is not", ErrPermissionDenied, what, pr.name)
	}
	return cred, nil
}

// open checks that the caller may use shared memory and registers a session.
func (p *shmPlane) open(ctx context.Context, name string) (*session, [fdTokenLen]byte, error) {
	var tok [fdTokenLen]byte
	s := p.s
	if s.arena == nil {
		return nil, tok, fmt.Errorf("%w: this daemon has no shareable DRAM arena", ErrShmUnavailable)
	}
	cred, err := localPeer(ctx, "shared memory", ErrShmUnavailable)
	if err != nil {
		return nil, tok, err
	}
	select {
	case <-s.stopping:
		return nil, tok, ErrShuttingDown
	default:
	}
	sess := &session{cred: cred, name: name, created: time.Now(), leases: map[uint64]*lease{}, notify: make(chan struct{}, 1)}
	if _, err := rand.Read(sess.id[:]); err != nil {
		return nil, tok, err
	}
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, tok, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fdLn == nil {
		return nil, tok, fmt.Errorf("%w: the descriptor socket is not open", ErrShmUnavailable)
	}
	p.sessions[sess.id] = sess
	p.byToken[tok] = sess
	return sess, tok, nil
}

// closeSession ends a session: every pin is released, every reservation aborted.
func (p *shmPlane) closeSession(sess *session) {
	p.mu.Lock()
	delete(p.sessions, sess.id)
	for t, ss := range p.byToken {
		if ss == sess {
			delete(p.byToken, t)
		}
	}
	p.mu.Unlock()
	sess.mu.Lock()
	if sess.closed {
		sess.mu.Unlock()
		return
	}
	sess.closed = true
	leases := sess.leases
	sess.leases = nil
	sess.mu.Unlock()
	for _, l := range leases {
		l.timer.Stop()
		p.drop(l)
	}
	select {
	case sess.notify <- struct{}{}:
	default:
	}
	if len(leases) > 0 {
		p.s.log.Info("daemon: shared-memory session closed with leases outstanding; released them",
			"client", sess.name, "pid", sess.cred.PID, "leases", len(leases))
	}
}

// closeAll ends every session (shutdown).
func (p *shmPlane) closeAll() {
	p.mu.Lock()
	all := make([]*session, 0, len(p.sessions))
	for _, sess := range p.sessions {
		all = append(all, sess)
	}
	p.mu.Unlock()
	for _, sess := range all {
		p.closeSession(sess)
	}
}

// drop releases a pin or aborts a reservation that has left its session.
func (p *shmPlane) drop(l *lease) {
	p.addLeases(-1)
	var err error
	switch l.kind {
	case leasePin:
		err = p.s.store.Release(l.key)
		for _, m := range l.more {
			if e := p.s.store.Release(m.key); e != nil && err == nil {
				err = e
			}
		}
	case leaseSlot:
		err = p.s.store.Abort(l.res)
	}
	if err != nil && !errors.Is(err, tiers.ErrClosed) {
		p.s.log.Warn("daemon: dropping a lease", "key", l.key.String(), "err", err)
	}
}

// session finds the caller's session, checking that the call comes from the
// process that attached it.
func (p *shmPlane) session(ctx context.Context, id []byte) (*session, error) {
	if len(id) != sessionIDLen {
		return nil, fieldErr("session_id", "%d bytes, want %d", len(id), sessionIDLen)
	}
	cred, ok := peerCredOf(ctx)
	if !ok {
		return nil, fmt.Errorf("%w: shared memory is only offered on the Unix socket", ErrShmUnavailable)
	}
	p.mu.RLock()
	sess := p.sessions[[sessionIDLen]byte(id)]
	p.mu.RUnlock()
	if sess == nil {
		return nil, fmt.Errorf("%w: session_id", ErrNoSession)
	}
	if cred.UID != sess.cred.UID {
		return nil, fmt.Errorf("%w: the session belongs to another uid", ErrPermissionDenied)
	}
	return sess, nil
}

// reserve counts a lease about to be granted against the session's limit.
func (sess *session) reserve(max int) error {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.closed {
		return ErrNoSession
	}
	if len(sess.leases)+sess.pending >= max {
		return fmt.Errorf("%w: the session holds %d leases, the limit", ErrTooManyLeases, max)
	}
	sess.pending++
	return nil
}

// grant adds a lease whose store side (pin or reservation) is done. If the
// session closed meanwhile it returns false and the caller undoes it.
func (p *shmPlane) grant(sess *session, l *lease, ttl time.Duration) bool {
	sess.mu.Lock()
	sess.pending--
	if sess.closed {
		sess.mu.Unlock()
		return false
	}
	sess.nextID++
	l.id = sess.nextID
	sess.leases[l.id] = l
	id := l.id
	l.timer = time.AfterFunc(ttl, func() { p.expire(sess, id) })
	sess.mu.Unlock()
	p.addLeases(1)
	return true
}

func (sess *session) ungrant() {
	sess.mu.Lock()
	sess.pending--
	sess.mu.Unlock()
}

// take removes a lease from its session, for commit, abort or release.
func (sess *session) take(id uint64, kind leaseKind) (*lease, error) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	l := sess.leases[id]
	if l == nil {
		return nil, fmt.Errorf("%w: lease %d (expired, already used, or never granted)", ErrNoLease, id)
	}
	if l.kind != kind {
		if kind == leasePin {
			return nil, fmt.Errorf("%w: lease %d is a reservation: commit or abort it", ErrNoLease, id)
		}
		return nil, fmt.Errorf("%w: lease %d is a pin: release it", ErrNoLease, id)
	}
	delete(sess.leases, id)
	l.timer.Stop()
	return l, nil
}

// expire drops a lease whose ttl passed and tells the client.
func (p *shmPlane) expire(sess *session, id uint64) {
	sess.mu.Lock()
	l := sess.leases[id]
	if l == nil {
		sess.mu.Unlock()
		return
	}
	delete(sess.leases, id)
	sess.expired = append(sess.expired, id)
	sess.mu.Unlock()
	p.drop(l)
	select {
	case sess.notify <- struct{}{}:
	default:
	}
	p.s.log.Warn("daemon: shared-memory lease expired", "client", sess.name, "lease", id, "key", l.key.String())
}

func (s *Server) leaseTTL(field string, ms uint32) (time.Duration, error) {
	v, err := leaseTTL(field, ms, s.cfg.LeaseTTL.Milliseconds(), s.cfg.MaxLeaseTTL.Milliseconds())
	return time.Duration(v) * time.Millisecond, err
}

func slotToProto(sl tiers.Slot) *pb.ArenaSlot {
	return &pb.ArenaSlot{Offset: uint64(sl.Offset), Length: uint64(sl.Len), Generation: sl.Gen}
}

// ReserveSlot reserves room in the arena for a block the client writes.
func (s *Server) ReserveSlot(ctx context.Context, req *pb.ReserveSlotRequest) (*pb.ReserveSlotResponse, error) {
	sess, err := s.shm.session(ctx, req.GetSessionId())
	if err != nil {
		return nil, err
	}
	k, err := keyFromProto("key", req.GetKey())
	if err != nil {
		return nil, err
	}
	l, err := layoutFromProto("layout", req.GetLayout())
	if err != nil {
		return nil, err
	}
	ttl, err := s.leaseTTL("lease_ttl_ms", req.GetLeaseTtlMs())
	if err != nil {
		return nil, err
	}
	if req.GetSkipIfCached() {
		cached, err := s.store.Refresh(ctx, k, l, tiers.PutOptions{Durable: req.GetDurable()})
		if err != nil {
			return nil, err
		}
		if cached {
			return &pb.ReserveSlotResponse{AlreadyCached: true, BlockBytes: uint64(l.Size())}, nil
		}
	}
	if err := sess.reserve(s.cfg.MaxLeases); err != nil {
		return nil, err
	}
	res, err := s.store.Reserve(ctx, k, l)
	if err != nil {
		sess.ungrant()
		return nil, s.explainExhausted(err, 0)
	}
	ls := &lease{kind: leaseSlot, key: k, res: res, slot: res.Slot, size: l.Size()}
	if !s.shm.grant(sess, ls, ttl) {
		_ = s.store.Abort(res)
		return nil, ErrNoSession
	}
	return &pb.ReserveSlotResponse{LeaseId: ls.id, Slot: slotToProto(res.Slot), LeaseTtlMs: uint32(ttl.Milliseconds()), BlockBytes: uint64(l.Size())}, nil
}

// CommitSlot publishes a reserved block.
func (s *Server) CommitSlot(ctx context.Context, req *pb.CommitSlotRequest) (*pb.CommitSlotResponse, error) {
	sess, err := s.shm.session(ctx, req.GetSessionId())
	if err != nil {
		return nil, err
	}
	parent, err := parentFromBytes("parent_hash", req.GetParentHash())
	if err != nil {
		return nil, err
	}
	l, err := sess.take(req.GetLeaseId(), leaseSlot)
	if err != nil {
		return nil, err
	}
	s.shm.addLeases(-1)
	if err := s.store.Commit(ctx, l.res, tiers.PutOptions{Parent: parent, Durable: req.GetDurable()}); err != nil {
		return nil, err
	}
	s.metrics.shmIn.Add(float64(l.size))
	return &pb.CommitSlotResponse{}, nil
}

// AbortSlot drops a reservation.
func (s *Server) AbortSlot(ctx context.Context, req *pb.AbortSlotRequest) (*pb.AbortSlotResponse, error) {
	sess, err := s.shm.session(ctx, req.GetSessionId())
	if err != nil {
		return nil, err
	}
	l, err := sess.take(req.GetLeaseId(), leaseSlot)
	if err != nil {
		return nil, err
	}
	s.shm.drop(l)
	return &pb.AbortSlotResponse{}, nil
}

// PinBlock pins a block for the client to read in place.
func (s *Server) PinBlock(ctx context.Context, req *pb.PinBlockRequest) (*pb.PinBlockResponse, error) {
	sess, err := s.shm.session(ctx, req.GetSessionId())
	if err != nil {
		return nil, err
	}
	// Piggybacked releases come first, so they are applied whatever becomes
	// of the pin. They are best effort: a lease already gone (expired) has
	// been dropped anyway, and the client judged its read by the ttl.
	_, _ = s.release(sess, req.GetReleaseLeaseIds())
	k, err := keyFromProto("key", req.GetKey())
	if err != nil {
		return nil, err
	}
	promote, err := promoteFromProto("promote", req.GetPromote())
	if err != nil {
		return nil, err
	}
	ttl, err := s.leaseTTL("lease_ttl_ms", req.GetLeaseTtlMs())
	if err != nil {
		return nil, err
	}
	if err := sess.reserve(s.cfg.MaxLeases); err != nil {
		return nil, err
	}
	b, err := s.store.Get(ctx, k, tiers.GetOptions{Promote: promote})
	if err != nil {
		sess.ungrant()
		return nil, err
	}
	ls := &lease{kind: leasePin, key: k, slot: b.Slot, size: int64(len(b.Data))}
	if !s.shm.grant(sess, ls, ttl) {
		_ = s.store.Release(k)
		return nil, ErrNoSession
	}
	s.metrics.shmOut.Add(float64(ls.size))
	return &pb.PinBlockResponse{
		LeaseId: ls.id, Slot: slotToProto(b.Slot), Layout: layoutToProto(b.Layout),
		From: tierToProto(b.From), LeaseTtlMs: uint32(ttl.Milliseconds()),
	}, nil
}

// Release drops pin leases.
func (s *Server) Release(ctx context.Context, req *pb.ReleaseRequest) (*pb.ReleaseResponse, error) {
	sess, err := s.shm.session(ctx, req.GetSessionId())
	if err != nil {
		return nil, err
	}
	n, err := s.release(sess, req.GetLeaseIds())
	if err != nil {
		return nil, err
	}
	return &pb.ReleaseResponse{Released: uint32(n)}, nil
}

// release drops every known pin lease in ids and reports the first unknown
// one. Before dropping a pin it checks, where the arena can tell, that the
// slot still holds the block with the generation handed out: a pin keeps
// its slot from reuse, so a failure here is a bug, reported to the client
// as a lease it must not trust rather than as good data.
func (s *Server) release(sess *session, ids []uint64) (int, error) {
	var first error
	n := 0
	v, _ := s.arena.(slotValidator)
	for _, id := range ids {
		l, err := sess.take(id, leasePin)
		if err == nil && v != nil {
			err = validatePins(s, v, l)
		}
		if l != nil {
			s.shm.drop(l)
		}
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		n++
	}
	return n, first
}

// PinStream serves PinBlock requests on one stream, in order. A failed pin
// is answered in-band with its status code and message; the stream ends
// only when the client closes it or on a transport error.
func (s *Server) PinStream(stream pb.KVTierService_PinStreamServer) error {
	ctx := stream.Context()
	done := make(chan struct{})
	defer close(done)
	msgs := recvLoop(stream.Recv, done)
	var resp pb.PinStreamResponse
	for {
		req, rerr := nextMsg(msgs, s.stopping, "pin stream")
		if req == nil {
			return rerr
		}
		start := time.Now()
		resp.Reset()
		resp.Id = req.GetId()
		var err error
		if req.GetPin() == nil {
			err = fieldErr("pin", "required")
		} else {
			resp.Pin, err = s.PinBlock(ctx, req.GetPin())
		}
		code := codes.OK
		if err != nil {
			st := status.Convert(Status(err))
			code = st.Code()
			resp.Code, resp.Message = int32(code), st.Message()
			if code == codes.Internal || code == codes.DataLoss {
				s.log.Error("daemon: pin failed", "code", code.String(), "err", err)
			}
		}
		s.metrics.observe("PinStream.pin", code, time.Since(start))
		if err := stream.Send(&resp); err != nil {
			return err
		}
	}
}
