"""Prefix hashing identical to the daemon's (`kvtier hash`, Go package
tiers/prefixhash): a chain of digests, one per full block of token ids,

    h_0 = H(root, tokens of block 0, extras_0)
    h_i = H(h_{i-1}, tokens of block i, extras_i)

Modes:

- "xxh3" (kvtier's fast default, not vLLM compatible): 16-byte XXH3-128
  digests (big-endian canonical form). root = XXH3-128(seed's UTF-8 bytes);
  block i hashes parent (16 bytes) | n (uint32 LE) | n token ids (uint32 LE)
  | flags (1 byte: bit 0 LoRA, bit 1 cache salt, block 0 only) | [LoRA as
  uint32 LE length + bytes] | [salt as uint32 LE length + bytes].
- "sha256_cbor" and "xxhash_cbor": vLLM's block hashes, byte for byte:
  H(canonical CBOR of [parent digest, [token ids], extras]) where extras is
  None or [LoRA name (every block), cache salt (block 0 only)], and root =
  H(cbor(seed)). H is SHA-256 (32 bytes) or XXH3-128 (16 bytes).

The seed defaults to vLLM's "vllm-none-hash" (its value when PYTHONHASHSEED
is unset). A trailing partial block is not hashed. event_id() gives the
integer form vLLM's KV events carry.
"""

from __future__ import annotations

import hashlib
import struct
from typing import List, Optional, Sequence

__all__ = ["DEFAULT_SEED", "ALGOS", "chain", "root", "event_id", "digest_size"]

#: vLLM's seed when PYTHONHASHSEED is unset.
DEFAULT_SEED = "vllm-none-hash"
#: The supported modes.
ALGOS = ("xxh3", "sha256_cbor", "xxhash_cbor")


def digest_size(algo: str) -> int:
    """The digest length in bytes of a mode."""
    _check(algo)
    return 32 if algo == "sha256_cbor" else 16


def _check(algo: str) -> None:
    if algo not in ALGOS:
        raise ValueError(f"kvtier: hash algo {algo!r}, want one of {', '.join(ALGOS)}")


def _xxh3_128(b: bytes) -> bytes:
    import xxhash

    return xxhash.xxh3_128(b).digest()


def _h(algo: str, b: bytes) -> bytes:
    return hashlib.sha256(b).digest() if algo == "sha256_cbor" else _xxh3_128(b)


def _cbor(obj: object) -> bytes:
    import cbor2

    return cbor2.dumps(obj, canonical=True)


def root(algo: str = "xxh3", seed: Optional[str] = None) -> bytes:
    """The chain's root digest (the parent of block 0)."""
    _check(algo)
    s = DEFAULT_SEED if seed is None else seed
    if algo == "xxh3":
        return _xxh3_128(s.encode())
    return _h(algo, _cbor(s))


def chain(token_ids: Sequence[int], block_tokens: int, *, algo: str = "xxh3", seed: Optional[str] = None,
          lora: Optional[str] = None, cache_salt: Optional[str] = None,
          parent: Optional[bytes] = None) -> List[bytes]:
    """Returns the digest of every full block of token_ids. parent continues
    a chain (the digest of the block before token_ids[0]); the cache salt is
    then not hashed, as it belongs to block 0 only."""
    _check(algo)
    if block_tokens <= 0:
        raise ValueError("kvtier: block_tokens must be positive")
    for t in token_ids:
        if not 0 <= t < 1 << 32:
            raise ValueError(f"kvtier: token id {t} outside uint32")
    first = parent is None
    prev = root(algo, seed) if first else parent
    out: List[bytes] = []
    n = len(token_ids) // block_tokens
    for i in range(n):
        toks = [int(t) for t in token_ids[i * block_tokens:(i + 1) * block_tokens]]
        salt = cache_salt if (first and i == 0 and cache_salt) else None
        if algo == "xxh3":
            flags = (1 if lora else 0) | (2 if salt else 0)
            parts = [prev, struct.pack(f"<I{len(toks)}I", len(toks), *toks), bytes([flags])]
            for x in (lora, salt):
                if x:
                    e = x.encode()
                    parts += [struct.pack("<I", len(e)), e]
            prev = _xxh3_128(b"".join(parts))
        else:
            extras = [x for x in (lora, salt) if x] or None
            prev = _h(algo, _cbor([prev, toks, extras]))
        out.append(prev)
    return out


def event_id(digest: bytes) -> int:
    """The form vLLM's KV events carry a block hash in: its last 8 bytes,
    big-endian."""
    return int.from_bytes(digest[-8:], "big")
