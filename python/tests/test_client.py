"""The client against a real daemon: inline and shared-memory planes,
errors, lookups, stats and leases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import kvtier

LAYOUT = kvtier.Layout("fp16", kv_heads=2, head_dim=32, tokens=16, layers=6)


def block(seed: int, layout: kvtier.Layout = LAYOUT) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, layout.nbytes, dtype=np.uint8)


def h(i: int, tag: bytes = b"") -> bytes:
    import hashlib

    return hashlib.blake2b(tag + i.to_bytes(8, "little"), digest_size=16).digest()


@pytest.mark.parametrize("shm", [False, True], ids=["inline", "shm"])
def test_put_get_roundtrip(daemon, shm):
    with kvtier.Client(socket=daemon.socket, namespace="rt", shm=shm) as c:
        hashes = [h(i, b"rt%d" % shm) for i in range(8)]
        datas = [block(i) for i in range(8)]
        c.put_many(hashes, datas, LAYOUT)
        outs = [np.zeros(LAYOUT.nbytes, np.uint8) for _ in hashes]
        assert c.get_many(hashes, outs) == [None] * 8
        for d, o in zip(datas, outs):
            np.testing.assert_array_equal(d, o)
        one = c.get(hashes[3])
        np.testing.assert_array_equal(one, datas[3])
        assert c.lookup(hashes).cached_blocks == 8


def test_large_block_inline_chunks(inline_client):
    lay = kvtier.Layout("fp32", kv_heads=8, head_dim=128, tokens=64, layers=4)  # 2 MiB: several chunks
    d = block(7, lay)
    inline_client.put(h(1, b"big"), d, lay)
    np.testing.assert_array_equal(inline_client.get(h(1, b"big")), d)


def test_torch_tensors_in_and_out(client):
    torch = pytest.importorskip("torch")
    t = torch.randn(2, 6, 2, 16, 32, dtype=torch.bfloat16)
    lay = kvtier.Layout(t.dtype, kv_heads=2, head_dim=32, tokens=16, layers=6)
    client.put(h(1, b"torch"), t, lay)
    out = torch.empty_like(t)
    assert client.get_many([h(1, b"torch")], [out]) == [None]
    assert torch.equal(out, t)


def test_errors_carry_code_and_message(client, inline_client):
    with pytest.raises(kvtier.NotFound) as e:
        inline_client.get(h(99, b"absent"))
    assert e.value.code.name == "NOT_FOUND" and e.value.message
    errs = client.get_many([h(99, b"absent")], [np.zeros(LAYOUT.nbytes, np.uint8)])
    assert isinstance(errs[0], kvtier.NotFound)
    with pytest.raises(kvtier.InvalidArgument) as e:
        client.lookup([b"short"])
    assert "hash" in e.value.message
    with pytest.raises(ValueError):
        client.put(h(1), np.zeros(3, np.uint8), LAYOUT)
    with pytest.raises(kvtier.InvalidArgument):
        inline_client.put(h(2), np.zeros(3, np.uint8), LAYOUT)
    with pytest.raises(kvtier.InvalidArgument) as e:
        inline_client.lookup([h(1)], namespace="bad ns!")
    assert "namespace" in e.value.message


def test_unreachable_daemon_times_out(tmp_path):
    with kvtier.Client(socket=str(tmp_path / "none.sock"), timeout=0.3, shm=False) as c:
        with pytest.raises((kvtier.Unavailable, kvtier.DeadlineExceeded)):
            c.stats()


def test_lookup_partial_prefix_and_tiers(client):
    hashes = [h(i, b"chain") for i in range(10)]
    client.put_many(hashes[:4], [block(i) for i in range(4)], LAYOUT)
    r = client.lookup(hashes)
    assert (r.cached_blocks, r.total_blocks) == (4, 10)
    assert r.tiers == ["dram"] * 4
    assert client.lookup([]).cached_blocks == 0


def test_lookup_tokens_matches_local_hashing(client):
    from kvtier import hashing

    toks = list(range(1000, 1000 + 64))
    params = kvtier.HashParams(block_tokens=16, algo="sha256_cbor", seed="0")
    r = client.lookup_tokens(toks, params, return_hashes=True)
    assert r.total_blocks == 4
    assert r.hashes == hashing.chain(toks, 16, algo="sha256_cbor", seed="0")


def test_stats_and_delete(client):
    client.put(h(1, b"del"), block(1), LAYOUT)
    s = client.stats()
    assert s.indexed_blocks >= 1 and s.tiers[0].name == "dram"
    client.delete(h(1, b"del"))
    assert client.lookup([h(1, b"del")]).cached_blocks == 0


def test_shm_reserve_pin_release(client):
    s = client.session()
    assert s is not None
    r = s.reserve(h(1, b"inplace"), LAYOUT)
    r.view[:] = 7
    r.commit()
    with s.pin(h(1, b"inplace")) as p:
        assert p.tier == "dram" and p.layout == LAYOUT
        assert int(p.view.min()) == 7 == int(p.view.max())
    r = s.reserve(h(2, b"inplace"), LAYOUT)
    r.abort()
    assert client.lookup([h(2, b"inplace")]).cached_blocks == 0


def test_pin_renewed_past_lease_time(client):
    # The session daemon's leases last 1 s: a renewed pin outlives them.
    s = client.session()
    client.put(h(1, b"renew"), block(5), LAYOUT)
    p = s.pin(h(1, b"renew"))
    time.sleep(2.5)
    np.testing.assert_array_equal(p.view, block(5))
    p.release()  # raises FailedPrecondition if the lease had lapsed
    q = s.pin(h(1, b"renew"), renew=False)
    time.sleep(1.6)
    with pytest.raises(kvtier.FailedPrecondition):
        q.release()


def test_close_releases_leases(daemon):
    c = kvtier.Client(socket=daemon.socket, namespace="close")
    c.put(h(1, b"close"), block(1), LAYOUT)
    s = c.session()
    s.pin(h(1, b"close"), renew=False)
    s.reserve(h(2, b"close"), LAYOUT)
    assert c.stats().leases >= 2
    c.close()
    with kvtier.Client(socket=daemon.socket, shm=False) as c2:
        deadline = time.monotonic() + 5
        while c2.stats().sessions and time.monotonic() < deadline:
            time.sleep(0.02)
        st = c2.stats()
        assert (st.sessions, st.leases) == (0, 0)


HOLDER = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[2])
import kvtier
c = kvtier.Client(socket=sys.argv[1], namespace="kill")
lay = kvtier.Layout("fp16", kv_heads=2, head_dim=32, tokens=16, layers=6)
c.put(b"k" * 16, np.zeros(lay.nbytes, np.uint8), lay)
s = c.session()
pins = [s.pin(b"k" * 16) for _ in range(3)]
res = [s.reserve(bytes([i]) * 16, lay, ttl_ms=600000) for i in range(3)]
print("holding", flush=True)
sys.stdin.read()
"""


def test_sigkill_leaves_no_leases(daemon):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, daemon.socket, os.path.dirname(kvtier.__path__[0])],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"holding\n"
    with kvtier.Client(socket=daemon.socket, shm=False) as c:
        assert c.stats().leases >= 6
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        # The session's stream dies with the process; leases go at once, and
        # in any case within the lease time (1 s here).
        deadline = time.monotonic() + 3
        while c.stats().leases and time.monotonic() < deadline:
            time.sleep(0.05)
        st = c.stats()
        assert (st.leases, st.sessions) == (0, 0), st
        assert st.pinned_blocks == 0


def test_hint_reaches_daemon(client):
    # This daemon runs no prefetcher: every hint kind ends the stream with
    # UNIMPLEMENTED, which the client reports with the daemon's message.
    hints = [client.request_arrived("r1", [h(1, b"hint")], id=1),
             client.layer_attention("r1", 0, 1, [0], [1.0]),
             client.request_finished("r1")]
    try:
        acks = client.hint(hints)
    except kvtier.KVTierError as e:
        assert e.code.name == "UNIMPLEMENTED" and e.message
    else:
        assert [a.id for a in acks] == [1]


def test_get_many_releases_its_pins(daemon):
    # get_many releases its pins without waiting for the answer; the release
    # must still reach the daemon well before the leases (1 s here) expire.
    with kvtier.Client(socket=daemon.socket, namespace="rel") as c:
        hashes = [h(i, b"rel") for i in range(8)]
        c.put_many(hashes, [block(i) for i in range(8)], LAYOUT)
        outs = [np.empty(LAYOUT.nbytes, np.uint8) for _ in hashes]
        for _ in range(3):
            assert c.get_many(hashes, outs) == [None] * 8
        deadline = time.monotonic() + 0.4
        while c.stats().leases and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.stats().leases == 0


def test_tcp_and_tokens(tmp_path):
    # A daemon on TCP (insecure) and its Unix socket, with bearer tokens: the
    # client sends its token on both, and the daemon's verdicts come back as
    # Unauthenticated / PermissionDenied; shared memory, which needs a token
    # allowed every namespace, falls back to inline under shm="auto".
    import json
    import socket as sk

    from conftest import start_daemon

    (tmp_path / "tokens.json").write_text(json.dumps({"tokens": [
        {"name": "a", "token": "tok-a-0123456789abcdef", "namespaces": ["team-a/*"]},
        {"name": "admin", "token": "tok-admin-0123456789abcdef", "namespaces": ["*"]}]}))
    with sk.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = start_daemon(tmp_path, "--addr", f"127.0.0.1:{port}", "--insecure", "--tokens",
                     str(tmp_path / "tokens.json"))
    try:
        with kvtier.Client(addr=f"127.0.0.1:{port}", insecure=True, token="tok-a-0123456789abcdef", namespace="team-a/m") as c:
            for _ in range(100):  # the TCP listener may come up just after the socket
                try:
                    c.put(h(1, b"tcp"), block(1), LAYOUT)
                    break
                except kvtier.Unavailable:
                    time.sleep(0.05)
            np.testing.assert_array_equal(c.get(h(1, b"tcp")), block(1))
            with pytest.raises(kvtier.PermissionDenied):
                c.lookup([h(1)], namespace="team-b/m")
        with kvtier.Client(addr=f"127.0.0.1:{port}", insecure=True, namespace="team-a/m") as c:
            with pytest.raises(kvtier.Unauthenticated):
                c.lookup([h(1)])
        with kvtier.Client(socket=d.socket, token="tok-a-0123456789abcdef", namespace="team-a/m") as c:
            assert c.lookup([h(1, b"tcp")]).cached_blocks == 1
            np.testing.assert_array_equal(c.get(h(1, b"tcp")), block(1))
            assert c.session() is None  # refused shared memory: inline from now on
        with kvtier.Client(socket=d.socket, token="tok-admin-0123456789abcdef", namespace="team-a/m", shm=True) as c:
            np.testing.assert_array_equal(c.get(h(1, b"tcp")), block(1))
            assert c.session() is not None
    finally:
        d.stop()
    with pytest.raises(ValueError):
        kvtier.Client(addr="127.0.0.1:1")  # TCP needs tls= or insecure=True
