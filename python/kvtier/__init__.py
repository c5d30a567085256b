"""kvtier: the Python client of the kvtier KV-cache tier daemon.

    import kvtier
    with kvtier.Client(socket="/run/kvtier.sock", namespace="llama-3-8b") as c:
        layout = kvtier.Layout("fp16", kv_heads=8, head_dim=128, tokens=16, layers=32)
        c.put(h, data, layout)                  # shared memory on the Unix socket
        c.lookup([h]).cached_blocks             # 1
        c.get_many([h], [out])                  # into caller buffers

Modules: kvtier.client (Client), kvtier.shm (the shared-memory session),
kvtier.hashing (prefix hashes identical to the daemon's), kvtier.sglang
(HiCacheStorage backend), kvtier.vllm (KV connector and offloading tier).
"""

from kvtier.client import MAX_CHUNK_BYTES, Client, HashParams
from kvtier.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    KVTierError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SessionClosed,
    Unauthenticated,
    Unavailable,
)
from kvtier.shm import Pinned, Reservation, Session
from kvtier.types import Layout, LookupResult, Tier

__all__ = [
    "Client", "HashParams", "MAX_CHUNK_BYTES", "Layout", "LookupResult", "Tier", "Session", "Pinned",
    "Reservation", "KVTierError", "NotFound", "InvalidArgument", "ResourceExhausted", "FailedPrecondition",
    "PermissionDenied", "Unauthenticated", "DeadlineExceeded", "Unavailable", "SessionClosed",
]
__version__ = "0.1.0"
