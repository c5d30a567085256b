"""Shared pieces of the engine harnesses: prompts, KV helpers, timing.

Engine A stores the KV of BASE prompts; engine B (a separate process) serves
prompts that share the first SHARED tokens (90%) with them, loading the
cached prefix instead of recomputing it, and its greedy output is compared
with recomputation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Callable, List, Tuple

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT = (b"package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n\t\"strings\"\n)\n\n"
        b"// count returns how many times each word occurs in the lines.\n"
        b"func count(lines []string) map[string]int {\n\tm := make(map[string]int)\n"
        b"\tfor _, line := range lines {\n\t\tfor _, w := range strings.Fields(line) {\n"
        b"\t\t\tm[strings.ToLower(w)]++\n\t\t}\n\t}\n\treturn m\n}\n\n"
        b"func main() {\n\tdata, err := os.ReadFile(os.Args[1])\n\tif err != nil {\n"
        b"\t\tfmt.Fprintln(os.Stderr, err)\n\t\tos.Exit(1)\n\t}\n"
        b"\tfor w, n := range count(strings.Split(string(data), \"\\n\")) {\n"
        b"\t\tfmt.Printf(\"%s\\t%d\\n\", w, n)\n\t}\n}\n")
FULL = os.environ.get("KVTIER_BENCH") == "1"
BLOCK = 16
# A's prompts; B's share SHARED tokens (whole blocks) and add TAIL: 90%.
# Half as long by default, so that make test stays quick.
BASE_LEN = 256 if FULL else 128
SHARED = 224 if FULL else 112
TAIL = 24 if FULL else 12
#: Prompts per engine, timing repetitions and decode steps: small by
#: default so that make test stays quick; KVTIER_BENCH=1 for the figures.
N_PROMPTS = 3 if FULL else 1
REPS = 5 if FULL else 1
STEPS = 12 if FULL else 6


def base_prompts(n: int = N_PROMPTS) -> List[List[int]]:
    """Engine A's prompts: 256 tokens each, from different offsets."""
    t = TEXT * 4
    return [list(t[i * 37:i * 37 + BASE_LEN]) for i in range(n)]


def b_prompts(n: int = N_PROMPTS) -> List[List[int]]:
    """Engine B's prompts: the first SHARED tokens of A's, then a new tail."""
    tails = [b"\tfmt.Println(len(data))\n\treturn\n}", b"// helper prints its argument.\n",
             b"\tvar total int\n\tfor range m {"]
    return [p[:SHARED] + list(tails[i % len(tails)][:TAIL].ljust(TAIL, b" ")) for i, p in enumerate(base_prompts(n))]


def greedy(model, prompt_len: int, logits: torch.Tensor, kv, steps: int = STEPS) -> List[int]:
    """Greedy decoding after a prefill whose last logits and KV are given."""
    out = []
    for _ in range(steps):
        t = int(logits[-1].argmax())
        out.append(t)
        logits, new = model.forward([t], prompt_len + len(out) - 1, kv)
        kv = [(torch.cat([k, nk]), torch.cat([v, nv])) for (k, v), (nk, nv) in zip(kv, new)]
    return out


def timed(fn: Callable[[], object], reps: int = REPS) -> Tuple[float, object]:
    """The best wall time of fn over reps runs, and its last result."""
    best, r = float("inf"), None
    for _ in range(reps):
        t = time.perf_counter()
        r = fn()
        best = min(best, time.perf_counter() - t)
    return best, r


def run_engine(script: str, *args: str) -> dict:
    """Runs an engine script in a separate process; returns its JSON output."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), HERE]))
    p = subprocess.run([sys.executable, os.path.join(HERE, script), *args], capture_output=True, text=True,
                       env=env, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"{script} {args} failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])
