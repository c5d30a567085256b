"""Detection of vLLM's paged KV-cache layouts.

vLLM's KV caches differ across versions and attention backends; each
registered tensor is in the *logical* order the backend's
get_kv_cache_shape() returns (the physical stride order may differ, e.g.
FlashInfer's HND). Known shapes (B blocks, T tokens per block, H KV heads,
D head size, L layers):

    K/V-first      [2, B, T, H, D]     FlashAttention, Triton, xFormers
    blocks-first   [B, 2, T, H, D]     FlashInfer (NHD; HND is a permuted view)
    blocks-first   [B, 2, H, T, D]     backends that expose HND logically
    packed K/V     [B, T, D]           MLA (one latent vector per token)
    cross-layer    [L, ...] or [B, L, ...] one tensor for every layer

The detection names every dimension of a tensor: from the backend's
get_kv_cache_shape() called with distinct sizes when the backend is known,
else by matching the tensor's sizes against these patterns. A block's bytes
are then stored in one canonical order whatever the layout:
[2][H][T][D] per layer (kvtier's KV_ORDER_INTERLEAVED with heads before
tokens), or [T][D] for packed K/V, so engines with different backends share
blocks.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from kvtier.types import Layout

__all__ = ["KVLayout", "detect", "PATTERNS"]

# Dimension names: "L" layer, "B" block, "KV" the K/V pair, "T" token, "H" head, "D" head dim.
PATTERNS: List[Tuple[str, ...]] = [
    ("KV", "B", "T", "H", "D"),
    ("B", "KV", "T", "H", "D"),
    ("B", "KV", "H", "T", "D"),
    ("B", "T", "KV", "H", "D"),
    ("B", "T", "D"),
    ("B", "T", "H", "D"),
    ("L", "KV", "B", "T", "H", "D"),
    ("B", "L", "KV", "T", "H", "D"),
    ("B", "L", "KV", "H", "T", "D"),
    ("L", "B", "KV", "T", "H", "D"),
    ("B", "L", "T", "D"),
]


@dataclasses.dataclass(frozen=True)
class KVLayout:
    """The meaning of each dimension of one registered KV tensor."""

    dims: Tuple[str, ...]

    @property
    def packed(self) -> bool:
        """K and V in one vector per token (no K/V dimension)."""
        return "KV" not in self.dims

    @property
    def cross_layer(self) -> bool:
        """One tensor holding every layer."""
        return "L" in self.dims

    def canonical(self) -> Tuple[str, ...]:
        """The order blocks are stored in (without the block dimension)."""
        order = ("L",) if self.cross_layer else ()
        order += ("KV",) if not self.packed else ()
        order += tuple(d for d in ("H", "T", "D") if d in self.dims)
        return order

    def block_view(self, t: torch.Tensor, block_id: int, layer: Optional[int] = None) -> torch.Tensor:
        """The block's slice of t, permuted to the canonical order (a view;
        contiguous only where the physical layout already is canonical).
        With layer, a cross-layer tensor's slice for that layer only."""
        v = t.select(self.dims.index("B"), block_id)
        rest = [d for d in self.dims if d != "B"]
        canon = self.canonical()
        v = v.permute(*[rest.index(d) for d in canon])
        if layer is not None and self.cross_layer:
            v = v[layer]
        return v

    def num_layers(self, t: torch.Tensor) -> int:
        """Layers in the tensor (1 unless cross-layer)."""
        return t.shape[self.dims.index("L")] if self.cross_layer else 1

    def layout(self, t: torch.Tensor, per_layer: bool = True) -> Layout:
        """The kvtier Layout of one stored block of t (one layer's, or every
        layer's for a cross-layer tensor with per_layer False)."""
        size = dict(zip(self.dims, t.shape))
        layers = 0 if per_layer or not self.cross_layer else size["L"]
        if self.packed:
            from kvtier.sglang import layout_for_bytes

            n = size["T"] * size["D"] * size.get("H", 1) * max(layers, 1) * t.element_size()
            return layout_for_bytes(n, t.dtype)
        return Layout(t.dtype, kv_heads=size["H"], head_dim=size["D"], tokens=size["T"], layers=layers,
                      order="interleaved")


def _from_backend(backend: Any, shape: Sequence[int], cross_layer: bool) -> Optional[KVLayout]:
    fn = getattr(backend, "get_kv_cache_shape", None)
    if fn is None:
        return None
    B, T, H, D = 1009, 17, 7, 23  # distinct sizes: each names one dimension
    try:
        probe = tuple(fn(num_blocks=B, block_size=T, num_kv_heads=H, head_size=D))
    except Exception:  # noqa: BLE001 - an unusual backend: fall back to shapes
        return None
    names = {B: "B", T: "T", H: "H", D: "D", 2: "KV"}
    dims = tuple(names.get(s, "?") for s in probe)
    if "?" in dims:
        return None
    if cross_layer and len(shape) == len(dims) + 1:
        dims = ("L",) + dims
    return KVLayout(dims) if len(dims) == len(shape) else None


def detect(t: torch.Tensor, *, num_blocks: Optional[int], block_size: int, num_kv_heads: int, head_size: int,
           num_layers: int = 1, backend: Any = None, cross_layer: bool = False) -> KVLayout:
    """Names the dimensions of a registered KV tensor. Raises ValueError
    when its shape fits no known layout."""
    shape = tuple(t.shape)
    if backend is not None:
        lay = _from_backend(backend, shape, cross_layer)
        if lay is not None and _fits(lay.dims, shape, num_blocks, block_size, num_kv_heads, head_size,
                                     num_layers):
            return lay
    for p in PATTERNS:
        if ("L" in p) != cross_layer:
            continue
        if _fits(p, shape, num_blocks, block_size, num_kv_heads, head_size, num_layers):
            return KVLayout(p)
    raise ValueError(f"kvtier: KV cache shape {shape} fits no known layout (blocks {num_blocks}, "
                     f"block size {block_size}, kv heads {num_kv_heads}, head size {head_size})")


def _fits(p: Sequence[str], shape: Sequence[int], B: Optional[int], T: int, H: int, D: int, L: int) -> bool:
    if len(p) != len(shape):
        return False
    want = {"KV": 2, "T": T, "H": H, "D": D, "L": L}
    for d, s in zip(p, shape):
        if d == "B":
            if B is not None and s != B:
                return False
        elif d == "D" and "H" not in p and "KV" not in p:
            continue  # packed latent: any width
        elif want[d] != s:
            return False
    return True
