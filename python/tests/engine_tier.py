"""A tiny engine using kvtier.vllm_tier.KVTierTier as the secondary tier of
vLLM's OffloadingConnector, run as a separate process by test_vllm_tier.py.

As in vLLM's tiered offloading (vllm/v1/kv_offload/tiering/manager.py):
blocks reach the CPU (primary) tier from the GPU through vLLM's own copies
(here: from the paged cache into primary rows, every layer of a block in
one row), then cascade to the secondary tier with submit_store; a lookup
that answers RETRY is asked again on a later step; a hit is promoted back
with submit_load into primary rows, and jobs complete through
get_finished polled once per step. Keys are vLLM's block hashes.

usage: engine_tier.py store|serve SOCKET
"""

from __future__ import annotations

import json
import sys
import time
from types import SimpleNamespace
from typing import List

import numpy as np
import torch

import harness
from engine_vllm import Engine, Request
from kvtier import hashing
from kvtier.vllm_tier import KVTierTier
from tinymodel import TinyModel

T = harness.BLOCK
PRIMARY = 32


def poll(tier: KVTierTier, job_id: int) -> bool:
    while True:
        for r in tier.get_finished():
            if r.job_id == job_id:
                return r.success
        time.sleep(0.0005)  # the next scheduler step


def lookup_prefix(tier: KVTierTier, keys: List[bytes]) -> int:
    """One scheduler step asks for every key in order, up to the first miss;
    if any answered RETRY the request is looked up again on the next step."""
    while True:
        n, retry = 0, False
        for k in keys:
            r = tier.lookup(k, None)
            if r is None or getattr(r, "name", "") == "RETRY":
                retry = True
                continue
            if not (r is True or getattr(r, "name", "") == "HIT"):
                break
            if not retry:
                n += 1
        if not retry:
            return n
        time.sleep(0.0005)  # the next scheduler step


def main() -> None:
    role, sock = sys.argv[1:3]
    m = TinyModel()
    eng = Engine(m, "blocks_first", None)
    L, H, D = m.layers, m.kv_heads, m.head_dim
    row = L * 2 * H * T * D * 4
    primary = np.zeros((PRIMARY, row), np.uint8)
    tier = KVTierTier(None, memoryview(primary), socket=sock, namespace="vllm-offload")

    def to_primary(slot: int, block: int) -> None:  # vLLM's GPU -> CPU copy
        rows = torch.from_numpy(primary[slot]).view(torch.float32).view(L, 2, H, T, D)
        for l in range(L):
            rows[l].copy_(eng.kv.t[l][block].permute(0, 2, 1, 3))

    def from_primary(slot: int, block: int) -> None:  # vLLM's CPU -> GPU copy
        rows = torch.from_numpy(primary[slot]).view(torch.float32).view(L, 2, H, T, D)
        for l in range(L):
            eng.kv.t[l][block].copy_(rows[l].permute(0, 2, 1, 3))

    out: dict = {}
    job = 0
    if role == "store":
        stored = []
        for p in harness.base_prompts():
            table = list(range(len(p) // T))
            m.forward(p, 0, lambda l: eng.kv.read(l, table, 0), lambda l, k, v: eng.kv.write(l, table, 0, k, v))
            keys = hashing.chain(p, T, algo="sha256_cbor")
            for i in range(len(keys)):
                to_primary(i, table[i])
            job += 1
            tier.submit_store(SimpleNamespace(job_id=job, keys=keys, block_ids=np.arange(len(keys)),
                                              is_promotion=False, req_context=None))
            stored.append(poll(tier, job))
        out["stored"] = stored
    else:
        res = []
        for i, p in enumerate(harness.b_prompts()):
            t0 = time.perf_counter()
            req = Request(f"b{i}", p)
            usable = (len(p) - 1) // T
            hit = lookup_prefix(tier, req.block_hashes[:usable])
            job += 1
            tier.submit_load(SimpleNamespace(job_id=job, keys=req.block_hashes[:hit], block_ids=np.arange(hit),
                                             is_promotion=True, req_context=None))
            ok = poll(tier, job)
            table = list(range(-(-len(p) // T)))
            for b in range(hit if ok else 0):
                from_primary(b, table[b])
            n = hit * T if ok else 0
            logits, _ = m.forward(p[n:], n, lambda l: eng.kv.read(l, table, n),
                                  lambda l, k, v: eng.kv.write(l, table, n, k, v))
            ttft = time.perf_counter() - t0
            past = [eng.kv.read(l, table, len(p)) for l in range(L)]
            loaded = harness.greedy(m, len(p), logits, past)
            recomputed, t_rec, _ = Engine(m, "blocks_first", None).serve(f"r{i}", p, harness.STEPS)
            res.append({"hit_tokens": n, "ttft_load": ttft, "ttft_recompute": t_rec, "loaded": loaded,
                        "recompute": recomputed})
        out["prompts"] = res
    tier.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
