"""kvtier for vLLM: a KV connector (KVTierConnector) and a secondary tier
for vLLM's OffloadingConnector (KVTierTier).

KVTierConnector is a KVConnectorBase_V1, loaded without patching vLLM::

    --kv-transfer-config '{"kv_connector": "KVTierConnector",
        "kv_connector_module_path": "kvtier.vllm", "kv_role": "kv_both",
        "kv_connector_extra_config": {"socket": "/run/kvtier.sock",
                                      "namespace": "llama-3-8b"}}'

Written from vLLM's sources (vllm/distributed/kv_transfer/kv_connector/v1/
base.py, offloading_connector.py, vllm/v1/kv_offload/), not tested against
a running vLLM: see docs/python.md.

Scheduler side: get_num_new_matched_tokens looks up the request's own
block hashes (request.block_hashes: vLLM's hashes, no re-hashing) with one
Lookup; update_state_after_alloc records which allocated blocks to load;
build_connector_meta tells the workers what to load and which blocks became
full this step and are to be saved (at most
request.num_publishable_block_hashes of them); request_finished forgets the
request (saves happen during the forward passes, so it never holds blocks).
take_events yields BlockStored events for blocks the workers saved (their
build_connector_worker_meta), medium "kvtier", so vLLM's KV event
publisher tells routers what kvtier holds.

Worker side: register_kv_caches (or register_cross_layers_kv_cache) names
each tensor's dimensions (kvtier.vllm_layout) from the attention backend or
the shape; start_load_kv starts loading every layer in the background;
wait_for_layer_load waits for one; save_kv_layer stores one layer's new
blocks in the background; wait_for_save waits for all. A block that fails
to load is reported by get_block_ids_with_load_errors, so vLLM recomputes
it. Blocks are stored one per layer (Key.layer = the layer index) in a
canonical order, so engines with different attention backends share them.

Configuration (kv_connector_extra_config): socket or addr, token,
namespace (default: the model name), timeout, load_threads. kv_role
kv_both loads and saves, kv_producer only saves, kv_consumer only loads.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import torch

from kvtier.client import Client
from kvtier.errors import KVTierError
from kvtier.hashing import event_id
from kvtier.vllm_layout import KVLayout, detect

log = logging.getLogger("kvtier.vllm")

try:
    from vllm.distributed.kv_transfer.kv_connector.v1.base import (  # type: ignore
        KVConnectorBase_V1, KVConnectorMetadata, KVConnectorRole)
except ImportError:  # vLLM is not installed: stand-ins with the same shape
    import enum

    class KVConnectorRole(enum.Enum):  # type: ignore[no-redef]
        """vLLM's KVConnectorRole."""

        SCHEDULER = 0
        WORKER = 1

    class KVConnectorMetadata:  # type: ignore[no-redef]
        """vLLM's KVConnectorMetadata."""

    class KVConnectorBase_V1:  # type: ignore[no-redef]
        """Stand-in for vLLM's KVConnectorBase_V1 where vLLM is absent."""

        def __init__(self, vllm_config: Any, role: Any, kv_cache_config: Any = None):
            self._vllm_config = vllm_config
            self._kv_transfer_config = vllm_config.kv_transfer_config
            self._kv_cache_config = kv_cache_config
            self._role = role
            self._connector_metadata = None

        @property
        def role(self) -> Any:
            return self._role

        def bind_connector_metadata(self, m: Any) -> None:
            self._connector_metadata = m

        def clear_connector_metadata(self) -> None:
            self._connector_metadata = None

        def _get_connector_metadata(self) -> Any:
            assert self._connector_metadata is not None
            return self._connector_metadata

try:
    from vllm.distributed.kv_events import BlockStored  # type: ignore
except ImportError:
    @dataclasses.dataclass
    class BlockStored:  # type: ignore[no-redef]
        """vLLM's BlockStored KV event (vllm/distributed/kv_events.py)."""

        block_hashes: List[int]
        parent_block_hash: Optional[int]
        token_ids: List[int]
        block_size: int
        lora_id: Optional[int]
        medium: Optional[str]

__all__ = ["KVTierConnector", "KVTierConnectorMetadata", "KVTierWorkerMeta", "KVTierTier", "BlockStored"]

MEDIUM = "kvtier"
_NS_BAD = re.compile(r"[^A-Za-z0-9._:/@-]")


@dataclasses.dataclass
class _Load:
    req_id: str
    block_ids: List[int]
    hashes: List[bytes]


@dataclasses.dataclass
class _Save:
    req_id: str
    block_ids: List[int]
    hashes: List[bytes]
    parent: Optional[bytes]
    token_ids: List[List[int]]


@dataclasses.dataclass
class KVTierConnectorMetadata(KVConnectorMetadata):
    """Scheduler -> worker: what to load and save in this step."""

    loads: List[_Load] = dataclasses.field(default_factory=list)
    saves: List[_Save] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class KVTierWorkerMeta:
    """Worker -> scheduler: the blocks saved in this step (for KV events)."""

    saved: List[Tuple[bytes, Optional[bytes], List[int]]] = dataclasses.field(default_factory=list)

    def aggregate(self, other: "KVTierWorkerMeta") -> "KVTierWorkerMeta":
        """Combines two workers' metadata (vLLM's aggregation)."""
        return KVTierWorkerMeta(self.saved + [s for s in other.saved if s not in self.saved])


def _layer_index(name: str, fallback: int) -> int:
    m = re.search(r"layers?\.(\d+)", name) or re.search(r"(\d+)", name)
    return int(m.group(1)) if m else fallback


class KVTierConnector(KVConnectorBase_V1):
    """vLLM KV connector backed by kvtier (see the module documentation)."""

    def __init__(self, vllm_config: Any, role: Any, kv_cache_config: Any = None, *, client: Optional[Client] = None):
        super().__init__(vllm_config, role, kv_cache_config)
        tc = vllm_config.kv_transfer_config
        extra = dict(getattr(tc, "kv_connector_extra_config", None) or {})
        self.client = client or Client.from_config(extra)
        model = getattr(getattr(vllm_config, "model_config", None), "model", None) or "vllm"
        self.namespace = _NS_BAD.sub("-", str(extra.get("namespace") or model))[:128]
        self.block_size = int(vllm_config.cache_config.block_size)
        # kv_both loads and saves; kv_producer only saves; kv_consumer only loads.
        role_name = str(getattr(tc, "kv_role", None) or "kv_both")
        self._loads_on = role_name != "kv_producer"
        self._saves_on = role_name != "kv_consumer"
        # Scheduler state.
        self._reqs: Dict[str, Any] = {}  # request id -> Request
        self._local: Dict[str, int] = {}  # request id -> locally computed tokens at lookup
        self._block_ids: Dict[str, List[int]] = {}  # request id -> its blocks
        self._saved: Dict[str, int] = {}  # request id -> blocks already saved
        self._loads: List[_Load] = []
        self._events: List[Any] = []
        # Worker state.
        self._caches: List[Tuple[int, torch.Tensor, KVLayout]] = []  # (layer, tensor, layout), by layer
        self._by_name: Dict[str, int] = {}  # layer name -> position in _caches
        self._pool = ThreadPoolExecutor(max_workers=int(extra.get("load_threads", 2)),
                                        thread_name_prefix="kvtier-vllm")
        self._load_futs: Dict[int, Future] = {}
        self._save_futs: List[Future] = []
        self._errors: Set[int] = set()
        self._mu = threading.Lock()  # protects _errors and _saved_meta
        self._saved_meta: List[Tuple[bytes, Optional[bytes], List[int]]] = []

    # ===================== scheduler side ====================================

    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> Tuple[int, bool]:
        """Tokens beyond num_computed_tokens whose blocks kvtier holds (one
        Lookup of the request's block hashes); loads are synchronous."""
        if not self._loads_on:
            return 0, False
        hashes = list(request.block_hashes)
        # vLLM must compute at least the last prompt token itself.
        usable = min(len(hashes), (request.num_tokens - 1) // self.block_size)
        start = num_computed_tokens // self.block_size
        # The external tokens follow the locally cached ones: remember where.
        self._local[request.request_id] = num_computed_tokens
        if usable <= start:
            return 0, False
        try:
            hit = self.client.lookup([bytes(h) for h in hashes[:usable]], layer=0,
                                     namespace=self.namespace).cached_blocks
        except KVTierError as e:
            log.warning("kvtier: lookup failed, computing instead: %s", e)
            return 0, False
        return max(0, hit * self.block_size - num_computed_tokens), False

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        """Records the request, and the blocks to load into when
        num_external_tokens > 0."""
        self._reqs[request.request_id] = request
        ids = list(blocks.get_block_ids()[0]) if blocks is not None else []
        if num_external_tokens <= 0:
            return
        # vLLM sets request.num_computed_tokens only after this call: the
        # load starts after the local prefix-cache hits seen by the lookup.
        first = self._local.pop(request.request_id, request.num_computed_tokens) // self.block_size
        n = num_external_tokens // self.block_size
        hashes = [bytes(h) for h in request.block_hashes[first:first + n]]
        self._loads.append(_Load(request.request_id, ids[first:first + n], hashes))

    def build_connector_meta(self, scheduler_output: Any) -> KVTierConnectorMetadata:
        """The step's loads, and the blocks that become full in this step
        (to be saved)."""
        meta = KVTierConnectorMetadata(loads=self._loads)
        self._loads = []
        steps: List[Tuple[str, int]] = []
        for r in getattr(scheduler_output, "scheduled_new_reqs", []):
            self._block_ids[r.req_id] = list(r.block_ids[0])
            self._saved.setdefault(r.req_id, r.num_computed_tokens // self.block_size)
            steps.append((r.req_id, r.num_computed_tokens))
        cached = getattr(scheduler_output, "scheduled_cached_reqs", None)
        if cached is not None:
            for i, rid in enumerate(cached.req_ids):
                nb = cached.new_block_ids[i]
                if nb is not None:
                    self._block_ids.setdefault(rid, []).extend(nb[0])
                steps.append((rid, cached.num_computed_tokens[i]))
        for rid, computed in steps:
            req = self._reqs.get(rid)
            if req is None or not self._saves_on:
                continue
            done = computed + scheduler_output.num_scheduled_tokens.get(rid, 0)
            publishable = getattr(req, "num_publishable_block_hashes", len(req.block_hashes))
            full = min(done // self.block_size, len(req.block_hashes), publishable, len(self._block_ids[rid]))
            have = self._saved.get(rid, 0)
            if full > have:
                toks = list(req.all_token_ids) if hasattr(req, "all_token_ids") else []
                meta.saves.append(_Save(
                    rid, self._block_ids[rid][have:full], [bytes(h) for h in req.block_hashes[have:full]],
                    bytes(req.block_hashes[have - 1]) if have else None,
                    [toks[i * self.block_size:(i + 1) * self.block_size] for i in range(have, full)]))
                self._saved[rid] = full
        return meta

    def update_connector_output(self, connector_output: Any) -> None:
        """Turns the blocks the workers saved into BlockStored events."""
        wm = getattr(connector_output, "kv_connector_worker_meta", None)
        if isinstance(wm, KVTierWorkerMeta):
            for h, parent, toks in wm.saved:
                self._events.append(BlockStored(block_hashes=[event_id(h)],
                                                parent_block_hash=event_id(parent) if parent else None,
                                                token_ids=toks, block_size=self.block_size, lora_id=None,
                                                medium=MEDIUM))

    def take_events(self) -> Iterable[Any]:
        """KV events since the last call (BlockStored, medium "kvtier")."""
        ev, self._events = self._events, []
        return ev

    def request_finished(self, request: Any, block_ids: List[int]) -> Tuple[bool, Optional[dict]]:
        """Forgets the request. Its publishable blocks were saved as they
        filled, so nothing is held: the blocks may be freed now."""
        rid = request.request_id
        for d in (self._reqs, self._block_ids, self._saved, self._local):
            d.pop(rid, None)
        return False, None

    # ===================== worker side =======================================

    def _model_dims(self) -> Tuple[int, int]:
        mc, pc = self._vllm_config.model_config, getattr(self._vllm_config, "parallel_config", None)
        return int(mc.get_num_kv_heads(pc)), int(mc.get_head_size())

    def _num_blocks(self) -> Optional[int]:
        return getattr(self._kv_cache_config, "num_blocks", None)

    def register_kv_caches(self, kv_caches: Dict[str, torch.Tensor], backends: Optional[Dict[str, Any]] = None
                           ) -> None:
        """Names each layer's KV tensor's dimensions (from its attention
        backend when given or found, else from its shape)."""
        heads, hsize = self._model_dims()
        backends = backends or self._find_backends(kv_caches)
        items = sorted(((_layer_index(n, i), n, t) for i, (n, t) in enumerate(kv_caches.items())))
        self._caches, self._by_name = [], {}
        for layer, name, t in items:
            lay = detect(t, num_blocks=self._num_blocks(), block_size=self.block_size, num_kv_heads=heads,
                         head_size=hsize, backend=backends.get(name))
            self._by_name[name] = len(self._caches)
            self._caches.append((layer, t, lay))
        log.info("kvtier: %d KV layers, layout %s", len(self._caches), self._caches[0][2].dims if self._caches else None)

    def register_cross_layers_kv_cache(self, kv_cache: torch.Tensor, attn_backend: Any = None) -> None:
        """One tensor for every layer (first dimension: layers)."""
        heads, hsize = self._model_dims()
        n_layers = kv_cache.shape[0]
        lay = detect(kv_cache, num_blocks=self._num_blocks(), block_size=self.block_size, num_kv_heads=heads,
                     head_size=hsize, num_layers=n_layers, backend=attn_backend, cross_layer=True)
        n_layers = lay.num_layers(kv_cache)
        self._caches = [(i, kv_cache, lay) for i in range(n_layers)]
        self._by_name = {}

    def _find_backends(self, kv_caches: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        try:  # vLLM's own attention layers know their backends.
            from vllm.config import get_layers_from_vllm_config  # type: ignore
            from vllm.attention.layer import Attention  # type: ignore

            layers = get_layers_from_vllm_config(self._vllm_config, Attention)
            return {n: l.get_attn_backend() for n, l in layers.items() if n in kv_caches}
        except Exception:  # noqa: BLE001 - not in vLLM, or another version
            return {}

    def _pos(self, layer_name: str) -> int:
        if layer_name in self._by_name:
            return self._by_name[layer_name]
        idx = _layer_index(layer_name, -1)
        for i, (layer, _, _) in enumerate(self._caches):
            if layer == idx:
                return i
        raise KeyError(f"kvtier: unknown KV layer {layer_name!r}")

    def _load_layer(self, pos: int, loads: List[_Load]) -> None:
        layer, t, lay = self._caches[pos]
        ids = [b for ld in loads for b in ld.block_ids]
        hashes = [h for ld in loads for h in ld.hashes]
        views = [lay.block_view(t, b, layer) for b in ids]
        direct = all(v.is_contiguous() and v.device.type == "cpu" for v in views)
        outs = views if direct else [torch.empty(v.shape, dtype=v.dtype) for v in views]
        errs = self.client.get_many(hashes, outs, layer=layer, namespace=self.namespace)
        bad = {b for b, e in zip(ids, errs) if e is not None}
        if not direct:
            for v, o, e in zip(views, outs, errs):
                if e is None:
                    v.copy_(o)
        if bad:
            with self._mu:
                self._errors |= bad

    def start_load_kv(self, forward_context: Any = None, **kwargs: Any) -> None:
        """Starts loading every layer of the step's loads in the background."""
        meta = self._connector_metadata
        if not isinstance(meta, KVTierConnectorMetadata) or not meta.loads:
            return
        for pos in range(len(self._caches)):
            self._load_futs[pos] = self._pool.submit(self._load_layer, pos, meta.loads)

    def wait_for_layer_load(self, layer_name: str) -> None:
        """Waits until the layer's blocks are in the paged cache."""
        f = self._load_futs.pop(self._pos(layer_name), None)
        if f is not None:
            try:
                f.result()
            except Exception as e:  # noqa: BLE001 - reported per block
                log.warning("kvtier: loading %s failed: %s", layer_name, e)
                meta = self._get_connector_metadata()
                with self._mu:
                    self._errors |= {b for ld in meta.loads for b in ld.block_ids}

    def _save_layer(self, pos: int, kv_layer: torch.Tensor, saves: List[_Save]) -> None:
        # A cross-layer cache is read through the registered tensor (kv_layer
        # is then one layer's view of it); otherwise the two are the same.
        layer, t, lay = self._caches[pos]
        if not lay.cross_layer:
            t = kv_layer
        for s in saves:
            datas = [lay.block_view(t, b, layer).contiguous() for b in s.block_ids]
            if not datas:
                continue
            self.client.put_many(s.hashes, [d.cpu() for d in datas], lay.layout(t), layer=layer,
                                 namespace=self.namespace, parent=s.parent)
            if pos == 0:
                with self._mu:
                    prev = s.parent
                    for h, toks in zip(s.hashes, s.token_ids):
                        self._saved_meta.append((h, prev, toks))
                        prev = h

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any = None, **kwargs: Any
                      ) -> None:
        """Starts storing the layer's blocks that became full in this step."""
        meta = self._connector_metadata
        if not isinstance(meta, KVTierConnectorMetadata) or not meta.saves:
            return
        self._save_futs.append(self._pool.submit(self._save_layer, self._pos(layer_name), kv_layer, meta.saves))

    def wait_for_save(self) -> None:
        """Waits for the step's saves; a failed save is logged (the blocks
        are then simply not cached)."""
        futs, self._save_futs = self._save_futs, []
        for f in futs:
            try:
                f.result()
            except Exception as e:  # noqa: BLE001 - a lost save is a future miss
                log.warning("kvtier: save failed: %s", e)

    def get_finished(self, finished_req_ids: Set[str]) -> Tuple[Optional[Set[str]], Optional[Set[str]]]:
        """Nothing is asynchronous across steps: (None, None)."""
        return None, None

    def get_block_ids_with_load_errors(self) -> Set[int]:
        """Blocks whose load failed since the last call (vLLM recomputes them)."""
        with self._mu:
            e, self._errors = self._errors, set()
        return e

    def build_connector_worker_meta(self) -> Optional[KVTierWorkerMeta]:
        """The blocks saved in this step, for the scheduler's KV events."""
        with self._mu:
            s, self._saved_meta = self._saved_meta, []
        return KVTierWorkerMeta(s) if s else None

    def shutdown(self) -> None:
        """Waits for background work and closes the client."""
        self._pool.shutdown(wait=True)
        self.client.close()


def __getattr__(name: str) -> Any:
    # KVTierTier lives in kvtier.vllm_tier; importable from here too.
    if name in ("KVTierTier", "register_tier"):
        from kvtier import vllm_tier

        return getattr(vllm_tier, name)
    raise AttributeError(name)
