"""The tiny Llama-architecture model of testdata/model.bin (a copy of
shared/testdata/model, format in its README) in PyTorch, float32, for the
engine harnesses.

Its KV state is per layer K and V of shape [tokens, kv_heads, head_dim]
(K after RoPE). forward() runs new tokens at positions start..start+n given
the K/V of positions 0..start, and returns the logits and the new tokens'
K/V; the harness engines keep that state in paged caches of vLLM's or
SGLang's layouts and gather it back for each step.
"""

from __future__ import annotations

import pathlib
from typing import Any, List, Tuple

import numpy as np
import torch

MODEL = pathlib.Path(__file__).parent / "testdata" / "model.bin"


class TinyModel:
    """Weights and the forward pass."""

    def __init__(self, path: pathlib.Path = MODEL):
        raw = np.fromfile(path, dtype=np.uint8)
        hdr = raw[:28].view(np.int32)
        self.dim, self.hidden, self.layers, self.heads, self.kv_heads, self.vocab, self.max_seq = map(int, hdr)
        self.head_dim = self.dim // self.heads
        f = torch.from_numpy(raw[28:].view(np.float32).copy())
        off = 0

        def take(*shape: int) -> torch.Tensor:
            nonlocal off
            n = int(np.prod(shape))
            t = f[off:off + n].view(*shape)
            off += n
            return t

        L, d, hd, kvd = self.layers, self.dim, self.hidden, self.kv_heads * self.head_dim
        self.emb = take(self.vocab, d)
        self.rms_att = take(L, d)
        self.wq, self.wk, self.wv, self.wo = take(L, d, d), take(L, kvd, d), take(L, kvd, d), take(L, d, d)
        self.rms_ffn = take(L, d)
        self.w1, self.w2, self.w3 = take(L, hd, d), take(L, d, hd), take(L, hd, d)
        self.rms_final = take(d)
        i = torch.arange(0, self.head_dim, 2, dtype=torch.float32)
        self.inv_freq = 10000.0 ** (-i / self.head_dim)

    @staticmethod
    def _rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    def _rope(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        # x: [n, heads, head_dim]; rotate interleaved pairs (2i, 2i+1).
        ang = pos[:, None].float() * self.inv_freq[None, :]
        cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = torch.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    @torch.no_grad()
    def forward(self, tokens: List[int], start: int, past: Any, on_kv: Any = None
                ) -> Tuple[torch.Tensor, List[Tuple[torch.Tensor, torch.Tensor]]]:
        """Runs tokens at positions start.. with past[layer] = (K, V) of
        positions 0..start ([start, kv_heads, head_dim] each, or empty).
        past may also be a function of the layer (called just before the
        layer's attention, as a paged engine reads its cache), and on_kv(layer,
        k, v) is called with each layer's new K/V before its attention reads
        them (as an engine writes them into its paged cache).
        Returns the logits of every new token and each layer's new (K, V)."""
        n = len(tokens)
        x = self.emb[torch.tensor(tokens)]
        pos = torch.arange(start, start + n)
        new = []
        group = self.heads // self.kv_heads
        mask = torch.full((n, start + n), float("-inf")).triu(start + 1)
        for l in range(self.layers):
            h = self._rms(x, self.rms_att[l])
            q = self._rope((h @ self.wq[l].T).view(n, self.heads, self.head_dim), pos)
            k = self._rope((h @ self.wk[l].T).view(n, self.kv_heads, self.head_dim), pos)
            v = (h @ self.wv[l].T).view(n, self.kv_heads, self.head_dim)
            new.append((k, v))
            if on_kv is not None:
                on_kv(l, k, v)
            if callable(past):
                pk, pv = past(l)
            else:
                pk, pv = past[l] if past else (k[:0], v[:0])
            K, V = torch.cat([pk, k]), torch.cat([pv, v])
            K = K.repeat_interleave(group, dim=1)
            V = V.repeat_interleave(group, dim=1)
            att = torch.einsum("qhd,khd->hqk", q, K) / self.head_dim ** 0.5 + mask
            o = torch.einsum("hqk,khd->qhd", att.softmax(-1), V).reshape(n, self.dim)
            x = x + o @ self.wo[l].T
            h = self._rms(x, self.rms_ffn[l])
            x = x + (torch.nn.functional.silu(h @ self.w1[l].T) * (h @ self.w3[l].T)) @ self.w2[l].T
        return self._rms(x, self.rms_final) @ self.emb.T, new

    def generate(self, prompt: List[int], steps: int) -> List[int]:
        """Greedy decoding from scratch (the recompute reference)."""
        logits, kv = self.forward(prompt, 0, [])
        out = []
        for _ in range(steps):
            t = int(logits[-1].argmax())
            out.append(t)
            logits, new = self.forward([t], len(prompt) + len(out) - 1, kv)
            kv = [(torch.cat([k, nk]), torch.cat([v, nv])) for (k, v), (nk, nv) in zip(kv, new)]
        return out
