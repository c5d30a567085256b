"""kvtier.vllm_tier.KVTierTier: non-blocking lookups and jobs, and the
engine harness (engine A spills, engine B in a separate process promotes)."""

from __future__ import annotations

import statistics
import time
from types import SimpleNamespace

import numpy as np

import harness
import kvtier
from kvtier.vllm_tier import KVTierTier


def wait(tier, job_id):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for r in tier.get_finished():
            if r.job_id == job_id:
                return r.success
        time.sleep(0.001)
    raise AssertionError("job did not finish")


def test_tier_jobs_and_lookup(daemon):
    primary = np.zeros((4, 4096), np.uint8)
    tier = KVTierTier(None, memoryview(primary), client=kvtier.Client(socket=daemon.socket), namespace="tier-unit")
    keys = [bytes([i]) * 32 for i in range(1, 4)]
    assert tier.lookup(keys[0]) is None  # in flight: retry
    primary[:3] = np.arange(3, dtype=np.uint8)[:, None] + 7
    tier.submit_store(SimpleNamespace(job_id=1, keys=keys, block_ids=np.arange(3), is_promotion=False,
                                      req_context=None))
    assert wait(tier, 1)
    assert tier.lookup(keys[1]) is True
    primary[:] = 0
    tier.submit_load(SimpleNamespace(job_id=2, keys=keys[::-1], block_ids=np.array([0, 1, 2]), is_promotion=True,
                                     req_context=None))
    assert wait(tier, 2)
    assert [int(primary[i, 0]) for i in range(3)] == [9, 8, 7]
    tier.submit_load(SimpleNamespace(job_id=3, keys=[b"\x55" * 32], block_ids=np.array([3]), is_promotion=True,
                                     req_context=None))
    assert not wait(tier, 3)
    tier.drain_jobs()
    tier.shutdown()


def test_engine_harness(daemon):
    a = harness.run_engine("engine_tier.py", "store", daemon.socket)
    assert a["stored"] == [True] * harness.N_PROMPTS
    b = harness.run_engine("engine_tier.py", "serve", daemon.socket)
    for p in b["prompts"]:
        assert p["hit_tokens"] == harness.SHARED
        assert p["loaded"] == p["recompute"]
    speedup = statistics.median(p["ttft_recompute"] / p["ttft_load"] for p in b["prompts"])
    p = b["prompts"][0]
    print(f"\nvllm offloading tier: TTFT recompute {p['ttft_recompute'] * 1e3:.1f} ms, "
          f"load {p['ttft_load'] * 1e3:.1f} ms, ratio {speedup:.2f}x")
    assert speedup >= (3.0 if harness.FULL else 1.0)
