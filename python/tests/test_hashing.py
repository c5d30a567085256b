"""kvtier.hashing on the Go package's vectors (tiers/prefixhash/testdata,
copied here), and against the daemon's own hashing."""

from __future__ import annotations

import json
import pathlib

import pytest

from kvtier import hashing

DATA = pathlib.Path(__file__).parent / "testdata"


def vectors():
    for name in ("vllm-block-hashes.jsonl", "xxh3-block-hashes.jsonl"):
        for i, line in enumerate((DATA / name).read_text().splitlines()):
            if line.strip():
                yield pytest.param(json.loads(line), id=f"{name}:{i}")


@pytest.mark.parametrize("v", vectors())
def test_vectors(v):
    got = hashing.chain(v["tokens"], v["block_tokens"], algo=v["algo"], seed=v["seed"], lora=v["lora"],
                        cache_salt=v["cache_salt"])
    assert [g.hex() for g in got] == v["hashes"]
    assert hashing.root(v["algo"], v["seed"]).hex() == v["seed_hash"]
    assert [hashing.event_id(g) for g in got] == v["event_ids"]


def test_vector_files_cover_every_mode():
    algos = {p.values[0]["algo"] for p in vectors()}
    assert algos == set(hashing.ALGOS)


def test_parent_continues_chain():
    toks = list(range(100))
    full = hashing.chain(toks, 16, algo="xxhash_cbor", cache_salt="s")
    tail = hashing.chain(toks[32:], 16, algo="xxhash_cbor", parent=full[1])
    assert tail == full[2:]


@pytest.mark.parametrize("bad", [dict(algo="md5"), dict(block_tokens=0), dict(tokens=[-1] * 16)])
def test_bad_input(bad):
    with pytest.raises(ValueError):
        hashing.chain(bad.get("tokens", [1] * 16), bad.get("block_tokens", 16), algo=bad.get("algo", "xxh3"))


@pytest.mark.parametrize("algo", hashing.ALGOS)
def test_same_as_daemon(client, algo):
    import kvtier

    toks = [(i * 7919) % 50000 for i in range(70)]
    p = kvtier.HashParams(block_tokens=8, algo=algo, seed="s", lora="L", cache_salt="salt")
    r = client.lookup_tokens(toks, p, return_hashes=True)
    assert r.hashes == hashing.chain(toks, 8, algo=algo, seed="s", lora="L", cache_salt="salt")
