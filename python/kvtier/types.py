"""Value types of the kvtier API: block layouts, lookup results, tiers."""

from __future__ import annotations

import dataclasses
from typing import Any, List, Sequence

from kvtier.v1 import kvtier_pb2 as pb

__all__ = ["Layout", "LookupResult", "Tier", "DTYPE_SIZES", "dtype_name"]

DTYPE_SIZES = {"fp16": 2, "bf16": 2, "fp32": 4, "fp8": 1}
_DTYPE_PB = {"fp16": pb.DTYPE_FP16, "bf16": pb.DTYPE_BF16, "fp32": pb.DTYPE_FP32, "fp8": pb.DTYPE_FP8}
_PB_DTYPE = {v: k for k, v in _DTYPE_PB.items()}
_ORDER_PB = {"separate": pb.KV_ORDER_SEPARATE, "interleaved": pb.KV_ORDER_INTERLEAVED}
_PB_ORDER = {v: k for k, v in _ORDER_PB.items()}
_PB_ORDER[pb.KV_ORDER_UNSPECIFIED] = "separate"


class Tier:
    """Tier names, fastest first, as the daemon reports them."""

    NONE = "none"
    HBM = "hbm"
    DRAM = "dram"
    NVME = "nvme"

    _FROM_PB = {pb.TIER_UNSPECIFIED: "none", pb.TIER_HBM: "hbm", pb.TIER_DRAM: "dram", pb.TIER_NVME: "nvme"}

    @classmethod
    def from_pb(cls, t: int) -> str:
        """Returns the name of a kvtier.v1.Tier value."""
        return cls._FROM_PB.get(t, f"tier({t})")


def dtype_name(dtype: Any) -> str:
    """Returns the kvtier dtype name ("fp16", "bf16", "fp32", "fp8") of a
    name, a numpy dtype or a torch dtype."""
    if isinstance(dtype, str) and dtype in DTYPE_SIZES:
        return dtype
    s = str(dtype).replace("torch.", "")
    m = {"float16": "fp16", "half": "fp16", "bfloat16": "bf16", "float32": "fp32", "float": "fp32",
         "float8_e4m3fn": "fp8", "float8_e5m2": "fp8", "uint8": "fp8", "int8": "fp8"}
    if s in m:
        return m[s]
    raise ValueError(f"kvtier: dtype {dtype!r} not supported (fp16, bf16, fp32 or a 1-byte fp8)")


@dataclasses.dataclass(frozen=True)
class Layout:
    """The tensor a block holds: its size is
    2 * max(layers, 1) * kv_heads * tokens * head_dim * sizeof(dtype).

    Attributes:
        dtype: "fp16", "bf16", "fp32" or "fp8" (or a numpy/torch dtype).
        kv_heads: KV heads in the block.
        head_dim: head dimension.
        tokens: tokens in the block.
        layers: 0 or 1 for a per-layer block, else the layers it holds.
        order: "separate" (all K, then all V) or "interleaved" (per layer, K then V).
    """

    dtype: str
    kv_heads: int
    head_dim: int
    tokens: int
    layers: int = 0
    order: str = "separate"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        if self.order not in _ORDER_PB:
            raise ValueError(f"kvtier: order {self.order!r}, want 'separate' or 'interleaved'")
        for f in ("kv_heads", "head_dim", "tokens", "layers"):
            if int(getattr(self, f)) < 0:
                raise ValueError(f"kvtier: layout {f} is negative")

    @property
    def nbytes(self) -> int:
        """The block's size in bytes."""
        return 2 * max(self.layers, 1) * self.kv_heads * self.tokens * self.head_dim * DTYPE_SIZES[self.dtype]

    def to_pb(self) -> pb.Layout:
        """Returns the kvtier.v1.Layout message."""
        return pb.Layout(dtype=_DTYPE_PB[self.dtype], order=_ORDER_PB[self.order], layers=self.layers,
                         kv_heads=self.kv_heads, head_dim=self.head_dim, tokens=self.tokens)

    @classmethod
    def from_pb(cls, m: pb.Layout) -> "Layout":
        """Builds a Layout from a kvtier.v1.Layout message."""
        if m.dtype not in _PB_DTYPE:
            raise ValueError(f"kvtier: layout dtype {m.dtype} unknown")
        return cls(dtype=_PB_DTYPE[m.dtype], kv_heads=m.kv_heads, head_dim=m.head_dim, tokens=m.tokens,
                   layers=m.layers, order=_PB_ORDER.get(m.order, "separate"))


@dataclasses.dataclass
class LookupResult:
    """The cached prefix of a chain.

    Attributes:
        cached_blocks: leading blocks cached.
        total_blocks: blocks in the chain.
        tiers: the fastest tier holding each cached block (Tier names).
        hashes: with token ids and return_hashes, every full block's hash.
    """

    cached_blocks: int
    total_blocks: int
    tiers: List[str]
    hashes: Sequence[bytes] = ()
