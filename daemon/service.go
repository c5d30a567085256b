package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/kvtier/kvtier/prefetch"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers"
)

// The inline data plane and the metadata calls. Handlers return plain
// errors; the interceptors turn them into statuses with Status.

var _ pb.KVTierServiceServer = (*Server)(nil)

// Put receives a block into a DRAM reservation and commits it only once the
// stream has ended with exactly the layout's byte count; anything else
// (error, cancellation, short or long data, no message for the stream idle
// timeout) aborts the reservation, so nothing half-written is ever
// visible. The chunks are copied straight from gRPC's receive buffers into
// the reservation (see putMsg). The reservations of the puts in flight are
// bounded per connection and per token (see putBudget).
//
// The messages are received on a pooled worker (see watchIdle), which owns
// the reservation until it hands its result back; when the stream went
// idle it aborts the reservation itself.
func (s *Server) Put(stream pb.KVTierService_PutServer) error {
	ctx := stream.Context()
	var (
		res     tiers.Reservation
		held    bool   // res is an outstanding reservation
		budget  func() // releases this put's share of the put budget
		durable bool   // header.durable
		k       tiers.Key
		l       tiers.Layout
		parent  tiers.Hash
		prog    *progress
	)
	// abort frees what the put holds; whoever owns the put calls it.
	abort := func() {
		if held {
			held = false
			_ = s.store.Abort(res)
		}
		if budget != nil {
			budget()
		}
	}
	m := putMsg{first: true}
	m.onHeader = func(h *pb.PutHeader) ([]byte, error) {
		prog.busy.Add(1) // waiting for room is the daemon's time, not the client's
		defer prog.busy.Add(-1)
		var err error
		if k, err = keyFromProto("header.key", h.GetKey()); err != nil {
			return nil, err
		}
		if l, err = layoutFromProto("header.layout", h.GetLayout()); err != nil {
			return nil, err
		}
		if parent, err = parentFromBytes("header.parent_hash", h.GetParentHash()); err != nil {
			return nil, err
		}
		if err := authorize(ctx, k.Namespace); err != nil {
			return nil, err
		}
		durable = h.GetDurable()
		// A block already cached needs no room: its bytes are read and
		// dropped, so a repeated put never evicts another block.
		cached, err := s.store.Refresh(ctx, k, l, tiers.PutOptions{Durable: durable})
		if err != nil {
			return nil, err
		}
		if cached {
			m.skip, m.want = true, int(l.Size())
			return nil, nil
		}
		if budget, err = s.puts.acquire(ctx, s.tokenName(ctx), l.Size()); err != nil {
			return nil, err
		}
		if res, err = s.store.Reserve(ctx, k, l); err != nil {
			return nil, s.explainExhausted(err, l.Size())
		}
		held = true
		return res.Data, nil
	}
	recv := func(p *progress) error {
		prog = p
		for {
			err := stream.RecvMsg(&m)
			p.step()
			if err == io.EOF {
				if m.first {
					return fieldErr("header", "required in the first message (the stream was empty)")
				}
				return nil
			}
			if err != nil {
				return err
			}
			if m.err != nil {
				return m.err
			}
		}
	}
	if err := s.watchIdle("put", recv, func(error) { abort() }); err != nil {
		if !errors.Is(err, ErrStreamIdle) {
			abort()
		}
		return err
	}
	defer abort()
	if err := ctx.Err(); err != nil {
		return err
	}
	size := l.Size()
	if int64(m.n) != size {
		return fieldErr("data", "%d bytes received, header.layout describes %d", m.n, size)
	}
	if !m.skip {
		held = false // Commit consumes the reservation, even when it fails.
		if err := s.store.Commit(ctx, res, tiers.PutOptions{Parent: parent, Durable: durable}); err != nil {
			return err
		}
	}
	s.metrics.inlineIn.Add(float64(size))
	return stream.SendAndClose(&pb.PutResponse{Bytes: uint64(size)})
}

// tokenName names the caller's token for the per-token put budget; "" when
// tokens are off (every caller is then the same anonymous principal).
func (s *Server) tokenName(ctx context.Context) string {
	if s.auth == nil {
		return ""
	}
	return principalOf(ctx).name
}

// Get pins the block and streams its bytes straight from the DRAM arena in
// chunks; the pin is released when the stream ends, however it ends. A
// block of one chunk is sent by the handler (a stream's first message never
// waits for flow control); a longer one on a pooled worker, so that a
// client that stops reading for the stream idle timeout loses the pin and
// gets DEADLINE_EXCEEDED (see watchIdle).
func (s *Server) Get(req *pb.GetRequest, stream pb.KVTierService_GetServer) error {
	ctx := stream.Context()
	k, err := keyFromProto("key", req.GetKey())
	if err != nil {
		return err
	}
	promote, err := promoteFromProto("promote", req.GetPromote())
	if err != nil {
		return err
	}
	chunk := int(req.GetChunkBytes())
	switch {
	case chunk == 0:
		chunk = MaxChunkBytes
	case chunk > MaxChunkBytes:
		return fieldErr("chunk_bytes", "%d exceeds %d", chunk, MaxChunkBytes)
	}
	if err := authorize(ctx, k.Namespace); err != nil {
		return err
	}
	b, err := s.store.Get(ctx, k, tiers.GetOptions{Promote: promote})
	if err != nil {
		return err
	}
	// send streams the block and releases the pin; p is nil when unwatched.
	send := func(p *progress) error {
		defer func() {
			if err := s.store.Release(k); err != nil {
				s.log.Error("daemon: releasing a Get pin", "key", k.String(), "err", err)
			}
		}()
		// SendMsg serializes the message before it returns, so each chunk
		// can point into the pinned view: no copy into a Go buffer here.
		msg := &pb.GetResponse{
			Layout:     layoutToProto(b.Layout),
			From:       tierToProto(b.From),
			TotalBytes: uint64(len(b.Data)),
		}
		for off := 0; off < len(b.Data); off += chunk {
			msg.Data = b.Data[off:min(off+chunk, len(b.Data))]
			if err := stream.Send(msg); err != nil {
				return err
			}
			if p != nil {
				p.step()
			}
			msg.Layout, msg.From, msg.TotalBytes = nil, 0, 0
		}
		return nil
	}
	if len(b.Data) <= chunk {
		err = send(nil)
	} else {
		err = s.watchIdle("get", send, func(error) {})
	}
	if err != nil {
		return err
	}
	s.metrics.inlineOut.Add(float64(len(b.Data)))
	return nil
}

// lookupBufs are Lookup's scratch slices, pooled so that long chains cost
// no allocation beyond the response.
type lookupBufs struct {
	hashes []tiers.Hash
	levels []tiers.Level
}

// Lookup finds the longest cached prefix of a chain. A chain in
// packed_hashes, the form long chains come in, is looked up in place
// (tiers.Store.LookupPacked); the other forms are turned into hashes first.
func (s *Server) Lookup(ctx context.Context, req *pb.LookupRequest) (*pb.LookupResponse, error) {
	if err := validateNamespace("namespace", req.GetNamespace()); err != nil {
		return nil, err
	}
	layer, err := validateLayer("layer", req.GetLayer())
	if err != nil {
		return nil, err
	}
	if err := authorize(ctx, req.GetNamespace()); err != nil {
		return nil, err
	}
	bufs, _ := s.lookupPool.Get().(*lookupBufs)
	if bufs == nil {
		bufs = &lookupBufs{}
	}
	defer s.lookupPool.Put(bufs)
	spec := chainSpec{
		hashes: req.GetHashes(), packed: req.GetPackedHashes(), hashSize: req.GetHashSize(),
		tokens: req.GetTokenIds(), params: req.GetHashParams(), hasPacked: true,
	}
	var (
		hashes []tiers.Hash
		total  int
		n      int
	)
	if len(spec.packed) > 0 && len(spec.hashes) == 0 && len(spec.tokens) == 0 {
		if total, err = packedBlocks(spec); err != nil {
			return nil, err
		}
		n, err = s.store.LookupPacked(ctx, req.GetNamespace(), layer, spec.packed, int(spec.hashSize), bufs.levelsFor(total))
	} else {
		hashes, err = appendChain(bufs.hashes[:0], spec)
		bufs.hashes = hashes[:0]
		if err != nil {
			return nil, err
		}
		total = len(hashes)
		n, err = s.store.Lookup(ctx, req.GetNamespace(), layer, hashes, bufs.levelsFor(total))
	}
	if err != nil {
		return nil, err
	}
	resp := &pb.LookupResponse{
		CachedBlocks: uint32(n),
		TotalBlocks:  uint32(total),
		Tiers:        getTiers(n), // back to the pool once encoded
	}
	for i, l := range bufs.levels[:n] {
		resp.Tiers[i] = tierToProto(l)
	}
	if len(req.GetTokenIds()) > 0 && req.GetReturnHashes() {
		resp.Hashes = make([][]byte, len(hashes))
		for i, h := range hashes {
			resp.Hashes[i] = h.Bytes()
		}
	}
	return resp, nil
}

// levelsFor returns the levels buffer with room for n blocks.
func (b *lookupBufs) levelsFor(n int) []tiers.Level {
	if cap(b.levels) < n {
		b.levels = make([]tiers.Level, n)
	}
	b.levels = b.levels[:n]
	return b.levels
}

// Delete removes a block.
func (s *Server) Delete(ctx context.Context, req *pb.DeleteRequest) (*pb.DeleteResponse, error) {
	k, err := keyFromProto("key", req.GetKey())
	if err != nil {
		return nil, err
	}
	if err := authorize(ctx, k.Namespace); err != nil {
		return nil, err
	}
	if err := s.store.Delete(ctx, k); err != nil {
		return nil, err
	}
	return &pb.DeleteResponse{}, nil
}

// Stats reports the store's accounting. Any authenticated caller may ask.
func (s *Server) Stats(context.Context, *pb.StatsRequest) (*pb.StatsResponse, error) {
	st := s.store.Stats()
	resp := &pb.StatsResponse{
		IndexedBlocks:    uint64(max(st.IndexedBlocks, 0)),
		PinnedBlocks:     uint64(max(st.PinnedBlocks, 0)),
		Misses:           uint64(max(st.Misses, 0)),
		Corrupt:          uint64(max(st.Corrupt, 0)),
		Demotions:        uint64(max(st.Demotions, 0)),
		WriteBehindQueue: uint64(max(st.WriteBehindWait, 0)),
	}
	for _, l := range st.Levels {
		resp.Tiers = append(resp.Tiers, &pb.TierStats{
			Tier:          tierToProto(l.Level),
			Name:          l.Name,
			CapacityBytes: uint64(max(l.CapacityBytes, 0)),
			UsedBytes:     uint64(max(l.UsedBytes, 0)),
			ReservedBytes: uint64(max(l.ReservedBytes, 0)),
			Blocks:        uint64(max(l.Blocks, 0)),
			Corrupt:       uint64(max(l.Corrupt, 0)),
			Hits:          uint64(max(l.Hits, 0)),
			Evictions:     uint64(max(l.Evictions, 0)),
			Promotions:    uint64(max(l.Promotions, 0)),
			LogicalBytes:  uint64(max(l.LogicalBytes, 0)),
			WritesStopped: l.WritesStopped,
			FreeBytes:     uint64(max(l.FreeBytes, 0)),
			Quarantined:   uint64(max(l.Quarantined, 0)),
		})
	}
	resp.Sessions, resp.Leases = s.shm.counts()
	resp.Gpus, resp.GpuTelemetryError = s.gpuStats()
	return resp, nil
}

// maxHintRequests bounds the request ids one Hint stream may have open.
const maxHintRequests = 1 << 16

// Hint passes engine hints to the prefetcher. Request ids are scoped to
// the stream: a layer_attention or request_finished hint must name a
// request announced on the same stream, whose namespace the caller was
// allowed to use.
func (s *Server) Hint(stream pb.KVTierService_HintServer) error {
	ctx := stream.Context()
	open := map[string]string{} // request id → namespace
	defer func() {
		// A dropped stream finishes its requests: their staging stops.
		for id, ns := range open {
			_ = s.hints.RequestFinished(context.WithoutCancel(ctx), prefetch.RequestFinished{RequestID: id, Namespace: ns})
		}
	}()
	done := make(chan struct{})
	defer close(done)
	msgs := recvLoop(stream.Recv, done)
	for {
		req, rerr := nextMsg(msgs, s.stopping, "hint stream")
		if req == nil {
			return rerr
		}
		var kind string
		scheduled, err := 0, error(nil)
		switch h := req.GetHint().(type) {
		case *pb.HintRequest_RequestArrived:
			kind = "request_arrived"
			var ra prefetch.RequestArrived
			ra, err = requestArrivedFromProto(h.RequestArrived)
			if err == nil {
				err = authorize(ctx, ra.Namespace)
			}
			if err == nil && len(open) >= maxHintRequests {
				err = fmt.Errorf("%w: %d requests open on this hint stream", tiers.ErrExhausted, len(open))
			}
			if err == nil {
				if scheduled, err = s.hints.RequestArrived(ctx, ra); err == nil {
					open[ra.RequestID] = ra.Namespace
				}
			}
		case *pb.HintRequest_LayerAttention:
			kind = "layer_attention"
			la := h.LayerAttention
			ns, ok := open[la.GetRequestId()]
			switch {
			case !ok:
				err = fieldErr("layer_attention.request_id", "%q was not announced on this stream", la.GetRequestId())
			case len(la.GetBlockIndexes()) != len(la.GetScores()):
				err = fieldErr("layer_attention.scores", "%d scores for %d block_indexes", len(la.GetScores()), len(la.GetBlockIndexes()))
			default:
				var layer int16
				if layer, err = validateLayer("layer_attention.layer", la.GetLayer()); err == nil {
					scheduled, err = s.hints.LayerAttention(ctx, prefetch.LayerAttention{
						RequestID: la.GetRequestId(), Namespace: ns, Layer: layer, Step: la.GetStep(),
						BlockIndexes: la.GetBlockIndexes(), Scores: la.GetScores(),
					})
				}
			}
		case *pb.HintRequest_LayerQuery:
			kind = "layer_query"
			scheduled, err = s.layerQuery(ctx, h.LayerQuery, open)
		case *pb.HintRequest_RequestFinished:
			kind = "request_finished"
			id := h.RequestFinished.GetRequestId()
			ns, ok := open[id]
			if !ok {
				err = fieldErr("request_finished.request_id", "%q was not announced on this stream", id)
			} else {
				delete(open, id)
				err = s.hints.RequestFinished(ctx, prefetch.RequestFinished{RequestID: id, Namespace: ns})
			}
		default:
			kind = "none"
			err = fieldErr("hint", "required")
		}
		result := "ok"
		switch {
		case errors.Is(err, errors.ErrUnsupported):
			result = "unimplemented"
		case err != nil:
			result = "error"
		}
		s.metrics.hints.WithLabelValues(kind, result).Inc()
		if err != nil {
			return err
		}
		if req.GetAck() {
			if err := stream.Send(&pb.HintResponse{Id: req.GetId(), BlocksScheduled: clampUint32(int64(scheduled))}); err != nil {
				return err
			}
		}
	}
}

func requestArrivedFromProto(h *pb.RequestArrivedHint) (prefetch.RequestArrived, error) {
	var ra prefetch.RequestArrived
	if h.GetRequestId() == "" {
		return ra, fieldErr("request_arrived.request_id", "required")
	}
	if err := validateName("request_arrived.request_id", h.GetRequestId()); err != nil {
		return ra, err
	}
	if err := validateNamespace("request_arrived.namespace", h.GetNamespace()); err != nil {
		return ra, err
	}
	layer, err := validateLayer("request_arrived.layer", h.GetLayer())
	if err != nil {
		return ra, err
	}
	target := tiers.LevelDRAM
	switch h.GetTarget() {
	case pb.Tier_TIER_UNSPECIFIED, pb.Tier_TIER_DRAM:
	case pb.Tier_TIER_HBM:
		target = tiers.LevelHBM
	default:
		return ra, fieldErr("request_arrived.target", "want TIER_HBM or TIER_DRAM, got %v", h.GetTarget())
	}
	hashes, err := appendChain(nil, chainSpec{hashes: h.GetHashes(), tokens: h.GetTokenIds(), params: h.GetHashParams()})
	if err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			fe.Field = "request_arrived." + fe.Field
		}
		return ra, err
	}
	return prefetch.RequestArrived{RequestID: h.GetRequestId(), Namespace: h.GetNamespace(), Layer: layer, Hashes: hashes, Target: target}, nil
}
