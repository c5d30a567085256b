"""Byte views of caller buffers: bytes, bytearray, memoryview, numpy arrays
and (CPU) torch tensors, without copying where the memory allows."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_u8", "writable_u8"]


def _torch_u8(t: Any) -> np.ndarray:
    if t.device.type != "cpu":
        raise TypeError(f"kvtier: tensor on {t.device}: pass a CPU tensor (copy device tensors to pinned host memory first)")
    if not t.is_contiguous():
        raise ValueError("kvtier: tensor is not contiguous")
    flat = t.reshape(-1)
    if flat.element_size() != 1:
        import torch

        # A same-storage byte view; works for bfloat16 and float8, which
        # numpy has no dtype for.
        flat = flat.view(torch.uint8)
    return flat.numpy()


def as_u8(data: Any) -> np.ndarray:
    """Returns a flat uint8 numpy view of data (no copy for contiguous input)."""
    if type(data).__module__.startswith("torch"):
        return _torch_u8(data)
    if isinstance(data, np.ndarray):
        if not data.flags.c_contiguous:
            raise ValueError("kvtier: array is not C-contiguous")
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def writable_u8(buf: Any) -> np.ndarray:
    """Returns a flat, writable uint8 view of buf (an error if it is read-only)."""
    v = as_u8(buf)
    if not v.flags.writeable:
        raise ValueError("kvtier: output buffer is read-only")
    return v
