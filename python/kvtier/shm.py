"""The shared-memory data plane: the daemon's DRAM arena mapped into this
process.

A session is opened with Attach over the Unix socket; the arena's memfd is
received on the daemon's descriptor socket (SCM_RIGHTS, socket.recv_fds)
and mapped MAP_SHARED. Puts reserve a slot, write in place and commit; gets
pin a block, read in place and release. The session lasts as long as the
Attach stream: when this process closes it, or exits, or is killed, the
daemon drops every lease the session still holds.

Caveats: a view into the arena (Reservation.view, Pinned.view) is valid
only until Commit/Abort/Release and never after Session.close. Bytes read
under a pin are the block's only if the pin was still held when the read
ended: Pinned.release confirms it, and get/get_many finish their copies well
inside the lease (else they confirm synchronously).
"""

from __future__ import annotations

import atexit
import mmap
import os
import socket
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

import grpc
import numpy as np

from kvtier._buffers import as_u8, writable_u8
from kvtier.errors import KVTierError, SessionClosed, from_code, from_rpc_error
from kvtier.types import Layout, Tier
from kvtier.v1 import kvtier_pb2 as pb

if TYPE_CHECKING:
    from kvtier.client import Client

__all__ = ["Session", "Reservation", "Pinned"]

_live: "weakref.WeakSet[Session]" = weakref.WeakSet()

#: Blocks a put_many reserves at once: bounded so that a long list neither
#: outlives its leases before the commits nor exceeds the session's leases.
BATCH = 64

#: The daemon's limit on keys per PinBlocks call (get_many splits longer lists).
PIN_BLOCKS_MAX = 4096


@atexit.register
def _close_all() -> None:
    for s in list(_live):
        try:
            s.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _recv_arena_fd(path: str, token: bytes, timeout: float) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(token)
        msg, fds, _flags, _addr = socket.recv_fds(s, 1, 1)
        if len(msg) != 1 or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise KVTierError("kvtier: the daemon sent no arena descriptor (token refused?)")
        return fds[0]


class Reservation:
    """Room in the arena for one block being written in place.

    Write exactly len(view) bytes into view, then commit() (or abort()).
    """

    def __init__(self, sess: "Session", lease_id: int, offset: int, length: int, ttl_ms: int):
        self._s = sess
        self.lease_id = lease_id
        self.offset = offset
        #: The reserved region: a writable uint8 numpy view of the arena.
        self.view: Optional[np.ndarray] = sess._arena[offset:offset + length]
        #: When the lease expires at the earliest (time.monotonic()).
        self.deadline = time.monotonic() + ttl_ms / 1000.0

    def commit(self, parent: Optional[bytes] = None, durable: bool = False, timeout: Optional[float] = None) -> None:
        """Publishes the block written into view."""
        self.view = None
        self._s._call(self._s._c._stub.CommitSlot, pb.CommitSlotRequest(
            session_id=self._s.id, lease_id=self.lease_id, parent_hash=parent or b"", durable=durable), timeout)

    def abort(self, timeout: Optional[float] = None) -> None:
        """Drops the reservation."""
        self.view = None
        self._s._call(self._s._c._stub.AbortSlot,
                      pb.AbortSlotRequest(session_id=self._s.id, lease_id=self.lease_id), timeout)


class Pinned:
    """A block pinned in the arena: view holds its bytes, read-only by
    convention, valid until release()."""

    def __init__(self, sess: "Session", resp: pb.PinBlockResponse, start: float):
        self._s = sess
        self.lease_id = resp.lease_id
        self.offset = resp.slot.offset
        self.generation = resp.slot.generation
        #: The block's layout.
        self.layout = Layout.from_pb(resp.layout)
        #: The fastest tier that held the block when it was pinned.
        self.tier = Tier.from_pb(getattr(resp, "from"))
        #: The block's bytes in the arena (uint8 numpy view).
        self.view: Optional[np.ndarray] = sess._view(resp.slot.offset, resp.slot.length)
        #: When the lease expires at the earliest (time.monotonic()).
        self.deadline = start + resp.lease_ttl_ms / 1000.0
        self._released = False
        self._lock = threading.Lock()  # serializes renewal and release of this pin
        self._key: Optional[pb.Key] = None
        self._ttl_ms = 0
        self._start = start

    def release(self, timeout: Optional[float] = None) -> None:
        """Drops the pin and confirms it was still held: after it returns,
        what was read from view is the block's. Raises FailedPrecondition
        when the lease had expired."""
        self.view = None
        self._s._forget_pin(self)
        with self._lock:
            if self._released:
                return
            self._released = True
            self._s._call(self._s._c._stub.Release,
                          pb.ReleaseRequest(session_id=self._s.id, lease_ids=[self.lease_id]), timeout)

    def __enter__(self) -> "Pinned":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class Session:
    """A shared-memory session. Open it with Client.attach(); safe for use
    from several threads. close() (or process exit) releases everything it
    holds.

    Pins held with pin() are renewed in the background: before a pin's
    lease runs out the session pins the block again (the block never becomes
    unpinned in between) and drops the old lease. The daemon has no renewal
    call for reservations: ask for a lease long enough for the write
    (reserve(ttl_ms=...)).
    """

    def __init__(self, client: "Client", name: str = "kvtier-python", timeout: Optional[float] = None):
        self._c = client
        self._timeout = timeout if timeout is not None else client.timeout
        self._call_obj = client._stub.Attach(pb.AttachRequest(client_name=name), metadata=client._md)
        try:
            first = next(self._call_obj)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        s = first.session
        if not s.session_id:
            self._call_obj.cancel()
            raise KVTierError("kvtier: Attach answered without a session", grpc.StatusCode.INTERNAL)
        self.id: bytes = s.session_id
        self.arena_bytes: int = s.arena_bytes
        self.default_lease_ttl_ms: int = s.default_lease_ttl_ms
        self.max_lease_ttl_ms: int = s.max_lease_ttl_ms
        self.max_leases: int = s.max_leases
        try:
            fd = _recv_arena_fd(s.fd_socket, s.fd_token, self._timeout or 10.0)
        except (OSError, KVTierError) as e:
            self._call_obj.cancel()
            raise KVTierError(f"kvtier: receiving the arena descriptor: {e}", grpc.StatusCode.INTERNAL) from None
        try:
            if os.fstat(fd).st_size < self.arena_bytes:
                raise KVTierError("kvtier: arena file smaller than the session says", grpc.StatusCode.INTERNAL)
            self._mm = mmap.mmap(fd, self.arena_bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            self._call_obj.cancel()
            raise
        finally:
            os.close(fd)
        self._arena = np.frombuffer(self._mm, dtype=np.uint8)
        self._mu = threading.Lock()  # protects the fields below
        self._closed = False
        self._end: Optional[BaseException] = None
        self.expired = 0  # leases the daemon reported expired
        self._no_pin_blocks = False  # the daemon has no PinBlocks: get_many pins one by one
        self._held: "dict[int, Pinned]" = {}  # pins renewed in the background, by id(Pinned)
        self._bg: "set[Any]" = set()  # calls not waited for (releases), until done
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="kvtier-attach", daemon=True)
        self._watcher.start()
        self._renewer = threading.Thread(target=self._renew, name="kvtier-renew", daemon=True)
        self._renewer.start()
        _live.add(self)

    # --- lifetime -------------------------------------------------------

    def _watch(self) -> None:
        try:
            for m in self._call_obj:
                with self._mu:
                    self.expired += len(m.expired_lease_ids)
            err: Optional[BaseException] = None
        except grpc.RpcError as e:
            err = from_rpc_error(e)
        with self._mu:
            self._closed = True
            self._end = err

    def _renew(self) -> None:
        while not self._stop.wait(0.05):
            now = time.monotonic()
            with self._mu:
                due = [p for p in self._held.values()
                       if p.deadline - now < (p.deadline - p._start) / 3]
            for p in due:
                try:
                    self._repin(p)
                except KVTierError:
                    pass  # the next release() reports a lost lease

    def _repin(self, p: Pinned) -> None:
        with p._lock:
            if not p._released:
                self._repin_locked(p)

    def _repin_locked(self, p: Pinned) -> None:
        start = time.monotonic()
        resp = self._call(self._c._stub.PinBlock, pb.PinBlockRequest(
            session_id=self.id, key=p._key, lease_ttl_ms=p._ttl_ms, release_lease_ids=[p.lease_id]), None)
        if resp.slot.offset != p.offset or resp.slot.generation != p.generation:
            # Cannot happen while the old pin held the block; be safe anyway.
            self._call(self._c._stub.Release, pb.ReleaseRequest(session_id=self.id, lease_ids=[resp.lease_id]), None)
            raise KVTierError("kvtier: block moved during renewal", grpc.StatusCode.INTERNAL)
        p.lease_id = resp.lease_id
        p._start = start
        p.deadline = start + resp.lease_ttl_ms / 1000.0

    def _background(self, f: Any) -> None:
        # grpc cancels a call whose future is garbage-collected before it
        # ends: keep a reference until it is done.
        with self._mu:
            self._bg.add(f)
        f.add_done_callback(self._bg_done)

    def _bg_done(self, f: Any) -> None:
        with self._mu:
            self._bg.discard(f)

    def _forget_pin(self, p: Pinned) -> None:
        with self._mu:
            self._held.pop(id(p), None)

    def close(self) -> None:
        """Ends the session: the daemon releases or aborts every lease it
        still holds, and the arena is unmapped. Views into the arena must not
        be used afterwards. Closing twice is harmless."""
        with self._mu:
            if self._mm is None:
                return
            self._closed = True
            self._held.clear()
            bg = list(self._bg)
        for f in bg:  # let pending releases land (the session end drops the rest)
            try:
                f.result(timeout=1)
            except Exception:  # noqa: BLE001 - best effort
                pass
        self._stop.set()
        self._call_obj.cancel()
        self._watcher.join(timeout=5)
        self._renewer.join(timeout=5)
        self._arena = None  # type: ignore[assignment]
        mm, self._mm = self._mm, None
        try:
            mm.close()
        except BufferError:
            # A caller still holds a view: leave the mapping to the garbage
            # collector; the session itself is over.
            pass
        _live.discard(self)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether the session has ended (closed, or the daemon ended it)."""
        with self._mu:
            return self._closed

    def _check(self) -> None:
        with self._mu:
            if self._closed:
                raise SessionClosed(f"kvtier: shared-memory session closed{': ' + str(self._end) if self._end else ''}")

    def _call(self, method: Any, req: Any, timeout: Optional[float]) -> Any:
        try:
            return method(req, timeout=timeout if timeout is not None else self._timeout, metadata=self._c._md)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def _view(self, offset: int, length: int) -> np.ndarray:
        if offset > self.arena_bytes or length > self.arena_bytes - offset:
            raise KVTierError(f"kvtier: slot [{offset}, +{length}) outside the {self.arena_bytes}-byte arena",
                              grpc.StatusCode.INTERNAL)
        return self._arena[offset:offset + length]

    # --- puts -------------------------------------------------------------

    def reserve(self, hash: bytes, layout: Layout, *, layer: int = -1, namespace: Optional[str] = None,
                ttl_ms: int = 0, timeout: Optional[float] = None) -> Reservation:
        """Reserves room for a block; write reservation.view, then commit()."""
        self._check()
        resp = self._call(self._c._stub.ReserveSlot, pb.ReserveSlotRequest(
            session_id=self.id, key=self._c._key(hash, layer, namespace), layout=layout.to_pb(),
            lease_ttl_ms=ttl_ms), timeout)
        self._view(resp.slot.offset, resp.slot.length)
        return Reservation(self, resp.lease_id, resp.slot.offset, resp.slot.length, resp.lease_ttl_ms)

    def put_many(self, hashes: Sequence[bytes], datas: Sequence[Any], layout: Layout, *, layer: int = -1,
                 namespace: Optional[str] = None, parents: Optional[Sequence[Optional[bytes]]] = None,
                 durable: bool = False, timeout: Optional[float] = None) -> None:
        """Stores blocks through the arena, BATCH at a time: reserve them
        (blocks already cached are only refreshed), copy each in place,
        commit them. Stops at the first batch with an error and raises it."""
        self._check()
        if len(hashes) != len(datas):
            raise ValueError("kvtier: put_many needs as many buffers as hashes")
        views = [as_u8(d) for d in datas]
        for v in views:
            if v.nbytes != layout.nbytes:
                raise ValueError(f"kvtier: {v.nbytes} bytes given, the layout needs {layout.nbytes}")
        for i in range(0, len(hashes), BATCH):
            self._put_batch(hashes[i:i + BATCH], views[i:i + BATCH], layout, layer, namespace,
                            parents[i:i + BATCH] if parents else None, durable, timeout)

    def _put_batch(self, hashes: Sequence[bytes], views: List[np.ndarray], layout: Layout, layer: int,
                   namespace: Optional[str], parents: Optional[Sequence[Optional[bytes]]], durable: bool,
                   timeout: Optional[float]) -> None:
        t = timeout if timeout is not None else self._timeout
        lpb = layout.to_pb()
        stub, md = self._c._stub, self._c._md
        futs = [stub.ReserveSlot.future(pb.ReserveSlotRequest(
            session_id=self.id, key=self._c._key(h, layer, namespace), layout=lpb, skip_if_cached=True,
            durable=durable), timeout=t, metadata=md) for h in hashes]
        commits, first_err = [], None
        for i, f in enumerate(futs):
            try:
                r = f.result()
            except grpc.RpcError as e:
                first_err = first_err or from_rpc_error(e)
                continue
            if r.already_cached:
                continue
            if first_err is not None:
                commits.append(stub.AbortSlot.future(pb.AbortSlotRequest(session_id=self.id, lease_id=r.lease_id),
                                                     timeout=t, metadata=md))
                continue
            np.copyto(self._view(r.slot.offset, r.slot.length), views[i])
            commits.append(stub.CommitSlot.future(pb.CommitSlotRequest(
                session_id=self.id, lease_id=r.lease_id, parent_hash=(parents[i] if parents else None) or b"",
                durable=durable), timeout=t, metadata=md))
        for f in commits:
            try:
                f.result()
            except grpc.RpcError as e:
                first_err = first_err or from_rpc_error(e)
        if first_err is not None:
            raise first_err

    # --- gets -------------------------------------------------------------

    def pin(self, hash: bytes, *, layer: int = -1, namespace: Optional[str] = None, ttl_ms: int = 0,
            renew: bool = True, timeout: Optional[float] = None) -> Pinned:
        """Pins a block and returns its bytes in place. With renew, the pin
        is renewed in the background until release()."""
        self._check()
        start = time.monotonic()
        key = self._c._key(hash, layer, namespace)
        resp = self._call(self._c._stub.PinBlock, pb.PinBlockRequest(session_id=self.id, key=key,
                                                                     lease_ttl_ms=ttl_ms), timeout)
        p = Pinned(self, resp, start)
        p._key, p._ttl_ms = key, ttl_ms
        if renew:
            with self._mu:
                self._held[id(p)] = p
        return p

    def get_many(self, hashes: Sequence[bytes], outs: Sequence[Any], *, layer: int = -1,
                 namespace: Optional[str] = None, timeout: Optional[float] = None) -> List[Optional[KVTierError]]:
        """Copies blocks into caller buffers (numpy arrays, torch CPU
        tensors, bytearrays; each exactly the block's size). Returns one entry
        per block: None when it was copied, else the error (NotFound for a
        block not cached). Up to PIN_BLOCKS_MAX blocks are pinned by one
        PinBlocks call under one lease, released in the background once the
        copies are done (a daemon without PinBlocks gets one PinBlock per
        block, taken concurrently)."""
        self._check()
        if len(hashes) != len(outs):
            raise ValueError("kvtier: get_many needs as many buffers as hashes")
        dsts = [writable_u8(o) for o in outs]
        if not self._no_pin_blocks:
            errs: List[Optional[KVTierError]] = [None] * len(hashes)
            try:
                for lo in range(0, len(hashes), PIN_BLOCKS_MAX):
                    hi = min(lo + PIN_BLOCKS_MAX, len(hashes))
                    errs[lo:hi] = self._pin_blocks(hashes[lo:hi], dsts[lo:hi], layer, namespace, timeout)
                return errs
            except KVTierError as e:
                if e.code != grpc.StatusCode.UNIMPLEMENTED or lo > 0:
                    raise
                self._no_pin_blocks = True
        return self._get_each(hashes, dsts, layer, namespace, timeout)

    def _pin_blocks(self, hashes: Sequence[bytes], dsts: List[np.ndarray], layer: int, namespace: Optional[str],
                    timeout: Optional[float]) -> List[Optional[KVTierError]]:
        t = timeout if timeout is not None else self._timeout
        stub, md = self._c._stub, self._c._md
        key = self._c._key
        start = time.monotonic()
        r = self._call(stub.PinBlocks, pb.PinBlocksRequest(
            session_id=self.id, keys=[key(h, layer, namespace) for h in hashes]), timeout)
        if len(r.entries) != len(hashes):
            if r.lease_id:
                self._background(stub.Release.future(pb.ReleaseRequest(session_id=self.id, lease_ids=[r.lease_id]),
                                                     timeout=t, metadata=md))
            raise KVTierError(f"kvtier: PinBlocks answered {len(r.entries)} entries for {len(hashes)} keys",
                              grpc.StatusCode.INTERNAL)
        errs: List[Optional[KVTierError]] = [None] * len(hashes)
        arena, size = self._arena, self.arena_bytes
        for i, e in enumerate(r.entries):
            if e.code:
                errs[i] = from_code(e.code, e.message)
                continue
            off, n = e.slot.offset, e.slot.length
            if n != dsts[i].nbytes:
                errs[i] = from_code(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"kvtier: buffer {i} has {dsts[i].nbytes} bytes, the block {n}")
                continue
            if off > size or n > size - off:
                errs[i] = KVTierError(f"kvtier: slot [{off}, +{n}) outside the {size}-byte arena",
                                      grpc.StatusCode.INTERNAL)
                continue
            np.copyto(dsts[i], arena[off:off + n])
        if r.lease_id:
            req = pb.ReleaseRequest(session_id=self.id, lease_ids=[r.lease_id])
            if time.monotonic() - start < r.lease_ttl_ms / 1000.0 * 0.75:
                # Every copy ended well inside the lease: the bytes are the
                # blocks'; release without waiting.
                self._background(stub.Release.future(req, timeout=t, metadata=md))
            else:
                try:
                    stub.Release(req, timeout=t, metadata=md)
                except grpc.RpcError as ex:
                    err = from_rpc_error(ex)
                    errs = [e0 if e0 is not None or r.entries[i].code else err for i, e0 in enumerate(errs)]
        return errs

    def _get_each(self, hashes: Sequence[bytes], dsts: List[np.ndarray], layer: int, namespace: Optional[str],
                  timeout: Optional[float]) -> List[Optional[KVTierError]]:
        t = timeout if timeout is not None else self._timeout
        stub, md = self._c._stub, self._c._md
        start = time.monotonic()
        futs = [stub.PinBlock.future(pb.PinBlockRequest(session_id=self.id, key=self._c._key(h, layer, namespace)),
                                     timeout=t, metadata=md) for h in hashes]
        errs: List[Optional[KVTierError]] = [None] * len(hashes)
        leases, min_ttl = [], None
        for i, f in enumerate(futs):
            try:
                r = f.result()
            except grpc.RpcError as e:
                errs[i] = from_rpc_error(e)
                continue
            leases.append(r.lease_id)
            min_ttl = r.lease_ttl_ms if min_ttl is None else min(min_ttl, r.lease_ttl_ms)
            if r.slot.length != dsts[i].nbytes:
                errs[i] = from_code(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"kvtier: buffer {i} has {dsts[i].nbytes} bytes, the block {r.slot.length}")
                continue
            np.copyto(dsts[i], self._view(r.slot.offset, r.slot.length))
        if leases:
            req = pb.ReleaseRequest(session_id=self.id, lease_ids=leases)
            if time.monotonic() - start < (min_ttl or 0) / 1000.0 * 0.75:
                # Every copy ended well inside its lease: the bytes are the
                # blocks'; release without waiting.
                self._background(stub.Release.future(req, timeout=t, metadata=md))
            else:
                try:
                    stub.Release(req, timeout=t, metadata=md)
                except grpc.RpcError as e:
                    err = from_rpc_error(e)
                    errs = [e0 if e0 is not None else err for e0 in errs]
        return errs
