package daemon

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvtier/kvtier/codec"
	"github.com/kvtier/kvtier/prefetch"
	"github.com/kvtier/kvtier/tiers"
)

// Errors the daemon itself returns, besides the tiers and codec sentinels.
// They are wrapped with detail; test with errors.Is. Status maps each to
// one gRPC code.
var (
	// ErrUnauthenticated: a token is required and is missing or unknown.
	ErrUnauthenticated = errors.New("daemon: unauthenticated")
	// ErrPermissionDenied: the token does not allow the namespace, or the
	// peer may not use shared memory.
	ErrPermissionDenied = errors.New("daemon: permission denied")
	// ErrNoLease: a shared-memory lease is unknown: expired, already
	// released, committed or aborted, or never granted.
	ErrNoLease = errors.New("daemon: no such lease")
	// ErrNoSession: a shared-memory session id is unknown or closed.
	ErrNoSession = errors.New("daemon: no such shared-memory session")
	// ErrTooManyLeases: the session holds its maximum number of leases.
	ErrTooManyLeases = errors.New("daemon: too many leases")
	// ErrShmUnavailable: shared memory is not offered here (TCP transport,
	// or an arena that cannot be shared).
	ErrShmUnavailable = errors.New("daemon: shared memory unavailable")
	// ErrShuttingDown: the daemon is stopping.
	ErrShuttingDown = errors.New("daemon: shutting down")
	// ErrStreamIdle: an inline stream made no progress for the stream idle
	// timeout and was ended (its reservation or pin dropped).
	ErrStreamIdle = errors.New("daemon: stream idle")
	// ErrConfig: the configuration is invalid; the message names the setting.
	ErrConfig = errors.New("daemon: invalid configuration")
)

// FieldError is an invalid request field. It wraps tiers.ErrInvalid, so it
// maps to INVALID_ARGUMENT, and Status attaches a google.rpc.BadRequest
// detail naming the field.
type FieldError struct {
	Field string // the field's path in the request, e.g. "header.key.namespace"
	Msg   string
}

func (e *FieldError) Error() string { return "invalid " + e.Field + ": " + e.Msg }

// Unwrap makes errors.Is(err, tiers.ErrInvalid) true.
func (e *FieldError) Unwrap() error { return tiers.ErrInvalid }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Code returns the gRPC code for err. It is the one place where store,
// codec, context and daemon errors meet gRPC codes.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrStreamIdle):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, ErrUnauthenticated):
		return codes.Unauthenticated
	case errors.Is(err, ErrPermissionDenied):
		return codes.PermissionDenied
	case errors.Is(err, tiers.ErrInvalid),
		errors.Is(err, prefetch.ErrInvalid),
		errors.Is(err, codec.ErrLayout),
		errors.Is(err, codec.ErrSize),
		errors.Is(err, codec.ErrMode):
		return codes.InvalidArgument
	case errors.Is(err, tiers.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, tiers.ErrExhausted),
		errors.Is(err, tiers.ErrFull),
		errors.Is(err, tiers.ErrNoSpace),
		errors.Is(err, ErrTooManyLeases):
		return codes.ResourceExhausted
	case errors.Is(err, tiers.ErrNotPinned),
		errors.Is(err, tiers.ErrPinned),
		errors.Is(err, tiers.ErrUnavailable),
		errors.Is(err, ErrNoLease),
		errors.Is(err, ErrNoSession),
		errors.Is(err, ErrShmUnavailable):
		return codes.FailedPrecondition
	case errors.Is(err, tiers.ErrClosed), errors.Is(err, ErrShuttingDown):
		return codes.Unavailable
	case tiers.IsCorrupt(err):
		return codes.DataLoss
	case errors.Is(err, errors.ErrUnsupported):
		return codes.Unimplemented
	}
	return codes.Internal
}

// Status converts err to a gRPC status error (nil for nil). Errors that
// already carry a status keep it. A FieldError gets a BadRequest detail.
func Status(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	st := status.New(Code(err), err.Error())
	var fe *FieldError
	if errors.As(err, &fe) {
		if d, derr := st.WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: fe.Field, Description: fe.Msg}},
		}); derr == nil {
			st = d
		}
	}
	return st.Err()
}
