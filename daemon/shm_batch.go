package daemon

import (
	"context"
	"fmt"

	"google.golang.org/grpc/status"

	"github.com/kvtier/kvtier/codec"
	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
	"github.com/kvtier/kvtier/tiers"
)

// MaxPinBlocksKeys is the most keys one PinBlocks call may name.
const MaxPinBlocksKeys = 4096

// pinned is one pin of a PinBlocks lease beyond its first.
type pinned struct {
	key  tiers.Key
	slot tiers.Slot
}

// pinBlocksArgs is a validated PinBlocksRequest (less the session).
type pinBlocksArgs struct {
	keys    []tiers.Key
	promote tiers.Level
}

// validatePinBlocks checks a PinBlocks request's keys and options; every
// error is a *FieldError naming the field.
func validatePinBlocks(req *pb.PinBlocksRequest) (pinBlocksArgs, error) {
	var a pinBlocksArgs
	ks := req.GetKeys()
	switch {
	case len(ks) == 0:
		return a, fieldErr("keys", "at least one key is required")
	case len(ks) > MaxPinBlocksKeys:
		return a, fieldErr("keys", "%d keys, at most %d per call", len(ks), MaxPinBlocksKeys)
	}
	var err error
	if a.promote, err = promoteFromProto("promote", req.GetPromote()); err != nil {
		return a, err
	}
	a.keys = make([]tiers.Key, len(ks))
	for i, k := range ks {
		if a.keys[i], err = batchKey(i, k); err != nil {
			return a, err
		}
	}
	return a, nil
}

// batchKey is keyFromProto for keys[i] without building the field's name
// (three strings per key) unless the key is invalid.
func batchKey(i int, k *pb.Key) (tiers.Key, error) {
	if k != nil && tiers.NamespaceProblem(k.GetNamespace()) == "" &&
		(len(k.GetHash()) == 16 || len(k.GetHash()) == 32) &&
		k.GetLayer() >= tiers.AllLayers && k.GetLayer() <= tiers.MaxLayer {
		if h, err := tiers.HashFromBytes(k.GetHash()); err == nil {
			return tiers.Key{Namespace: k.GetNamespace(), Hash: h, Layer: int16(k.GetLayer())}, nil
		}
	}
	return keyFromProto(fmt.Sprintf("keys[%d]", i), k)
}

// validatePins checks, before a pin lease is dropped, that every slot it
// holds is still the live one: a pin keeps its slot from reuse, so a
// failure is a bug, reported as a lease the client must not trust.
func validatePins(s *Server, v slotValidator, l *lease) error {
	bad := func(key tiers.Key, sl tiers.Slot) error {
		s.log.Error("daemon: a pinned slot changed under its lease", "key", key.String(), "slot", sl)
		return fmt.Errorf("%w: lease %d: the slot of %s was reused (generation %d)", ErrNoLease, l.id, key, sl.Gen)
	}
	if !v.Validate(l.slot) {
		return bad(l.key, l.slot)
	}
	for _, m := range l.more {
		if !v.Validate(m.slot) {
			return bad(m.key, m.slot)
		}
	}
	return nil
}

// PinBlocks pins many blocks under one lease, answering each key with its
// slot or its own status.
func (s *Server) PinBlocks(ctx context.Context, req *pb.PinBlocksRequest) (*pb.PinBlocksResponse, error) {
	sess, err := s.shm.session(ctx, req.GetSessionId())
	if err != nil {
		return nil, err
	}
	// As PinBlock: piggybacked releases first, best effort.
	_, _ = s.release(sess, req.GetReleaseLeaseIds())
	a, err := validatePinBlocks(req)
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
	// One allocation each for the entries and slots; blocks of one layout
	// (the usual batch) share its message.
	entries := make([]pb.PinBlocksEntry, len(a.keys))
	slots := make([]pb.ArenaSlot, len(a.keys))
	out := make([]*pb.PinBlocksEntry, len(a.keys))
	var lastLayout codec.Layout
	var lastPB *pb.Layout
	ls := &lease{kind: leasePin}
	n := 0
	unpin := func() {
		if n > 0 {
			_ = s.store.Release(ls.key)
			for _, m := range ls.more {
				_ = s.store.Release(m.key)
			}
		}
	}
	for i, k := range a.keys {
		e := &entries[i]
		out[i] = e
		b, err := s.store.Get(ctx, k, tiers.GetOptions{Promote: a.promote})
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				unpin()
				sess.ungrant()
				return nil, cerr
			}
			st := status.Convert(Status(err))
			e.Code, e.Message = int32(st.Code()), st.Message()
			continue
		}
		sl := &slots[i]
		sl.Offset, sl.Length, sl.Generation = uint64(b.Slot.Offset), uint64(b.Slot.Len), b.Slot.Gen
		if lastPB == nil || b.Layout != lastLayout {
			lastLayout, lastPB = b.Layout, layoutToProto(b.Layout)
		}
		e.Slot, e.Layout, e.From = sl, lastPB, tierToProto(b.From)
		if n == 0 {
			ls.key, ls.slot = k, b.Slot
		} else {
			if ls.more == nil {
				ls.more = make([]pinned, 0, len(a.keys)-i)
			}
			ls.more = append(ls.more, pinned{key: k, slot: b.Slot})
		}
		ls.size += int64(len(b.Data))
		n++
	}
	if n == 0 {
		sess.ungrant()
		return &pb.PinBlocksResponse{Entries: out}, nil
	}
	if !s.shm.grant(sess, ls, ttl) {
		unpin()
		return nil, ErrNoSession
	}
	s.metrics.shmOut.Add(float64(ls.size))
	return &pb.PinBlocksResponse{
		LeaseId: ls.id, Entries: out, LeaseTtlMs: uint32(ttl.Milliseconds()), Pinned: uint32(n),
	}, nil
}
