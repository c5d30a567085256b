package daemon

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/tiers"
)

func TestCode(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("outer: %w", err) }
	for _, tc := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"nil", nil, codes.OK},
		{"invalid", wrap(tiers.ErrInvalid), codes.InvalidArgument},
		{"layout", wrap(codec.ErrLayout), codes.InvalidArgument},
		{"size", wrap(codec.ErrSize), codes.InvalidArgument},
		{"field", fieldErr("key.hash", "bad"), codes.InvalidArgument},
		{"not found", wrap(tiers.ErrNotFound), codes.NotFound},
		{"exhausted", wrap(tiers.ErrExhausted), codes.ResourceExhausted},
		{"full", wrap(tiers.ErrFull), codes.ResourceExhausted},
		{"too many leases", wrap(ErrTooManyLeases), codes.ResourceExhausted},
		{"not pinned", wrap(tiers.ErrNotPinned), codes.FailedPrecondition},
		{"pinned", wrap(tiers.ErrPinned), codes.FailedPrecondition},
		{"unavailable tier", wrap(tiers.ErrUnavailable), codes.FailedPrecondition},
		{"no lease", wrap(ErrNoLease), codes.FailedPrecondition},
		{"no session", wrap(ErrNoSession), codes.FailedPrecondition},
		{"no shm", wrap(ErrShmUnavailable), codes.FailedPrecondition},
		{"unauthenticated", wrap(ErrUnauthenticated), codes.Unauthenticated},
		{"denied", wrap(ErrPermissionDenied), codes.PermissionDenied},
		{"deadline", wrap(context.DeadlineExceeded), codes.DeadlineExceeded},
		{"canceled", wrap(context.Canceled), codes.Canceled},
		{"closed", wrap(tiers.ErrClosed), codes.Unavailable},
		{"shutting down", ErrShuttingDown, codes.Unavailable},
		{"stream idle", wrap(ErrStreamIdle), codes.DeadlineExceeded},
		{"corrupt", wrap(codec.ErrCorrupt), codes.DataLoss},
		{"unsupported", wrap(errors.ErrUnsupported), codes.Unimplemented},
		{"status kept", status.Error(codes.Aborted, "x"), codes.Aborted},
		{"other", errors.New("boom"), codes.Internal},
		// A deadline wins over what the store made of it.
		{"deadline in store error", fmt.Errorf("%w: %w", tiers.ErrExhausted, context.DeadlineExceeded), codes.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Code(tc.err); got != tc.want {
				t.Errorf("Code(%v) = %v, want %v", tc.err, got, tc.want)
			}
			if got := status.Code(Status(tc.err)); got != tc.want {
				t.Errorf("status.Code(Status(%v)) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestStatusBadRequestDetail(t *testing.T) {
	st := status.Convert(Status(fieldErr("header.key.hash", "%d bytes", 3)))
	if st.Code() != codes.InvalidArgument || st.Message() != "invalid header.key.hash: 3 bytes" {
		t.Fatalf("status %v %q", st.Code(), st.Message())
	}
	var found bool
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.FieldViolations) == 1 && br.FieldViolations[0].Field == "header.key.hash" {
			found = true
		}
	}
	if !found {
		t.Errorf("no BadRequest detail naming the field: %v", st.Details())
	}
}
