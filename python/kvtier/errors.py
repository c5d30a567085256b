"""Errors raised by the kvtier client.

Every failed call raises :class:`KVTierError` (or a subclass named after its
gRPC code), carrying the gRPC status code and the daemon's message.
"""

from __future__ import annotations

import grpc

__all__ = [
    "KVTierError",
    "NotFound",
    "InvalidArgument",
    "ResourceExhausted",
    "FailedPrecondition",
    "PermissionDenied",
    "Unauthenticated",
    "DeadlineExceeded",
    "Unavailable",
    "SessionClosed",
    "from_rpc_error",
    "from_code",
]


class KVTierError(Exception):
    """A failed kvtier call.

    Attributes:
        code: the :class:`grpc.StatusCode` the daemon (or gRPC) returned.
        message: the daemon's message.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class NotFound(KVTierError):
    """The block is not cached (NOT_FOUND)."""

    code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(KVTierError):
    """A malformed argument (INVALID_ARGUMENT); the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ResourceExhausted(KVTierError):
    """No room, too many leases, or a message too large (RESOURCE_EXHAUSTED)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(KVTierError):
    """The state does not allow the call, e.g. an expired lease (FAILED_PRECONDITION)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(KVTierError):
    """The token does not allow the namespace or shared memory (PERMISSION_DENIED)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(KVTierError):
    """A token is required and missing or unknown (UNAUTHENTICATED)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class DeadlineExceeded(KVTierError):
    """The call's timeout passed (DEADLINE_EXCEEDED)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(KVTierError):
    """The daemon is unreachable or shutting down (UNAVAILABLE)."""

    code = grpc.StatusCode.UNAVAILABLE


class SessionClosed(KVTierError):
    """A call on a closed or ended shared-memory session."""

    code = grpc.StatusCode.FAILED_PRECONDITION


_BY_CODE = {
    c.code: c
    for c in (
        NotFound,
        InvalidArgument,
        ResourceExhausted,
        FailedPrecondition,
        PermissionDenied,
        Unauthenticated,
        DeadlineExceeded,
        Unavailable,
    )
}

_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


def from_code(code: grpc.StatusCode | int, message: str) -> KVTierError:
    """Returns the exception for a status code (a StatusCode or its number)."""
    if isinstance(code, int):
        code = _BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    cls = _BY_CODE.get(code, KVTierError)
    return cls(message, code)


def from_rpc_error(e: grpc.RpcError) -> KVTierError:
    """Converts a grpc.RpcError into the matching KVTierError."""
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = e.details() if hasattr(e, "details") else str(e)
    return from_code(code, details or "")
