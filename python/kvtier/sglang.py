"""kvtier as SGLang's HiCache storage backend (L3, below SGLang's host pool).

Load it as SGLang's ``dynamic`` backend::

    --enable-hierarchical-cache --hicache-storage-backend dynamic
    --hicache-storage-backend-extra-config '{"backend_name": "kvtier",
        "module_path": "kvtier.sglang", "class_name": "KVTierStorage",
        "socket": "/run/kvtier.sock", "namespace": "llama-3-8b"}'

Read from SGLang's sources (python/sglang/srt/mem_cache/hicache_storage.py,
storage/backend_factory.py, managers/cache_controller.py): the factory calls
``KVTierStorage(storage_config, kwargs)``, HiCache then registers its host
pool with ``register_mem_pool_host``, stores pages with ``batch_exists`` +
``batch_set_v1`` and prefetches them with ``batch_exists`` + ``batch_get_v1``.

Each SGLang page (one key: SGLang's hex SHA-256 of the page's prefix) is
one kvtier block holding the page exactly as the host pool's flat page
holds it; its Layout carries the dtype and the size only. Keys that are 64
hex digits are used as the 32-byte hash; other keys are SHA-256 hashed.
The namespace is extra_config's "namespace" (default: the model name),
with the tensor/pipeline rank appended as SGLang's file backend does, since
each rank holds a different slice of every page.

Not supported (they raise NotImplementedError): the v2 pool-transfer
calls (batch_exists_v2, batch_get_v2, batch_set_v2), used by hybrid models.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, List, Optional

import numpy as np

from kvtier.client import Client
from kvtier.errors import KVTierError, NotFound
from kvtier.types import DTYPE_SIZES, Layout, dtype_name

try:  # SGLang installed: a real HiCacheStorage subclass, as its factory checks.
    from sglang.srt.mem_cache.hicache_storage import HiCacheStorage as _Base
except ImportError:  # pragma: no cover - exercised where SGLang is absent
    class _Base:  # type: ignore[no-redef]
        """Stand-in for sglang's HiCacheStorage where SGLang is not installed."""

        def register_mem_pool_host(self, mem_pool_host: Any) -> None:
            self.mem_pool_host = mem_pool_host

        def batch_exists_v2(self, *a: Any, **k: Any) -> Any:
            raise NotImplementedError("kvtier: batch_exists_v2 is not supported")

        def batch_get_v2(self, *a: Any, **k: Any) -> Any:
            raise NotImplementedError("kvtier: batch_get_v2 is not supported")

        def batch_set_v2(self, *a: Any, **k: Any) -> Any:
            raise NotImplementedError("kvtier: batch_set_v2 is not supported")

__all__ = ["KVTierStorage", "layout_for_bytes", "key_hash"]

_NS_BAD = re.compile(r"[^A-Za-z0-9._:/@-]")


def key_hash(key: str) -> bytes:
    """The kvtier hash of an SGLang key: the 32 bytes of a 64-digit hex key,
    else SHA-256 of the key."""
    if len(key) == 64:
        try:
            return bytes.fromhex(key)
        except ValueError:
            pass
    return hashlib.sha256(key.encode()).digest()


def layout_for_bytes(nbytes: int, dtype: Any) -> Layout:
    """A Layout of dtype whose size is nbytes, for opaque pages: elements
    are factored as 2 x kv_heads x tokens x head_dim within the daemon's
    limits. Raises ValueError when nbytes cannot be described."""
    name = dtype_name(dtype)
    size = DTYPE_SIZES[name]
    if nbytes <= 0 or nbytes % (2 * size):
        raise ValueError(f"kvtier: a page of {nbytes} bytes is not 2 x whole {name} elements")
    rest = nbytes // (2 * size)
    dims = []
    for limit in (4096, 65536, 1024):  # head_dim, tokens, kv_heads
        d = next((d for d in range(min(limit, rest), 0, -1) if rest % d == 0), 1)
        dims.append(d)
        rest //= d
    if rest != 1:
        raise ValueError(f"kvtier: a page of {nbytes} bytes has no kvtier layout")
    return Layout(name, kv_heads=dims[2], head_dim=dims[0], tokens=dims[1])


class KVTierStorage(_Base):
    """A HiCacheStorage backed by a kvtier daemon (see the module docs).

    Args:
        storage_config: SGLang's HiCacheStorageConfig (tp/pp ranks, model
            name, extra_config with "socket" or "addr", "namespace",
            "token", "timeout").
        kwargs: what SGLang's factory passes; unused.
        client: a kvtier.Client to use instead of one from extra_config.
    """

    def __init__(self, storage_config: Any = None, kwargs: Optional[dict] = None, *,
                 client: Optional[Client] = None, namespace: Optional[str] = None):
        extra = dict(getattr(storage_config, "extra_config", None) or {})
        self.client = client or Client.from_config(extra)
        ns = namespace or extra.get("namespace") or getattr(storage_config, "model_name", None) or "sglang"
        if storage_config is not None and not getattr(storage_config, "is_mla_model", False):
            ns += f":tp{storage_config.tp_rank}of{storage_config.tp_size}"
        if storage_config is not None and getattr(storage_config, "pp_size", 1) > 1:
            ns += f":pp{storage_config.pp_rank}of{storage_config.pp_size}"
        self.namespace = _NS_BAD.sub("-", ns)[:128]
        self.mem_pool_host: Any = None
        self._layout: Optional[Layout] = None

    # --- helpers ------------------------------------------------------------

    def _page_layout(self, value: Any = None) -> Layout:
        if self._layout is None:
            if value is None:
                if self.mem_pool_host is None:
                    raise RuntimeError("kvtier: no host pool registered and no value to size the page by")
                value = self.mem_pool_host.get_dummy_flat_data_page()
            self._layout = layout_for_bytes(value.numel() * value.element_size(), value.dtype)
        return self._layout

    def _pages(self, host_indices: Any, n: int) -> List[int]:
        ps = int(getattr(self.mem_pool_host, "page_size", 1) or 1)
        if host_indices is None or host_indices.numel() != n * ps:
            raise ValueError(f"kvtier: {n} keys need {n * ps} host indices, got "
                             f"{0 if host_indices is None else host_indices.numel()}")
        return [int(i) for i in host_indices[::ps].tolist()]

    # --- HiCacheStorage ---------------------------------------------------------

    def get(self, key: str, target_location: Any = None, target_sizes: Any = None) -> Any:
        """Reads one page into target_location (a tensor of the page's size)
        and returns it; None when the page is not stored."""
        if target_location is None:
            raise ValueError("kvtier: get needs a target_location tensor")
        err = self.client.get_many([key_hash(key)], [target_location], namespace=self.namespace)[0]
        if isinstance(err, NotFound):
            return None
        if err is not None:
            raise err
        return target_location

    def batch_get(self, keys: List[str], target_locations: Any = None, target_sizes: Any = None) -> List[Any]:
        """Reads pages into target_locations; None for each page not stored."""
        if target_locations is None or len(target_locations) != len(keys):
            raise ValueError("kvtier: batch_get needs one target tensor per key")
        errs = self.client.get_many([key_hash(k) for k in keys], list(target_locations), namespace=self.namespace)
        out = []
        for t, e in zip(target_locations, errs):
            if e is not None and not isinstance(e, NotFound):
                raise e
            out.append(t if e is None else None)
        return out

    def set(self, key: str, value: Any = None, target_location: Any = None, target_sizes: Any = None) -> bool:
        """Stores one page (value: a CPU tensor). False when the daemon refused it."""
        return self.batch_set([key], [value])

    def batch_set(self, keys: List[str], values: Any = None, target_locations: Any = None,
                  target_sizes: Any = None) -> bool:
        """Stores pages; True when every page was stored."""
        if values is None or len(values) != len(keys):
            raise ValueError("kvtier: batch_set needs one value per key")
        if not keys:
            return True
        try:
            self.client.put_many([key_hash(k) for k in keys], list(values), self._page_layout(values[0]),
                                 namespace=self.namespace, chain=False)
        except KVTierError:
            return False
        return True

    def exists(self, key: str) -> bool:
        """Whether the page is stored."""
        return self.batch_exists([key]) == 1

    def batch_exists(self, keys: List[str], extra_info: Any = None) -> int:
        """The number of leading keys stored (one Lookup)."""
        if not keys:
            return 0
        return self.client.lookup([key_hash(k) for k in keys], namespace=self.namespace).cached_blocks

    def batch_get_v1(self, keys: List[str], host_indices: Any, extra_info: Any = None) -> List[bool]:
        """Reads pages straight into the registered host pool at host_indices
        (one page per key, page_size indices each). Per-key success."""
        if not keys:
            return []
        pages = self._pages(host_indices, len(keys))
        pool = self.mem_pool_host
        dummy = pool.get_dummy_flat_data_page()
        # One staging buffer for the batch; each page is then set into the pool.
        stage = np.empty((len(keys), dummy.numel() * dummy.element_size()), np.uint8)
        errs = self.client.get_many([key_hash(k) for k in keys], list(stage), namespace=self.namespace)
        import torch

        ok = []
        for i, (page, e) in enumerate(zip(pages, errs)):
            if e is None:
                pool.set_from_flat_data_page(page, torch.from_numpy(stage[i]).view(dummy.dtype))
            ok.append(e is None)
        return ok

    def batch_set_v1(self, keys: List[str], host_indices: Any, extra_info: Any = None) -> List[bool]:
        """Stores the host pool's pages at host_indices (one page per key);
        a page the pool holds contiguously is read in place. Per-key success."""
        if not keys:
            return []
        pages = self._pages(host_indices, len(keys))
        datas = [self.mem_pool_host.get_data_page(p, flat=True) for p in pages]
        hashes = [key_hash(k) for k in keys]
        try:
            self.client.put_many(hashes, datas, self._page_layout(datas[0]), namespace=self.namespace, chain=False)
            return [True] * len(keys)
        except KVTierError:
            pass
        ok = []  # something failed: find out which, page by page
        for h, d in zip(hashes, datas):
            try:
                self.client.put(h, d, self._page_layout(d), namespace=self.namespace)
                ok.append(True)
            except KVTierError:
                ok.append(False)
        return ok

    def clear(self) -> None:
        """Not supported: kvtier evicts by itself; raises NotImplementedError."""
        raise NotImplementedError("kvtier: clear is not supported (the daemon evicts by itself)")

    def get_stats(self) -> Any:
        """The daemon's StatsResponse."""
        return self.client.stats()

    def close(self) -> None:
        """Closes the client."""
        self.client.close()
