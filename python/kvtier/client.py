"""The kvtier client: a connection to the daemon over its Unix socket or TCP."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import grpc
import numpy as np

from kvtier._buffers import as_u8, writable_u8
from kvtier.errors import KVTierError, from_code, from_rpc_error
from kvtier.shm import Session
from kvtier.types import Layout, LookupResult, Tier
from kvtier.v1 import kvtier_pb2 as pb
from kvtier.v1 import kvtier_pb2_grpc as pbg

__all__ = ["Client", "HashParams", "MAX_CHUNK_BYTES"]

#: The largest data chunk the daemon accepts in one message.
MAX_CHUNK_BYTES = 1 << 20

_ALGOS = {"xxh3": pb.HASH_ALGO_XXH3, "sha256_cbor": pb.HASH_ALGO_SHA256_CBOR, "xxhash_cbor": pb.HASH_ALGO_XXHASH_CBOR}
_TIERS = {None: pb.TIER_UNSPECIFIED, "dram": pb.TIER_DRAM, "hbm": pb.TIER_HBM, "nvme": pb.TIER_NVME}


class HashParams:
    """How the daemon hashes token ids (see kvtier.hashing for the modes).

    Args:
        block_tokens: token ids per block.
        algo: "xxh3", "sha256_cbor" or "xxhash_cbor".
        seed: the root seed; None means vLLM's default "vllm-none-hash".
        lora: LoRA adapter name, or "" for none.
        cache_salt: the tenant's cache salt, or "" for none.
    """

    def __init__(self, block_tokens: int, algo: str = "xxh3", seed: Optional[str] = None, lora: str = "",
                 cache_salt: str = ""):
        if algo not in _ALGOS:
            raise ValueError(f"kvtier: hash algo {algo!r}, want one of {', '.join(_ALGOS)}")
        self.block_tokens, self.algo, self.seed, self.lora, self.cache_salt = block_tokens, algo, seed, lora, cache_salt

    def to_pb(self) -> pb.HashParams:
        """Returns the kvtier.v1.HashParams message."""
        m = pb.HashParams(algo=_ALGOS[self.algo], block_tokens=self.block_tokens, lora=self.lora or "",
                          cache_salt=self.cache_salt or "")
        if self.seed is not None:
            m.seed = self.seed
        return m


class Client:
    """A connection to a kvtier daemon; safe for use from several threads.

    Give exactly one of socket (the daemon's Unix socket path) or addr
    ("host:port", which needs tls or insecure=True). token is sent as a
    bearer token with every call. tls is True (system roots) or a
    grpc.ChannelCredentials. Every call takes a timeout in seconds
    (default: the client's). Failed calls raise kvtier.KVTierError
    subclasses carrying the gRPC code and the daemon's message.

    On a Unix socket, get/put/get_many/put_many use the shared-memory
    data plane by default (shm="auto": attach on first use, fall back to
    inline gRPC when the daemon refuses shared memory); shm=False keeps
    every byte inline; shm=True makes a refusal an error.

    Use it as a context manager, or call close().
    """

    def __init__(self, socket: Optional[str] = None, addr: Optional[str] = None, *, token: Optional[str] = None,
                 tls: Union[bool, grpc.ChannelCredentials, None] = None, insecure: bool = False,
                 namespace: str = "default", timeout: Optional[float] = 30.0, shm: Union[bool, str] = "auto",
                 client_name: str = "kvtier-python"):
        if (socket is None) == (addr is None):
            raise ValueError("kvtier: give exactly one of socket= or addr=")
        opts = [
            ("grpc.max_receive_message_length", 8 << 20),
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.http2.lookahead_bytes", 8 << 20),
        ]
        self.namespace = namespace
        self.timeout = timeout
        self._md: Tuple[Tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self.unix = socket is not None
        if socket is not None:
            target = socket if socket.startswith("unix:") else "unix://" + __import__("os").path.abspath(socket)
            self._channel = grpc.insecure_channel(target, options=opts)
        else:
            if tls:
                creds = tls if isinstance(tls, grpc.ChannelCredentials) else grpc.ssl_channel_credentials()
                self._channel = grpc.secure_channel(addr, creds, options=opts)
            elif insecure:
                self._channel = grpc.insecure_channel(addr, options=opts)
            else:
                raise ValueError("kvtier: a TCP addr needs tls= or insecure=True")
        self._stub = pbg.KVTierServiceStub(self._channel)
        if shm not in (True, False, "auto"):
            raise ValueError("kvtier: shm must be True, False or 'auto'")
        if shm is True and not self.unix:
            raise ValueError("kvtier: shared memory needs the Unix socket")
        self._shm_mode = shm if self.unix else False
        self._shm: Optional[Session] = None
        self._shm_lock = threading.Lock()
        self._client_name = client_name
        self._pool: Optional[ThreadPoolExecutor] = None

    @classmethod
    def from_config(cls, cfg: dict, **kw: Any) -> "Client":
        """A client from an engine's extra-config dict: socket or addr
        (default ./kvtier.sock), token, insecure, timeout, shm."""
        sock, addr = cfg.get("socket"), cfg.get("addr")
        if not sock and not addr:
            sock = "./kvtier.sock"
        return cls(socket=sock, addr=None if sock else addr, token=cfg.get("token"),
                   insecure=bool(cfg.get("insecure", False)), timeout=float(cfg.get("timeout", 30)),
                   shm=cfg.get("shm", "auto"), **kw)

    # --- lifetime ---------------------------------------------------------

    def close(self) -> None:
        """Closes the shared-memory session (if any) and the connection."""
        with self._shm_lock:
            s, self._shm = self._shm, None
        if s is not None:
            s.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def attach(self, name: Optional[str] = None) -> Session:
        """Opens a new shared-memory session (Unix socket only). The caller
        closes it."""
        if not self.unix:
            raise from_code(grpc.StatusCode.FAILED_PRECONDITION, "kvtier: shared memory needs the Unix socket")
        return Session(self, name or self._client_name)

    def session(self) -> Optional[Session]:
        """The client's own shared-memory session, attached on first use;
        None when shared memory is off or the daemon refused it (shm='auto')."""
        if self._shm_mode is False:
            return None
        with self._shm_lock:
            if self._shm is not None and not self._shm.closed:
                return self._shm
            try:
                self._shm = self.attach()
            except KVTierError as e:
                if self._shm_mode is True or e.code not in (
                        grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION,
                        grpc.StatusCode.UNIMPLEMENTED):
                    raise
                self._shm_mode = False
                return None
            return self._shm

    # --- helpers ----------------------------------------------------------

    def _key(self, hash: bytes, layer: int, namespace: Optional[str]) -> pb.Key:
        return pb.Key(namespace=namespace or self.namespace, hash=bytes(hash), layer=layer)

    def _t(self, timeout: Optional[float]) -> Optional[float]:
        return timeout if timeout is not None else self.timeout

    def _unary(self, method: Any, req: Any, timeout: Optional[float]) -> Any:
        try:
            return method(req, timeout=self._t(timeout), metadata=self._md)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def _workers(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kvtier")
        return self._pool

    # --- inline data plane ------------------------------------------------

    def put_inline(self, hash: bytes, data: Any, layout: Layout, *, layer: int = -1,
                   namespace: Optional[str] = None, parent: Optional[bytes] = None, durable: bool = False,
                   timeout: Optional[float] = None) -> None:
        """Stores a block through gRPC messages (chunks of 1 MiB)."""
        v = as_u8(data)
        hdr = pb.PutHeader(key=self._key(hash, layer, namespace), layout=layout.to_pb(), parent_hash=parent or b"",
                           durable=durable)

        def msgs() -> Iterator[pb.PutRequest]:
            n = v.nbytes
            yield pb.PutRequest(header=hdr, data=v[:MAX_CHUNK_BYTES].tobytes())
            for off in range(MAX_CHUNK_BYTES, n, MAX_CHUNK_BYTES):
                yield pb.PutRequest(data=v[off:off + MAX_CHUNK_BYTES].tobytes())

        self._unary(self._stub.Put, msgs(), timeout)

    def get_inline(self, hash: bytes, out: Any = None, *, layer: int = -1, namespace: Optional[str] = None,
                   timeout: Optional[float] = None) -> np.ndarray:
        """Reads a block through gRPC messages into out (or a new uint8
        array), which it returns."""
        dst = writable_u8(out) if out is not None else None
        off = 0
        try:
            for m in self._stub.Get(pb.GetRequest(key=self._key(hash, layer, namespace)),
                                    timeout=self._t(timeout), metadata=self._md):
                if m.HasField("layout"):
                    if dst is None:
                        dst = np.empty(m.total_bytes, dtype=np.uint8)
                    elif dst.nbytes != m.total_bytes:
                        raise from_code(grpc.StatusCode.INVALID_ARGUMENT,
                                        f"kvtier: buffer has {dst.nbytes} bytes, the block {m.total_bytes}")
                if dst is None:
                    raise from_code(grpc.StatusCode.INTERNAL, "kvtier: the first Get message carried no layout")
                n = len(m.data)
                if off + n > dst.nbytes:
                    raise from_code(grpc.StatusCode.INTERNAL, "kvtier: Get stream carried too many bytes")
                dst[off:off + n] = np.frombuffer(m.data, dtype=np.uint8)
                off += n
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        if dst is None or off != dst.nbytes:
            raise from_code(grpc.StatusCode.INTERNAL, f"kvtier: Get stream carried {off} bytes")
        return dst

    # --- data plane (shared memory when available) -------------------------

    def put(self, hash: bytes, data: Any, layout: Layout, *, layer: int = -1, namespace: Optional[str] = None,
            parent: Optional[bytes] = None, durable: bool = False, timeout: Optional[float] = None) -> None:
        """Stores one block (bytes-like, numpy array or CPU tensor of exactly
        layout.nbytes bytes) under hash. parent is the chain's previous
        block's hash. A block already cached is only refreshed."""
        s = self.session()
        if s is None:
            return self.put_inline(hash, data, layout, layer=layer, namespace=namespace, parent=parent,
                                   durable=durable, timeout=timeout)
        s.put_many([hash], [data], layout, layer=layer, namespace=namespace, parents=[parent], durable=durable,
                   timeout=timeout)

    def put_many(self, hashes: Sequence[bytes], datas: Sequence[Any], layout: Layout, *, layer: int = -1,
                 namespace: Optional[str] = None, chain: bool = True, parent: Optional[bytes] = None,
                 durable: bool = False, timeout: Optional[float] = None) -> None:
        """Stores blocks of one layout. With chain (the default) hashes are
        one prefix chain: each block's parent is the previous hash (the
        first's is parent)."""
        parents: List[Optional[bytes]] = [None] * len(hashes)
        if chain:
            parents = [parent] + list(hashes[:-1]) if hashes else []
        s = self.session()
        if s is not None:
            return s.put_many(hashes, datas, layout, layer=layer, namespace=namespace, parents=parents,
                              durable=durable, timeout=timeout)
        futs = [self._workers().submit(self.put_inline, h, d, layout, layer=layer, namespace=namespace,
                                       parent=p, durable=durable, timeout=timeout)
                for h, d, p in zip(hashes, datas, parents)]
        for f in futs:
            f.result()

    def get(self, hash: bytes, out: Any = None, *, layer: int = -1, namespace: Optional[str] = None,
            timeout: Optional[float] = None) -> np.ndarray:
        """Reads one block into out (or a new uint8 array) and returns it.
        Raises NotFound when it is not cached."""
        s = self.session()
        if s is None:
            return self.get_inline(hash, out, layer=layer, namespace=namespace, timeout=timeout)
        if out is None:
            with s.pin(hash, layer=layer, namespace=namespace, renew=False, timeout=timeout) as p:
                assert p.view is not None
                out = p.view.copy()
            return out
        err = s.get_many([hash], [out], layer=layer, namespace=namespace, timeout=timeout)[0]
        if err is not None:
            raise err
        return writable_u8(out)

    def get_many(self, hashes: Sequence[bytes], outs: Sequence[Any], *, layer: int = -1,
                 namespace: Optional[str] = None, timeout: Optional[float] = None) -> List[Optional[KVTierError]]:
        """Reads blocks into caller buffers (each exactly its block's size).
        Returns one entry per block: None when it was read, else its error
        (NotFound when not cached); other blocks are unaffected."""
        if len(hashes) != len(outs):
            raise ValueError("kvtier: get_many needs as many buffers as hashes")
        s = self.session()
        if s is not None:
            return s.get_many(hashes, outs, layer=layer, namespace=namespace, timeout=timeout)

        def one(h: bytes, o: Any) -> Optional[KVTierError]:
            try:
                self.get_inline(h, o, layer=layer, namespace=namespace, timeout=timeout)
                return None
            except KVTierError as e:
                return e

        return list(self._workers().map(one, hashes, outs))

    def delete(self, hash: bytes, *, layer: int = -1, namespace: Optional[str] = None,
               timeout: Optional[float] = None) -> None:
        """Removes every copy of a block (a block not cached is no error)."""
        self._unary(self._stub.Delete, pb.DeleteRequest(key=self._key(hash, layer, namespace)), timeout)

    # --- queries ------------------------------------------------------------

    def lookup(self, hashes: Sequence[bytes], *, layer: int = -1, namespace: Optional[str] = None,
               timeout: Optional[float] = None) -> LookupResult:
        """Returns how many leading blocks of a chain of hashes (all 16 or all
        32 bytes) are cached, and the fastest tier of each."""
        req = pb.LookupRequest(namespace=namespace or self.namespace, layer=layer)
        if hashes:
            size = len(hashes[0])
            packed = b"".join(hashes)
            if len(packed) == size * len(hashes):
                req.packed_hashes, req.hash_size = packed, size
            else:
                req.hashes.extend(hashes)  # mixed sizes: the daemon says what is wrong
        return self._lookup(req, timeout)

    def lookup_tokens(self, token_ids: Sequence[int], params: HashParams, *, layer: int = -1,
                      namespace: Optional[str] = None, return_hashes: bool = False,
                      timeout: Optional[float] = None) -> LookupResult:
        """Lookup by token ids: the daemon hashes them with params."""
        req = pb.LookupRequest(namespace=namespace or self.namespace, layer=layer, token_ids=token_ids,
                               hash_params=params.to_pb(), return_hashes=return_hashes)
        return self._lookup(req, timeout)

    def _lookup(self, req: pb.LookupRequest, timeout: Optional[float]) -> LookupResult:
        r = self._unary(self._stub.Lookup, req, timeout)
        return LookupResult(r.cached_blocks, r.total_blocks, [Tier.from_pb(t) for t in r.tiers], list(r.hashes))

    def stats(self, timeout: Optional[float] = None) -> pb.StatsResponse:
        """Returns the daemon's statistics (a kvtier.v1.StatsResponse:
        tiers, indexed/pinned blocks, sessions, leases ...)."""
        return self._unary(self._stub.Stats, pb.StatsRequest(), timeout)

    # --- hints --------------------------------------------------------------

    def hint(self, hints: Iterable[pb.HintRequest], timeout: Optional[float] = None) -> List[pb.HintResponse]:
        """Sends prefetcher hints on one Hint stream and returns the
        responses of those that asked for an ack. Build hints with
        request_arrived, layer_attention and request_finished."""
        try:
            return list(self._stub.Hint(iter(list(hints)), timeout=self._t(timeout), metadata=self._md))
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def request_arrived(self, request_id: str, hashes: Sequence[bytes] = (), *, token_ids: Sequence[int] = (),
                        params: Optional[HashParams] = None, layer: int = -1, namespace: Optional[str] = None,
                        target: Optional[str] = None, id: int = 0, ack: bool = True) -> pb.HintRequest:
        """Builds the hint that a request with a prefix arrived (give hashes,
        or token_ids with params); target "dram" (default) or "hbm"."""
        h = pb.RequestArrivedHint(request_id=request_id, namespace=namespace or self.namespace, layer=layer,
                                  hashes=list(hashes), token_ids=list(token_ids), target=_TIERS[target])
        if params is not None:
            h.hash_params.CopyFrom(params.to_pb())
        return pb.HintRequest(id=id, ack=ack, request_arrived=h)

    @staticmethod
    def layer_attention(request_id: str, layer: int, step: int, block_indexes: Sequence[int],
                        scores: Sequence[float], *, id: int = 0, ack: bool = False) -> pb.HintRequest:
        """Builds the hint that a layer of a request attended to blocks with scores."""
        return pb.HintRequest(id=id, ack=ack, layer_attention=pb.LayerAttentionHint(
            request_id=request_id, layer=layer, step=step, block_indexes=list(block_indexes), scores=list(scores)))

    @staticmethod
    def request_finished(request_id: str, *, id: int = 0, ack: bool = False) -> pb.HintRequest:
        """Builds the hint that a request finished."""
        return pb.HintRequest(id=id, ack=ack, request_finished=pb.RequestFinishedHint(request_id=request_id))
