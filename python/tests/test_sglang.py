"""kvtier.sglang.KVTierStorage: the HiCacheStorage calls, and the engine
harness (engine A stores, engine B in a separate process loads)."""

from __future__ import annotations

import statistics

import pytest
import torch

import harness
import kvtier
from kvtier.sglang import KVTierStorage, key_hash, layout_for_bytes


@pytest.fixture
def storage(daemon):
    s = KVTierStorage(None, {}, client=kvtier.Client(socket=daemon.socket), namespace="sgl-unit")
    yield s
    s.close()


def test_get_set_exists(storage):
    keys = [f"{i:064x}" for i in range(1, 5)] + ["not-hex-key"]
    vals = [torch.randn(2, 4, 16, 8) for _ in keys]
    assert storage.batch_set(keys[:3], vals[:3])
    assert storage.set(keys[4], vals[4])
    assert storage.exists(keys[0]) and not storage.exists(keys[3])
    assert storage.batch_exists(keys) == 3
    out = [torch.empty_like(v) for v in vals]
    got = storage.batch_get(keys, out)
    assert [g is not None for g in got] == [True, True, True, False, True]
    assert all(torch.equal(o, v) for o, v, g in zip(out, vals, got) if g is not None)
    assert storage.get(keys[3], torch.empty_like(vals[3])) is None
    assert torch.equal(storage.get(keys[4], torch.empty_like(vals[4])), vals[4])


def test_unsupported_methods_raise(storage):
    with pytest.raises(NotImplementedError):
        storage.batch_get_v2([])
    with pytest.raises(NotImplementedError):
        storage.batch_exists_v2([])
    with pytest.raises(NotImplementedError):
        storage.clear()
    with pytest.raises(ValueError):
        storage.get("k")
    with pytest.raises(ValueError):
        storage.batch_get(["a", "b"], [torch.empty(4)])


def test_key_and_layout_mapping():
    assert key_hash("ab" * 32) == bytes.fromhex("ab" * 32)
    assert len(key_hash("anything")) == 32
    lay = layout_for_bytes(2 * 6 * 16 * 2 * 32 * 4, torch.float32)
    assert lay.nbytes == 2 * 6 * 16 * 2 * 32 * 4 and lay.dtype == "fp32"
    with pytest.raises(ValueError):
        layout_for_bytes(3, torch.float16)


LAYOUTS = ["layer_first", "page_first", "page_first_direct"]


def test_engine_harness(daemon):
    a = harness.run_engine("engine_sglang.py", "store", daemon.socket, ",".join(LAYOUTS))
    b = harness.run_engine("engine_sglang.py", "serve", daemon.socket, ",".join(LAYOUTS))
    for layout in LAYOUTS:
        assert a[layout]["stored"] == [harness.BASE_LEN // harness.BLOCK] * harness.N_PROMPTS
        for p in b[layout]["prompts"]:
            assert p["hit_tokens"] == harness.SHARED
            assert p["loaded"] == p["recompute"]
        speedup = statistics.median(p["ttft_recompute"] / p["ttft_load"] for p in b[layout]["prompts"])
        print(f"\nsglang {layout}: TTFT recompute {b[layout]['prompts'][0]['ttft_recompute'] * 1e3:.1f} ms, "
              f"load {b[layout]['prompts'][0]['ttft_load'] * 1e3:.1f} ms, ratio {speedup:.2f}x")
        assert speedup >= (3.0 if harness.FULL else 1.0)
