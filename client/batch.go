package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/kvtier/kvtier/proto/kvtier/v1"
)

// batchWorkers bounds the calls a batch keeps in flight on the inline
// plane (and the puts on the shared-memory plane).
const batchWorkers = 8

// BatchError says which blocks of a batch failed; the others succeeded.
type BatchError struct {
	// Errs[i] is block i's error, nil for the blocks that succeeded.
	Errs []error
}

func (e *BatchError) Error() string {
	n, first := 0, error(nil)
	for _, err := range e.Errs {
		if err != nil {
			if n == 0 {
				first = err
			}
			n++
		}
	}
	return fmt.Sprintf("client: %d of %d blocks failed, first: %v", n, len(e.Errs), first)
}

// Unwrap returns the blocks' errors, for errors.Is and status checks.
func (e *BatchError) Unwrap() []error {
	var out []error
	for _, err := range e.Errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

func batchErr(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return &BatchError{Errs: errs}
		}
	}
	return nil
}

// forEach runs f(i) for i in [0, n) on at most batchWorkers goroutines.
func forEach(ctx context.Context, n int, f func(ctx context.Context, i int) error) []error {
	errs := make([]error, n)
	if n == 0 {
		return errs
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	next := 0
	for range min(batchWorkers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				if err := ctx.Err(); err != nil {
					errs[i] = status.FromContextError(err).Err()
					continue
				}
				errs[i] = f(ctx, i)
			}
		}()
	}
	wg.Wait()
	return errs
}

func checkBatch(ctx context.Context, keys []*pb.Key, dst [][]byte) error {
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	if len(dst) != len(keys) {
		return status.Errorf(codes.InvalidArgument, "client: %d buffers for %d keys", len(dst), len(keys))
	}
	return nil
}

// GetBatch reads blocks inline with up to 8 Get streams in flight, block i
// into dst[i][:0] (grown as needed; the result is stored back in dst[i]).
// A *BatchError says which blocks failed.
func (c *Client) GetBatch(ctx context.Context, keys []*pb.Key, dst [][]byte, opts GetOptions) error {
	if err := checkBatch(ctx, keys, dst); err != nil {
		return err
	}
	return batchErr(forEach(ctx, len(keys), func(ctx context.Context, i int) error {
		b, err := c.Get(ctx, keys[i], dst[i], opts)
		if err == nil {
			dst[i] = b.Data
		}
		return err
	}))
}

// PutBatch stores blocks inline with up to 8 Put streams in flight;
// parents[i] (nil for none, or a nil slice) is block i's chain parent.
func (c *Client) PutBatch(ctx context.Context, keys []*pb.Key, l *pb.Layout, data, parents [][]byte) error {
	if err := checkBatch(ctx, keys, data); err != nil {
		return err
	}
	return batchErr(forEach(ctx, len(keys), func(ctx context.Context, i int) error {
		return c.Put(ctx, keys[i], l, data[i], PutOptions{Parent: parentOf(parents, i)})
	}))
}

// PutBatch stores blocks through shared memory, up to 8 at a time.
func (s *Shm) PutBatch(ctx context.Context, keys []*pb.Key, l *pb.Layout, data, parents [][]byte) error {
	if err := checkBatch(ctx, keys, data); err != nil {
		return err
	}
	return batchErr(forEach(ctx, len(keys), func(ctx context.Context, i int) error {
		return s.Put(ctx, keys[i], l, data[i], PutOptions{Parent: parentOf(parents, i)})
	}))
}

func parentOf(parents [][]byte, i int) []byte {
	if i < len(parents) {
		return parents[i]
	}
	return nil
}

// GetBatch copies blocks out of the arena, block i into dst[i][:0] (grown
// as needed; the result is stored back in dst[i]). Up to 4096 blocks are
// pinned by one PinBlocks call under one lease, so a batch costs one round
// trip plus the copies; the lease is released with the next pin (or after
// a short delay) as Get's are. A daemon without PinBlocks gets every pin
// sent on the session's pin stream before any answer is awaited, and one
// without a pin stream one Get per block. A *BatchError says which blocks
// failed.
func (s *Shm) GetBatch(ctx context.Context, keys []*pb.Key, dst [][]byte, opts GetOptions) error {
	if err := checkBatch(ctx, keys, dst); err != nil {
		return err
	}
	if err := s.check(); err != nil {
		return err
	}
	if !s.noBatch.Load() {
		errs, err := s.pinBlocksBatch(ctx, keys, dst, opts)
		if status.Code(err) != codes.Unimplemented {
			if err != nil {
				return err
			}
			return batchErr(errs)
		}
		s.noBatch.Store(true)
	}
	return s.getBatchStream(ctx, keys, dst, opts)
}

// getBatchStream is GetBatch over the pin stream.
func (s *Shm) getBatchStream(ctx context.Context, keys []*pb.Key, dst [][]byte, opts GetOptions) error {
	ps, err := s.stream()
	if err != nil {
		return err
	}
	if ps == nil {
		return s.getEach(ctx, keys, dst, opts)
	}
	start := time.Now()
	rel := s.takePending()
	errs := make([]error, len(keys))
	chans := make([]chan pinResult, len(keys))
	ids := make([]uint64, len(keys))
	for i, k := range keys {
		req := &pb.PinBlockRequest{SessionId: s.id, Key: k, Promote: opts.Promote}
		if i == 0 {
			req.ReleaseLeaseIds = rel
		}
		ids[i] = s.nextPin.Add(1)
		chans[i], errs[i] = ps.send(ids[i], req)
		if errs[i] != nil && i == 0 {
			s.deferRelease(rel...)
		}
	}
	ttl := safetyMargin(time.Duration(s.sess.GetDefaultLeaseTtlMs()) * time.Millisecond)
	var late []uint64
	for i, ch := range chans {
		if ch == nil {
			continue
		}
		var r pinResult
		select {
		case r = <-ch:
		case <-ctx.Done():
			ps.forget(ids[i:])
			for j := i; j < len(chans); j++ {
				if chans[j] == nil {
					continue
				}
				errs[j] = status.FromContextError(ctx.Err()).Err()
				select { // an answer that arrived before forget: let its pin go
				case r := <-chans[j]:
					if r.resp != nil {
						late = append(late, r.resp.GetLeaseId())
					}
				default:
				}
			}
			s.deferRelease(late...)
			return batchErr(errs)
		}
		if r.err != nil {
			if status.Code(r.err) == codes.Unimplemented {
				s.pinMu.Lock()
				s.noStream = true
				s.pinMu.Unlock()
			}
			errs[i] = r.err
			continue
		}
		v, err := s.view(r.resp.GetSlot())
		if err != nil {
			s.deferRelease(r.resp.GetLeaseId())
			errs[i] = err
			continue
		}
		dst[i] = copyInto(dst[i], v)
		deadline := start.Add(time.Duration(r.resp.GetLeaseTtlMs()) * time.Millisecond)
		if time.Until(deadline) > ttl {
			s.deferRelease(r.resp.GetLeaseId())
		} else {
			late = append(late, r.resp.GetLeaseId())
		}
	}
	if len(late) > 0 {
		// Some copies finished close to their lease's end: confirm them.
		if _, err := s.c.api.Release(ctx, &pb.ReleaseRequest{SessionId: s.id, LeaseIds: late}); err != nil {
			return errors.Join(fmt.Errorf("client: pins may have expired during the batch's copies: %w", err), batchErr(errs))
		}
	}
	return batchErr(errs)
}

func (s *Shm) getEach(ctx context.Context, keys []*pb.Key, dst [][]byte, opts GetOptions) error {
	errs := make([]error, len(keys))
	for i, k := range keys {
		b, err := s.Get(ctx, k, dst[i], opts)
		if err == nil {
			dst[i] = b.Data
		}
		errs[i] = err
	}
	return batchErr(errs)
}

// send registers a waiter for id and sends the pin; the answer arrives on
// the returned channel.
func (ps *pinStream) send(id uint64, req *pb.PinBlockRequest) (chan pinResult, error) {
	ch := make(chan pinResult, 1)
	ps.mu.Lock()
	if ps.broken != nil {
		err := ps.broken
		ps.mu.Unlock()
		return nil, err
	}
	ps.waiters[id] = ch
	ps.mu.Unlock()
	ps.sendMu.Lock()
	err := ps.st.Send(&pb.PinStreamRequest{Id: id, Pin: req})
	ps.sendMu.Unlock()
	if err != nil && err != io.EOF {
		ps.forget([]uint64{id})
		return nil, err
	}
	return ch, nil
}

// forget drops the waiters of ids (their pins, if granted, are released by
// the dispatcher).
func (ps *pinStream) forget(ids []uint64) {
	ps.mu.Lock()
	for _, id := range ids {
		delete(ps.waiters, id)
	}
	ps.mu.Unlock()
}
