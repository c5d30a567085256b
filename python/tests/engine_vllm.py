"""A tiny vLLM-like engine over kvtier.vllm.KVTierConnector, run as a
separate process by test_vllm.py.

It drives the connector in the order vLLM does:
- scheduler (vllm/v1/core/sched/scheduler.py, schedule() and
  update_from_output()): get_num_new_matched_tokens for a waiting request,
  block allocation, update_state_after_alloc, then build_connector_meta for
  the step; after the step update_connector_output and take_events; when a
  request ends, request_finished;
- worker (vllm/v1/worker/kv_connector_model_runner_mixin.py and
  vllm/attention/layer.py): bind_connector_metadata, start_load_kv; in each
  attention layer wait_for_layer_load before the cache is read and
  save_kv_layer once the layer's new K/V are in it; after the forward
  wait_for_save, get_finished, get_block_ids_with_load_errors,
  build_connector_worker_meta, clear_connector_metadata. Blocks that failed
  to load are recomputed from the first failed one, as the scheduler's
  invalid-block handling does.
The metadata crosses a pickle round trip, as between vLLM's processes.
Block hashes are vLLM's sha256_cbor chain (kvtier.hashing).

The paged KV cache takes the layouts of vLLM's backends: kv_first
[2, B, T, H, D] (FlashAttention), blocks_first [B, 2, T, H, D] (FlashInfer
NHD), blocks_first_hnd (the same logical shape over [B, 2, H, T, D] memory:
FlashInfer HND), packed [B, T, 2*H*D] (K and V in one vector per token),
cross_layer (one [B, L, 2, T, H, D] tensor registered as its [L, B, ...]
view).

usage: engine_vllm.py store|serve|serve+fault SOCKET LAYOUT[,LAYOUT...]
"""

from __future__ import annotations

import json
import pickle
import sys
import time
from types import SimpleNamespace
from typing import Dict, List, Optional

import torch

import harness
import kvtier
from kvtier import hashing
from kvtier.vllm import KVConnectorRole, KVTierConnector
from tinymodel import TinyModel

NB, T = 64, harness.BLOCK


class Request:
    """The fields of vLLM's Request the connector reads."""

    def __init__(self, rid: str, prompt: List[int]):
        self.request_id = rid
        self.prompt_token_ids = list(prompt)
        self.all_token_ids = list(prompt)
        self.num_computed_tokens = 0
        self.block_hashes: List[bytes] = []
        self._rehash()

    def _rehash(self) -> None:
        self.block_hashes = hashing.chain(self.all_token_ids, T, algo="sha256_cbor")
        self.num_publishable_block_hashes = len(self.block_hashes)

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    def append(self, tok: int) -> None:
        self.all_token_ids.append(tok)
        self._rehash()


class Blocks:
    def __init__(self, ids: List[int]):
        self.ids = ids

    def get_block_ids(self):
        return (self.ids,)


class PagedKV:
    """Per-layer paged K/V in one of vLLM's layouts."""

    def __init__(self, layout: str, layers: int, H: int, D: int):
        self.layout, self.H, self.D = layout, H, D
        if layout == "cross_layer":
            self.cross = torch.zeros(NB, layers, 2, T, H, D).permute(1, 0, 2, 3, 4, 5)
            self.t = [self.cross[l] for l in range(layers)]
            return
        mk = {"kv_first": lambda: torch.zeros(2, NB, T, H, D),
              "blocks_first": lambda: torch.zeros(NB, 2, T, H, D),
              "blocks_first_hnd": lambda: torch.zeros(NB, 2, H, T, D).permute(0, 1, 3, 2, 4),
              "packed": lambda: torch.zeros(NB, T, 2 * H * D)}[layout]
        self.t = [mk() for _ in range(layers)]

    def kv(self, l: int, b: int):
        t = self.t[l]
        if self.layout == "kv_first":
            return t[0, b], t[1, b]
        if self.layout == "packed":
            hd = self.H * self.D
            return t[b][:, :hd].unflatten(-1, (self.H, self.D)), t[b][:, hd:].unflatten(-1, (self.H, self.D))
        return t[b, 0], t[b, 1]

    def write(self, l: int, table: List[int], start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        for i in range(k.shape[0]):
            p = start + i
            kb, vb = self.kv(l, table[p // T])
            kb[p % T], vb[p % T] = k[i], v[i]

    def read(self, l: int, table: List[int], n: int):
        ks, vs = [], []
        for j in range(0, n, T):
            kb, vb = self.kv(l, table[j // T])
            ks.append(kb[:min(T, n - j)])
            vs.append(vb[:min(T, n - j)])
        if not ks:
            z = torch.zeros(0, self.H, self.D)
            return z, z
        return torch.cat(ks), torch.cat(vs)


class Engine:
    def __init__(self, model: TinyModel, layout: str, sock: Optional[str]):
        self.m, self.layout = model, layout
        self.kv = PagedKV(layout, model.layers, model.kv_heads, model.head_dim)
        self.free = list(range(NB))
        self.names = [f"model.layers.{l}.self_attn.attn" for l in range(model.layers)]
        self.sched = self.worker = None
        self.events: List = []
        self.load_errors = 0
        if sock:
            cfg = SimpleNamespace(
                kv_transfer_config=SimpleNamespace(kv_role="kv_both", kv_connector_extra_config={
                    "socket": sock, "namespace": f"vllm-{layout}"}),
                cache_config=SimpleNamespace(block_size=T),
                model_config=SimpleNamespace(model="tiny", get_num_kv_heads=lambda pc: model.kv_heads,
                                             get_head_size=lambda: model.head_dim),
                parallel_config=None)
            kvc = SimpleNamespace(num_blocks=NB)
            self.sched = KVTierConnector(cfg, KVConnectorRole.SCHEDULER, kvc)
            self.worker = KVTierConnector(cfg, KVConnectorRole.WORKER, kvc)
            if layout == "cross_layer":
                self.worker.register_cross_layers_kv_cache(self.kv.cross, None)
            else:
                self.worker.register_kv_caches(dict(zip(self.names, self.kv.t)))

    def _step(self, req: Request, table: List[int], tokens: List[int], start: int, out) -> torch.Tensor:
        meta = self.sched.build_connector_meta(out) if self.sched else None
        w = self.worker
        if w:
            w.bind_connector_metadata(pickle.loads(pickle.dumps(meta)))
            w.start_load_kv(None)

        def on_kv(l, k, v):
            if w:
                w.wait_for_layer_load(self.names[l])
            self.kv.write(l, table, start, k, v)
            if w:
                w.save_kv_layer(self.names[l], self.kv.t[l], None)

        logits, _ = self.m.forward(tokens, start, lambda l: self.kv.read(l, table, start), on_kv)
        if w:
            w.wait_for_save()
            w.get_finished(set())
            bad = w.get_block_ids_with_load_errors()
            wm = w.build_connector_worker_meta()
            w.clear_connector_metadata()
            self.sched.update_connector_output(SimpleNamespace(kv_connector_worker_meta=wm))
            self.events += list(self.sched.take_events())
            if bad:
                # Recompute from the first block that failed to load.
                self.load_errors += len(bad)
                first = min(table.index(b) for b in bad) * T
                req.num_computed_tokens = first
                out = SimpleNamespace(scheduled_new_reqs=[], scheduled_cached_reqs=SimpleNamespace(
                    req_ids=[req.request_id], new_block_ids=[None], num_computed_tokens=[first]),
                    num_scheduled_tokens={req.request_id: start + len(tokens) - first})
                return self._step(req, table, req.all_token_ids[first:start + len(tokens)], first, out)
        return logits

    def serve(self, rid: str, prompt: List[int], steps: int):
        """Prefill then greedy decode; returns (tokens, TTFT seconds, tokens loaded)."""
        t0 = time.perf_counter()
        req = Request(rid, prompt)
        ext = self.sched.get_num_new_matched_tokens(req, 0)[0] if self.sched else 0
        table = [self.free.pop(0) for _ in range(-(-len(prompt) // T))]
        if self.sched:
            self.sched.update_state_after_alloc(req, Blocks(table), ext)
        req.num_computed_tokens = ext
        out = SimpleNamespace(
            scheduled_new_reqs=[SimpleNamespace(req_id=rid, block_ids=(list(table),), num_computed_tokens=ext)],
            scheduled_cached_reqs=SimpleNamespace(req_ids=[], new_block_ids=[], num_computed_tokens=[]),
            num_scheduled_tokens={rid: len(prompt) - ext})
        logits = self._step(req, table, prompt[ext:], ext, out)
        first = int(logits[-1].argmax())
        ttft = time.perf_counter() - t0
        toks = [first]
        for _ in range(steps - 1):
            pos = req.num_tokens
            req.num_computed_tokens = pos
            req.append(toks[-1])
            new = None
            if pos // T >= len(table):
                new = [self.free.pop(0)]
                table += new
            out = SimpleNamespace(scheduled_new_reqs=[], scheduled_cached_reqs=SimpleNamespace(
                req_ids=[rid], new_block_ids=[(new,) if new else None], num_computed_tokens=[pos]),
                num_scheduled_tokens={rid: 1})
            logits = self._step(req, table, [toks[-1]], pos, out)
            toks.append(int(logits[-1].argmax()))
        if self.sched:
            self.sched.request_finished(req, table)
        self.free += table
        return toks, ttft, ext


def run(m: TinyModel, role: str, sock: str, layout: str) -> dict:
    if role == "store":
        e = Engine(m, layout, sock)
        for i, p in enumerate(harness.base_prompts()):
            e.serve(f"a{i}", p, 1)
        return {"events": len(e.events), "event_medium": sorted({ev.medium for ev in e.events})}
    res = []
    prompts = harness.b_prompts()
    e = Engine(m, layout, sock)
    ref = Engine(m, layout, None)
    for i, p in enumerate(prompts):
        loaded, ttft_load, hit = e.serve(f"b{i}", p, harness.STEPS)
        recomputed, t_rec, _ = ref.serve(f"r{i}", p, harness.STEPS)
        for _ in range(harness.REPS - 1):
            t_rec = min(t_rec, ref.serve(f"r{i}", p, 1)[1])
        res.append({"hit_tokens": hit, "ttft_load": ttft_load, "ttft_recompute": t_rec, "loaded": loaded,
                    "recompute": recomputed})
    out = {"prompts": res, "load_errors": e.load_errors}
    if role == "serve+fault":
        # Drop one layer of one cached block: its load fails, is reported,
        # and is recomputed; the output must not change.
        h = hashing.chain(prompts[0], T, algo="sha256_cbor")[5]
        with kvtier.Client(socket=sock, shm=False) as c:
            c.delete(h, layer=3, namespace=f"vllm-{layout}")
        f = Engine(m, layout, sock)
        loaded, _, _ = f.serve("f0", prompts[0], harness.STEPS)
        out["fault"] = {"load_errors": f.load_errors, "loaded": loaded, "recompute": res[0]["recompute"]}
    return out


def main() -> None:
    role, sock, layouts = sys.argv[1:4]
    m = TinyModel()
    out = {}
    for layout in layouts.split(","):
        # The fault scenario runs once, with the first layout.
        out[layout] = run(m, role if not out else role.split("+")[0], sock, layout)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
