"""get_many over PinBlocks: one call and one lease per batch, missing
blocks answered one by one, the lease expiring, and a SIGKILLed holder
leaving nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

import kvtier
from kvtier.v1 import kvtier_pb2 as pb

LAYOUT = kvtier.Layout("fp16", kv_heads=2, head_dim=32, tokens=16, layers=6)


def block(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, LAYOUT.nbytes, dtype=np.uint8)


def h(i: int, tag: bytes) -> bytes:
    import hashlib

    return hashlib.blake2b(tag + i.to_bytes(8, "little"), digest_size=16).digest()


def test_get_many_one_call_with_misses(daemon):
    with kvtier.Client(socket=daemon.socket, namespace="pbm") as c:
        hashes = [h(i, b"pbm") for i in range(6)]
        datas = [block(i) for i in range(6)]
        c.put_many(hashes[:4], datas[:4], LAYOUT)
        s = c.session()
        calls = []
        orig = s._call

        def counting(method, req, timeout):
            calls.append(type(req).__name__)
            return orig(method, req, timeout)

        s._call = counting
        order = [0, 4, 1, 2, 5, 3, 0]
        outs = [np.zeros(LAYOUT.nbytes, np.uint8) for _ in order]
        errs = c.get_many([hashes[i] for i in order], outs)
        assert calls == ["PinBlocksRequest"]
        for j, i in enumerate(order):
            if i >= 4:
                assert isinstance(errs[j], kvtier.NotFound) and errs[j].message
            else:
                assert errs[j] is None
                assert np.array_equal(outs[j], datas[i])
        deadline = time.monotonic() + 0.5
        while c.stats().leases and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (c.stats().leases, c.stats().pinned_blocks) == (0, 0)


def test_pin_blocks_lease_expires(daemon):
    with kvtier.Client(socket=daemon.socket, namespace="pbx") as c:
        hashes = [h(i, b"pbx") for i in range(3)]
        c.put_many(hashes, [block(i) for i in range(3)], LAYOUT)
        s = c.session()
        r = c._stub.PinBlocks(pb.PinBlocksRequest(session_id=s.id, keys=[c._key(x, -1, None) for x in hashes],
                                                  lease_ttl_ms=50), metadata=c._md)
        assert r.lease_id and r.pinned == 3 and r.lease_ttl_ms == 50
        st = c.stats()
        assert (st.leases, st.pinned_blocks) == (1, 3)
        deadline = time.monotonic() + 2
        while s.expired < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert s.expired == 1
        st = c.stats()
        assert (st.leases, st.pinned_blocks) == (0, 0)
        try:
            c._stub.Release(pb.ReleaseRequest(session_id=s.id, lease_ids=[r.lease_id]), metadata=c._md)
        except Exception as e:  # noqa: BLE001
            assert kvtier.errors.from_rpc_error(e).code.name == "FAILED_PRECONDITION"
        else:
            raise AssertionError("releasing an expired batch lease succeeded")


HOLDER = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[2])
import kvtier
from kvtier.v1 import kvtier_pb2 as pb
c = kvtier.Client(socket=sys.argv[1], namespace="pbkill")
lay = kvtier.Layout("fp16", kv_heads=2, head_dim=32, tokens=16, layers=6)
hs = [bytes([i]) * 16 for i in range(4)]
c.put_many(hs, [np.zeros(lay.nbytes, np.uint8)] * 4, lay)
s = c.session()
for _ in range(2):
    r = c._stub.PinBlocks(pb.PinBlocksRequest(session_id=s.id, keys=[c._key(x, -1, None) for x in hs],
                                              lease_ttl_ms=600000), metadata=c._md)
    assert r.pinned == 4
print("holding", flush=True)
sys.stdin.read()
"""


def test_sigkill_with_batch_pins_leaves_nothing(daemon):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, daemon.socket, os.path.dirname(kvtier.__path__[0])],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"holding\n"
    with kvtier.Client(socket=daemon.socket, shm=False) as c:
        st = c.stats()
        assert st.leases >= 2 and st.pinned_blocks >= 4
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 3
        while c.stats().leases and time.monotonic() < deadline:
            time.sleep(0.05)
        st = c.stats()
        assert (st.leases, st.sessions, st.pinned_blocks) == (0, 0, 0), st
