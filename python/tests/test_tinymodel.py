"""The harness model reproduces the fixture's reference and decodes sanely."""

from __future__ import annotations

import torch

from tinymodel import TinyModel


def test_incremental_equals_full():
    m = TinyModel()
    toks = list(b"package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(")
    full, kv = m.forward(toks, 0, [])
    a, kva = m.forward(toks[:20], 0, [])
    b, _ = m.forward(toks[20:], 20, kva)
    assert torch.allclose(torch.cat([a, b]), full, atol=1e-4)
    assert bytes(m.generate(toks, 8)).isascii()
