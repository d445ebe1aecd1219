"""A long conversation's next turns: time to first token with the idle-cache store and without.

    .venv/bin/python bench/long_conversation.py [--entries 150] [--rounds 2] [--model NAME]

Each trial starts a fresh `homeport serve`, sends one long first turn (a log of `--entries`
lines, ~25 tokens each, then a question), then 5 short follow-ups, each carrying the whole
conversation, and reports the follow-ups' median TTFT. With `--cache-ram` (the default) every
admission copies the conversation's cells out of the KV cache and back; with `--cache-ram 0`
they stay where they are. The two alternate, one server at a time. Prints; writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_server import CACHE, packaged_models
from serving import chat_ttft, free_port, wait_ready

FOLLOW_UPS = 5


def turn(base: str, messages: list[dict]) -> tuple[float, str]:
    """(ms to the first token, the reply) of one streamed 24-token greedy chat turn."""
    seconds, reply = chat_ttft(base, messages, max_tokens=24)
    return seconds * 1000, reply


def trial(model_name: str, entries: int, extra: list[str]) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "homeport", "serve", "--api-port", str(port), "--user-data-dir",
               str(CACHE / "homeport-data"), "--model", model_name, "--threads", "2", *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/health/ready", process)
        log = "".join(f"Entry {n}: the ferry {n % 13} left berth {n % 7} at {6 + n % 12} o'clock "
                      f"with {40 + 3 * n} passengers.\n" for n in range(entries))
        messages = [{"role": "user", "content": log + "Which ferry left at 7 o'clock first?"}]
        first, reply = turn(base, messages)
        follow_ups = []
        for k in range(FOLLOW_UPS):
            messages += [{"role": "assistant", "content": reply},
                         {"role": "user", "content": f"And which one carried {100 + k} passengers?"}]
            ms, reply = turn(base, messages)
            follow_ups.append(ms)
        generation = httpx.get(f"{base}/v1/internal/model/info").json().get("generation", {})
        return {"first_turn_ms": round(first), "follow_up_p50_ms": round(statistics.median(follow_ups)),
                "caches_stored": generation.get("caches_stored"), "caches_restored": generation.get("caches_restored")}
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default=packaged_models()[0].name)
    args = parser.parse_args()
    for r in range(args.rounds):
        for label, extra in (("store (default)", []), ("--cache-ram 0", ["--cache-ram", "0"])):
            print(f"round {r + 1}, {label}: {trial(args.model, args.entries, extra)}", flush=True)


if __name__ == "__main__":
    main()
