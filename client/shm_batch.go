package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// maxPinBlocksKeys is the daemon's limit on keys per PinBlocks call.
const maxPinBlocksKeys = 4096

// pinBlocksBatch is GetBatch over PinBlocks: each chunk of up to
// maxPinBlocksKeys keys is one call and one lease. It returns the blocks'
// errors, or a call's error (Unimplemented when the daemon has no
// PinBlocks, before anything was pinned).
func (s *Shm) pinBlocksBatch(ctx context.Context, keys []*pb.Key, dst [][]byte, opts GetOptions) ([]error, error) {
	errs := make([]error, len(keys))
	margin := safetyMargin(time.Duration(s.sess.GetDefaultLeaseTtlMs()) * time.Millisecond)
	for lo := 0; lo < len(keys); lo += maxPinBlocksKeys {
		hi := min(lo+maxPinBlocksKeys, len(keys))
		rel := s.takePending()
		start := time.Now()
		resp, err := s.c.api.PinBlocks(ctx, &pb.PinBlocksRequest{
			SessionId: s.id, Keys: keys[lo:hi], Promote: opts.Promote, ReleaseLeaseIds: rel,
		})
		if err != nil {
			s.deferRelease(rel...) // unknown ones are ignored
			if lo > 0 {
				for i := lo; i < len(keys); i++ {
					errs[i] = err
				}
				return errs, nil
			}
			return nil, err
		}
		ents := resp.GetEntries()
		if len(ents) != hi-lo {
			s.deferRelease(resp.GetLeaseId())
			return nil, fmt.Errorf("client: PinBlocks answered %d entries for %d keys", len(ents), hi-lo)
		}
		for j, e := range ents {
			i := lo + j
			if e.GetCode() != 0 {
				errs[i] = status.Error(codes.Code(e.GetCode()), e.GetMessage())
				continue
			}
			v, err := s.view(e.GetSlot())
			if err != nil {
				errs[i] = err
				continue
			}
			dst[i] = copyInto(dst[i], v)
		}
		lease := resp.GetLeaseId()
		if lease == 0 {
			continue
		}
		deadline := start.Add(time.Duration(resp.GetLeaseTtlMs()) * time.Millisecond)
		if time.Until(deadline) > margin {
			s.deferRelease(lease)
			continue
		}
		// The copies finished close to the lease's end: confirm them.
		if _, err := s.c.api.Release(ctx, &pb.ReleaseRequest{SessionId: s.id, LeaseIds: []uint64{lease}}); err != nil {
			err = fmt.Errorf("client: the batch's pins may have expired during its copies: %w", err)
			for j, e := range ents {
				if e.GetCode() == 0 {
					errs[lo+j] = errors.Join(errs[lo+j], err)
				}
			}
		}
	}
	return errs, nil
}

// takePending removes up to releaseBatch deferred releases, for a pin call
// to carry.
func (s *Shm) takePending() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rel []uint64
	if n := min(len(s.pending), releaseBatch); n > 0 {
		rel = append(rel, s.pending[:n]...)
		s.pending = s.pending[:copy(s.pending, s.pending[n:])]
	}
	return rel
}

// copyInto copies v into d[:0], grown as needed.
func copyInto(d, v []byte) []byte {
	if cap(d) < len(v) {
		d = make([]byte, len(v))
	}
	d = d[:len(v)]
	copy(d, v)
	return d
}
