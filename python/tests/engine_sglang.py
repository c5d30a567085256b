"""A tiny SGLang-like engine over kvtier.sglang.KVTierStorage, run as a
separate process by test_sglang.py.

It keeps KV in a host pool laid out as SGLang's MHATokenToKVPoolHost lays
it out (python/sglang/srt/mem_cache/memory_pool_host.py: layer_first
[2, layers, tokens, heads, dim], page_first [2, tokens, layers, heads, dim],
page_first_direct [2, pages, layers, page, heads, dim]) with its flat-page
calls, and drives the storage in HiCache's order
(managers/cache_controller.py): a write-back is batch_exists then
batch_set_v1 of the pages not yet stored; a prefetch is batch_exists, then
batch_get_v1 of the hit pages into host indices, then the host pages feed
the prefill of the remaining tokens. Page keys are SGLang's get_hash_str:
SHA-256 over the previous key's bytes and each token id as 4 little-endian
bytes, in hex.

usage: engine_sglang.py store|serve SOCKET LAYOUT[,LAYOUT...]
"""

from __future__ import annotations

import hashlib
import json
import sys
from types import SimpleNamespace
from typing import List, Optional

import torch

import harness
import kvtier
from kvtier.sglang import KVTierStorage
from tinymodel import TinyModel


def get_hash_str(tokens: List[int], prior: Optional[str]) -> str:
    h = hashlib.sha256()
    if prior:
        h.update(bytes.fromhex(prior))
    for t in tokens:
        h.update(t.to_bytes(4, "little"))
    return h.hexdigest()


def page_keys(tokens: List[int], page: int) -> List[str]:
    keys, prior = [], None
    for i in range(len(tokens) // page):
        prior = get_hash_str(tokens[i * page:(i + 1) * page], prior)
        keys.append(prior)
    return keys


class HostPool:
    """MHA host pool with SGLang's three layouts and flat-page calls."""

    def __init__(self, layout: str, pages: int, page: int, layers: int, heads: int, dim: int):
        self.layout, self.page_size, self.dtype = layout, page, torch.float32
        self.layers, self.heads, self.dim = layers, heads, dim
        n = pages * page
        shape = {"layer_first": (2, layers, n, heads, dim), "page_first": (2, n, layers, heads, dim),
                 "page_first_direct": (2, pages, layers, page, heads, dim)}[layout]
        self.kv_buffer = torch.zeros(shape, dtype=self.dtype)

    def _page(self, index: int) -> torch.Tensor:
        p = self.page_size
        if self.layout == "layer_first":
            return self.kv_buffer[:, :, index:index + p]
        if self.layout == "page_first":
            return self.kv_buffer[:, index:index + p]
        return self.kv_buffer[:, index // p]

    def get_data_page(self, index: int, flat: bool = True) -> torch.Tensor:
        return self._page(index).flatten() if flat else self._page(index)

    def get_dummy_flat_data_page(self) -> torch.Tensor:
        return torch.zeros(self._page(0).numel(), dtype=self.dtype)

    def set_from_flat_data_page(self, index: int, data: torch.Tensor) -> None:
        v = self._page(index)
        v.copy_(data.view(v.shape))

    # The engine's own access: token t's K or V of a layer.
    def write(self, index: int, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        n = k.shape[0]
        if self.layout == "layer_first":
            self.kv_buffer[0, layer, index:index + n], self.kv_buffer[1, layer, index:index + n] = k, v
        elif self.layout == "page_first":
            self.kv_buffer[0, index:index + n, layer], self.kv_buffer[1, index:index + n, layer] = k, v
        else:
            p = self.page_size
            for j in range(0, n, p):
                pg = (index + j) // p
                self.kv_buffer[0, pg, layer], self.kv_buffer[1, pg, layer] = k[j:j + p], v[j:j + p]

    def read(self, index: int, n: int, layer: int):
        if self.layout == "layer_first":
            return self.kv_buffer[0, layer, index:index + n], self.kv_buffer[1, layer, index:index + n]
        if self.layout == "page_first":
            return self.kv_buffer[0, index:index + n, layer], self.kv_buffer[1, index:index + n, layer]
        p = self.page_size
        ks = [self.kv_buffer[0, pg, layer] for pg in range(index // p, (index + n) // p)]
        vs = [self.kv_buffer[1, pg, layer] for pg in range(index // p, (index + n) // p)]
        return torch.cat(ks), torch.cat(vs)


def main() -> None:
    role, sock, layouts = sys.argv[1:4]
    m = TinyModel()
    print(json.dumps({layout: run(m, role, sock, layout) for layout in layouts.split(",")}))


def run(m: TinyModel, role: str, sock: str, layout: str) -> dict:
    P = harness.BLOCK
    pool = HostPool(layout, 64, P, m.layers, m.kv_heads, m.head_dim)
    cfg = SimpleNamespace(tp_rank=0, tp_size=1, pp_rank=0, pp_size=1, is_mla_model=False, model_name="tiny",
                          extra_config={"socket": sock, "namespace": f"sglang-{layout}"})
    st = KVTierStorage(cfg, {})
    st.register_mem_pool_host(pool)
    out: dict = {}
    if role == "store":
        for prompt in harness.base_prompts():
            _, kv = m.forward(prompt, 0, [])
            keys = page_keys(prompt, P)
            for l, (k, v) in enumerate(kv):
                pool.write(0, l, k[:len(keys) * P], v[:len(keys) * P])
            have = st.batch_exists(keys)
            idx = torch.arange(have * P, len(keys) * P)
            ok = st.batch_set_v1(keys[have:], idx)
            assert all(ok), ok
            out.setdefault("stored", []).append(len(keys) - have)
    else:
        res = []
        for prompt in harness.b_prompts():
            def recompute():
                logits, kv = m.forward(prompt, 0, [])
                return int(logits[-1].argmax()), logits, kv

            def load():
                keys = page_keys(prompt, P)
                hit = st.batch_exists(keys)
                ok = st.batch_get_v1(keys[:hit], torch.arange(0, hit * P))
                hit = ok.index(False) if False in ok else hit
                n = hit * P
                past = [pool.read(0, n, l) for l in range(m.layers)]
                logits, new = m.forward(prompt[n:], n, past)
                kv = [(torch.cat([pk, k]), torch.cat([pv, v])) for (pk, pv), (k, v) in zip(past, new)]
                return int(logits[-1].argmax()), logits, kv, n

            t_rec, (_, lr, kvr) = harness.timed(recompute)
            t_load, (_, ll, kvl, n) = harness.timed(load)
            res.append({"hit_tokens": n, "ttft_recompute": t_rec, "ttft_load": t_load,
                        "recompute": harness.greedy(m, len(prompt), lr, kvr),
                        "loaded": harness.greedy(m, len(prompt), ll, kvl)})
        out["prompts"] = res
    st.close()
    return out


if __name__ == "__main__":
    main()
