"""kvtier.vllm: layout detection, and the engine harness in every layout
(engine A stores, engine B in a separate process loads)."""

from __future__ import annotations

import statistics

import pytest
import torch

import harness
from kvtier.vllm_layout import KVLayout, detect

LAYOUTS = ["kv_first", "blocks_first", "blocks_first_hnd", "packed", "cross_layer"]

DIMS = dict(num_blocks=10, block_size=16, num_kv_heads=4, head_size=8)


@pytest.mark.parametrize("shape,cross,want", [
    ((2, 10, 16, 4, 8), False, ("KV", "B", "T", "H", "D")),
    ((10, 2, 16, 4, 8), False, ("B", "KV", "T", "H", "D")),
    ((10, 2, 4, 16, 8), False, ("B", "KV", "H", "T", "D")),
    ((10, 16, 576), False, ("B", "T", "D")),
    ((3, 10, 2, 16, 4, 8), True, ("L", "B", "KV", "T", "H", "D")),
    ((10, 3, 2, 16, 4, 8), True, ("B", "L", "KV", "T", "H", "D")),
])
def test_detect_by_shape(shape, cross, want):
    assert detect(torch.zeros(shape), num_layers=3, cross_layer=cross, **DIMS).dims == want


def test_detect_from_backend_beats_shape():
    class HND:  # a backend whose logical shape is blocks, KV, heads, tokens
        @staticmethod
        def get_kv_cache_shape(num_blocks, block_size, num_kv_heads, head_size):
            return (num_blocks, 2, num_kv_heads, block_size, head_size)

    t = torch.zeros(10, 2, 16, 16, 8)  # heads == block size: the shape alone is ambiguous
    d = dict(DIMS, num_kv_heads=16)
    assert detect(t, **d).dims == ("B", "KV", "T", "H", "D")
    assert detect(t, backend=HND, **d).dims == ("B", "KV", "H", "T", "D")


def test_detect_rejects_unknown_shape():
    with pytest.raises(ValueError):
        detect(torch.zeros(7, 7, 7), **DIMS)


def test_canonical_block_order_is_layout_independent():
    k = torch.randn(16, 4, 8)
    v = torch.randn(16, 4, 8)
    a = torch.zeros(2, 10, 16, 4, 8)
    a[0, 3], a[1, 3] = k, v
    b = torch.zeros(10, 2, 4, 16, 8).permute(0, 1, 3, 2, 4)
    b[3, 0], b[3, 1] = k, v
    va = KVLayout(("KV", "B", "T", "H", "D")).block_view(a, 3)
    vb = KVLayout(("B", "KV", "T", "H", "D")).block_view(b, 3)
    assert torch.equal(va, vb) and vb.is_contiguous() and not va.is_contiguous()


def _check(b, layout):
    for p in b[layout]["prompts"]:
        assert p["loaded"] == p["recompute"], layout


def test_engine_harness(daemon):
    a = harness.run_engine("engine_vllm.py", "store", daemon.socket, ",".join(LAYOUTS))
    b = harness.run_engine("engine_vllm.py", "serve+fault", daemon.socket, ",".join(LAYOUTS))
    for layout in LAYOUTS:
        assert a[layout]["events"] == harness.N_PROMPTS * (harness.BASE_LEN // harness.BLOCK)
        assert a[layout]["event_medium"] == ["kvtier"]
        _check(b, layout)
        assert b[layout]["load_errors"] == 0
        ps = b[layout]["prompts"]
        assert all(p["hit_tokens"] == harness.SHARED for p in ps)
        speedup = statistics.median(p["ttft_recompute"] / p["ttft_load"] for p in ps)
        print(f"\nvllm {layout}: TTFT recompute {ps[0]['ttft_recompute'] * 1e3:.1f} ms, "
              f"load {ps[0]['ttft_load'] * 1e3:.1f} ms, ratio {speedup:.2f}x")
        assert speedup >= (3.0 if harness.FULL else 1.0)
    f = b[LAYOUTS[0]]["fault"]
    assert f["load_errors"] >= 1
    assert f["loaded"] == f["recompute"]


def test_scheduler_loads_after_local_prefix_hits(daemon):
    # With 2 blocks in vLLM's own prefix cache, the load covers the blocks
    # after them, even though request.num_computed_tokens is still 0 when
    # update_state_after_alloc runs (vLLM sets it afterwards).
    from types import SimpleNamespace

    import kvtier
    from kvtier import hashing
    from kvtier.vllm import KVConnectorRole, KVTierConnector

    toks = list(range(100, 180))  # 5 blocks of 16
    hs = hashing.chain(toks, 16, algo="sha256_cbor")
    lay = kvtier.Layout("fp32", kv_heads=1, head_dim=4, tokens=16)
    with kvtier.Client(socket=daemon.socket) as c:
        c.put_many(hs, [torch.zeros(lay.nbytes // 4)] * 5, lay, layer=0, namespace="sched-unit")
    cfg = SimpleNamespace(kv_transfer_config=SimpleNamespace(kv_connector_extra_config={
        "socket": daemon.socket, "namespace": "sched-unit"}), cache_config=SimpleNamespace(block_size=16))
    conn = KVTierConnector(cfg, KVConnectorRole.SCHEDULER, None)
    req = SimpleNamespace(request_id="r", block_hashes=hs, num_tokens=len(toks), num_computed_tokens=0)
    ext, is_async = conn.get_num_new_matched_tokens(req, 32)
    assert (ext, is_async) == (4 * 16 - 32, False)  # the last token is left to vLLM
    conn.update_state_after_alloc(req, SimpleNamespace(get_block_ids=lambda: (list(range(10, 15)),)), ext)
    meta = conn.build_connector_meta(SimpleNamespace(scheduled_new_reqs=[], scheduled_cached_reqs=None,
                                                     num_scheduled_tokens={}))
    assert [(ld.block_ids, ld.hashes) for ld in meta.loads] == [([12, 13], hs[2:4])]
    conn.shutdown()
    cfg.kv_transfer_config.kv_role = "kv_producer"  # saves only: nothing to load
    prod = KVTierConnector(cfg, KVConnectorRole.SCHEDULER, None)
    assert prod.get_num_new_matched_tokens(req, 0) == (0, False)
    prod.shutdown()
    new = SimpleNamespace(scheduled_new_reqs=[SimpleNamespace(req_id="r", block_ids=(list(range(5)),),
                                                              num_computed_tokens=0)],
                          scheduled_cached_reqs=None, num_scheduled_tokens={"r": len(toks)})
    for role, saves in (("kv_both", 5), ("kv_consumer", 0)):
        cfg.kv_transfer_config.kv_role = role
        sc = KVTierConnector(cfg, KVConnectorRole.SCHEDULER, None)
        sc.update_state_after_alloc(req, None, 0)
        assert sum(len(x.block_ids) for x in sc.build_connector_meta(new).saves) == saves, role
        sc.shutdown()
