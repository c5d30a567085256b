"""KVTierTier: kvtier as a secondary tier of vLLM's OffloadingConnector.

vLLM's tiered offloading (vllm/v1/kv_offload/tiering/: base.py's
SecondaryTierManager, factory.py's SecondaryTierFactory) keeps its own
GPU<->CPU copies; the CPU tier (the "primary") then cascades blocks to
secondary tiers and promotes them back. KVTierTier is such a tier: what
spills from vLLM's CPU tier goes to kvtier, so it survives the engine and is
shared with other engines on the host.

Every method runs on vLLM's scheduler thread and returns at once:
lookup answers from what it knows and otherwise starts a Lookup in the
background and answers "retry"; submit_store and submit_load run their
transfers on worker threads; get_finished (get_finished_jobs) reports the
jobs done since the last call. Blocks move between vLLM's primary slots
(rows of primary_kv_view) and kvtier without an extra copy.

Register it once per process (kvtier.vllm_tier.register_tier(), also
installed as a vllm.general_plugins entry point) and name it in the
offloading config's tiers: {"type": "kvtier", "socket": "...",
"namespace": "..."}.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterable, List, Optional

import numpy as np

from kvtier.client import Client
from kvtier.errors import KVTierError
from kvtier.sglang import layout_for_bytes

log = logging.getLogger("kvtier.vllm")

try:
    from vllm.v1.kv_offload.tiering.base import JobResult, SecondaryTierManager  # type: ignore
except ImportError:
    import dataclasses

    @dataclasses.dataclass
    class JobResult:  # type: ignore[no-redef]
        """vLLM's JobResult."""

        job_id: int
        success: bool

    class SecondaryTierManager:  # type: ignore[no-redef]
        """Stand-in for vLLM's SecondaryTierManager where vLLM is absent."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

try:
    from vllm.v1.kv_offload.base import LookupResult  # type: ignore
    _HIT, _MISS, _RETRY = LookupResult.HIT, LookupResult.MISS, LookupResult.RETRY
except (ImportError, AttributeError):
    _HIT, _MISS, _RETRY = True, False, None

__all__ = ["KVTierTier", "register_tier", "TIER_TYPE"]

#: The tier's type name in vLLM's offloading config.
TIER_TYPE = "kvtier"
#: How long a miss is believed before the daemon is asked again (seconds).
MISS_TTL = 1.0


def register_tier() -> None:
    """Registers KVTierTier with vLLM's SecondaryTierFactory as "kvtier"
    (a no-op without vLLM, or when already registered)."""
    try:
        from vllm.v1.kv_offload.tiering.factory import SecondaryTierFactory  # type: ignore
    except ImportError:
        return
    try:
        SecondaryTierFactory.register_tier(TIER_TYPE, "kvtier.vllm_tier", "KVTierTier")
    except ValueError:
        pass


def _hash(key: Any) -> bytes:
    b = getattr(key, "block_hash", key)
    if isinstance(b, (bytes, bytearray, memoryview)) and len(b) in (16, 32):
        return bytes(b)
    return hashlib.sha256(repr(key).encode() if not isinstance(b, (bytes, bytearray)) else bytes(b)).digest()


class KVTierTier(SecondaryTierManager):
    """A SecondaryTierManager backed by a kvtier daemon (see the module docs).

    Args:
        primary_kv_view: vLLM's CPU tier: a memoryview whose row i (or
            bytes [i*block_bytes, (i+1)*block_bytes)) is primary block i.
        socket / addr / token / namespace / timeout: the daemon and the
            namespace of the blocks.
        block_bytes: the size of a primary block, when primary_kv_view is flat.
        client: a kvtier.Client to use instead.
    """

    def __init__(self, vllm_config: Any = None, primary_kv_view: Any = None, tier_type: str = TIER_TYPE, *,
                 offloading_spec: Any = None, socket: Optional[str] = None, addr: Optional[str] = None,
                 token: Optional[str] = None, namespace: Optional[str] = None, timeout: float = 30.0,
                 block_bytes: Optional[int] = None, workers: int = 2, client: Optional[Client] = None,
                 **_ignored: Any):
        try:
            super().__init__(vllm_config=vllm_config, primary_kv_view=primary_kv_view)
        except TypeError:  # another version of the base class
            super().__init__(offloading_spec=offloading_spec, primary_kv_view=primary_kv_view,
                             tier_type=tier_type)
        if primary_kv_view is None:
            raise ValueError("kvtier: KVTierTier needs the primary tier's memory (primary_kv_view)")
        arr = np.asarray(primary_kv_view).view(np.uint8)
        if arr.ndim == 1:
            if not block_bytes or arr.size % block_bytes:
                raise ValueError("kvtier: a flat primary_kv_view needs block_bytes dividing its size")
            arr = arr.reshape(-1, block_bytes)
        self._primary = arr.reshape(arr.shape[0], -1)
        self._layout = layout_for_bytes(self._primary.shape[1], "fp8")
        self.tier_type = tier_type
        self.client = client or Client.from_config(
            {"socket": socket, "addr": addr, "token": token, "timeout": timeout})
        model = getattr(getattr(vllm_config, "model_config", None), "model", None)
        self.namespace = namespace or (str(model).replace(" ", "-") if model else "vllm-offload")
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kvtier-tier")
        self._mu = threading.Lock()  # protects the fields below
        self._hits: Dict[bytes, bool] = {}  # known present
        self._misses: Dict[bytes, float] = {}  # known absent, since
        self._pending: Dict[bytes, bool] = {}  # lookups in flight
        self._done: List[Any] = []  # finished JobResults
        self._inflight: List[Any] = []  # futures of jobs

    @staticmethod
    def get_tier_type() -> str:
        """The tier's type name: "kvtier"."""
        return TIER_TYPE

    # --- lookups -------------------------------------------------------------

    def lookup(self, key: Any, req_context: Any = None) -> Any:
        """HIT (True) when kvtier holds the block, MISS (False) when it does
        not, RETRY (None) while a background Lookup is in flight."""
        h = _hash(key)
        with self._mu:
            if self._hits.get(h):
                return _HIT
            t = self._misses.get(h)
            if t is not None and time.monotonic() - t < MISS_TTL:
                return _MISS
            if h in self._pending:
                return _RETRY
            self._pending[h] = True
        self._pool.submit(self._lookup_bg, h)
        return _RETRY

    def _lookup_bg(self, h: bytes) -> None:
        try:
            hit = self.client.lookup([h], namespace=self.namespace).cached_blocks == 1
        except KVTierError as e:
            log.warning("kvtier: lookup failed: %s", e)
            hit = False
        with self._mu:
            self._pending.pop(h, None)
            if hit:
                self._hits[h] = True
                self._misses.pop(h, None)
            else:
                self._misses[h] = time.monotonic()

    def touch(self, keys: Any, req_context: Any = None) -> None:
        """Nothing to do: the daemon keeps its own recency on every access."""
        return

    # --- transfers -------------------------------------------------------------

    def _submit(self, fn: Any, job: Any) -> None:
        keys = list(job.keys if hasattr(job, "keys") else job.block_hashes)
        ids = [int(b) for b in np.asarray(job.block_ids).reshape(-1)]
        if len(keys) != len(ids):
            with self._mu:
                self._done.append(JobResult(job_id=job.job_id, success=False))
            return
        f = self._pool.submit(fn, job.job_id, [_hash(k) for k in keys], ids)
        with self._mu:
            self._inflight.append(f)

    def submit_store(self, job_metadata: Any) -> None:
        """Starts copying primary blocks job_metadata.block_ids into kvtier
        (blocks it already holds are only refreshed)."""
        self._submit(self._store, job_metadata)

    def _store(self, job_id: int, hashes: List[bytes], ids: List[int]) -> None:
        ok = True
        try:
            self.client.put_many(hashes, [self._primary[i] for i in ids], self._layout, namespace=self.namespace,
                                 chain=False)
        except KVTierError as e:
            log.warning("kvtier: store job %d failed: %s", job_id, e)
            ok = False
        with self._mu:
            if ok:
                for h in hashes:
                    self._hits[h] = True
                    self._misses.pop(h, None)
            self._done.append(JobResult(job_id=job_id, success=ok))

    def submit_load(self, job_metadata: Any) -> None:
        """Starts copying blocks from kvtier into primary slots
        job_metadata.block_ids."""
        self._submit(self._load, job_metadata)

    def _load(self, job_id: int, hashes: List[bytes], ids: List[int]) -> None:
        try:
            errs = self.client.get_many(hashes, [self._primary[i] for i in ids], namespace=self.namespace)
            ok = all(e is None for e in errs)
        except KVTierError as e:
            log.warning("kvtier: load job %d failed: %s", job_id, e)
            errs, ok = [e] * len(hashes), False
        with self._mu:
            for h, e in zip(hashes, errs):
                if e is not None:
                    self._hits.pop(h, None)
            self._done.append(JobResult(job_id=job_id, success=ok))

    def get_finished(self) -> Iterable[Any]:
        """The JobResults of jobs finished since the last call."""
        with self._mu:
            d, self._done = self._done, []
            self._inflight = [f for f in self._inflight if not f.done()]
        return d

    get_finished_jobs = get_finished

    def drain_jobs(self) -> None:
        """Waits until every submitted job has finished (results stay queued
        for get_finished)."""
        with self._mu:
            fs = list(self._inflight)
        for f in fs:
            f.result()

    def on_new_request(self, req_context: Any = None) -> Any:
        """Per-request context: kvtier needs none."""
        try:
            from vllm.v1.kv_offload.base import RequestOffloadingContext  # type: ignore

            return RequestOffloadingContext()
        except ImportError:
            return None

    def shutdown(self) -> None:
        """Waits for jobs and closes the client."""
        self._pool.shutdown(wait=True)
        self.client.close()
