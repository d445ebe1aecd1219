"""Batch invariance: do concurrent greedy outputs equal the same requests run one at a time?

    .venv/bin/python bench/batch_invariance.py [homeport serve flags, e.g. --kv-unified]

Starts homeport on the default model, runs N greedy completions one at a time (each alone in
the batch, fresh cache), then the same N at once, and reports how many came out identical and
where the first difference falls. Not a pass/fail test: llama.cpp's floating-point path depends
on the batch shape, so some divergence is expected (issue 3 asks us to measure it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

sys.path.insert(0, os.path.dirname(__file__))
from serving import free_port, wait_ready  # noqa: E402

PROMPTS = [
    "The history of the lighthouse begins",
    "Recipe for bread: first,",
    "In the harbour, the ships",
    "1, 2, 3, 4, 5,",
    "The capital of France is",
    "Once upon a time, a fox",
    "def fibonacci(n):",
    "Dear committee members,",
]
TOKENS = 96


def complete(base: str, prompt: str) -> str:
    payload = {"prompt": prompt, "max_tokens": TOKENS, "temperature": 0, "logit_bias": {"1": -100, "106": -100}}
    return httpx.post(f"{base}/v1/completions", json=payload, timeout=600).json()["choices"][0]["text"]


def first_difference(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "homeport", "serve", "--api-port", str(port), *sys.argv[1:]],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/health/ready", process)
        # One at a time: each alone in the batch (short prompts share no 128-token chunk, so
        # each is decoded fresh).
        sequential = []
        for prompt in PROMPTS:
            sequential.append(complete(base, prompt))
        start = time.perf_counter()
        with ThreadPoolExecutor(len(PROMPTS)) as pool:
            concurrent = list(pool.map(lambda p: complete(base, p), PROMPTS))
        elapsed = time.perf_counter() - start
        repeat = [complete(base, p) for p in PROMPTS]  # one at a time again: run-to-run determinism
        in_a_row = [complete(base, p) == complete(base, p) for p in PROMPTS]  # the same request twice
    finally:
        process.terminate()
        process.wait(30)
    same = sum(a == b for a, b in zip(sequential, concurrent))
    cached_same = sum(a == b for a, b in zip(sequential, repeat))
    diffs = [first_difference(a, b) for a, b in zip(sequential, concurrent) if a != b]
    print(f"{len(PROMPTS)} greedy {TOKENS}-token completions, default model:")
    print(f"- concurrent == sequential: {same}/{len(PROMPTS)}"
          + (f" (first differing character at {sorted(diffs)})" if diffs else ""))
    print(f"- one at a time again == first run: {cached_same}/{len(PROMPTS)}")
    print(f"- the same request twice in a row, same output: {sum(in_a_row)}/{len(PROMPTS)}")
    print(f"- concurrent batch took {elapsed:.1f} s")


if __name__ == "__main__":
    main()
