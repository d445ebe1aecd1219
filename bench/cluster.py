"""Cluster benchmark: what going through Ray Serve costs, and what a second replica gives.

    .venv/bin/python bench/cluster.py [--quick] [--write]

One machine, the default model (SmolLM2-135M-Instruct), `--threads 1` per engine, one system at a
time: plain `homeport serve` (the baseline), then `homeport serve --ray-address local` with 1 and
with 2 replicas (a private one-node Ray cluster). Measured: added latency per request (a 1-token
completion, sequential), time to first token of a stream, and aggregate throughput of concurrent
streams. Ratios are against the baseline of the same run. Needs the ray extra (`pip install -e '.[ray]'`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Ray Serve cluster (issue 18)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(tmp: Path, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = (tmp / f"serve-{port}.log").open("w")
    command = [sys.executable, "-m", "homeport", "serve", "--api-port", str(port), "--threads", "1",
               "--user-data-dir", str(tmp), *args]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {(tmp / f'serve-{port}.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=10).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not get ready")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: Ray's local processes with it
        process.wait()


def one_token_latencies(urls: list[str], n: int) -> list[float]:
    """Median seconds of a 1-token completion (the fixed cost of a request) for each url, the
    requests alternating between them so that other load on the machine hits all alike."""
    times: list[list[float]] = [[] for _ in urls]
    clients = [httpx.Client(base_url=url, timeout=120) for url in urls]
    try:
        for i in range(n + 2):
            for client, samples in zip(clients, times):
                began = time.perf_counter()
                r = client.post("/v1/completions", json={"model": "any", "prompt": f"Item {i}:", "max_tokens": 1})
                r.raise_for_status()
                if i >= 2:  # the first two warm up
                    samples.append(time.perf_counter() - began)
    finally:
        for client in clients:
            client.close()
    return [statistics.median(samples) for samples in times]


def stream(http: httpx.Client, prompt: str, tokens: int) -> tuple[float, int]:
    """(time to first token, completion tokens) of one streamed chat that runs its full length."""
    body = {"model": "any", "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
    began, ttft, count = time.perf_counter(), None, 0
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("choices") and event["choices"][0]["delta"].get("content") and ttft is None:
                ttft = time.perf_counter() - began
            if event.get("usage"):
                count = event["usage"]["completion_tokens"]
    return ttft or 0.0, count


def ttfts(urls: list[str], n: int) -> list[float]:
    """Median time to first token of short streams for each url, alternating like the latencies."""
    times: list[list[float]] = [[] for _ in urls]
    clients = [httpx.Client(base_url=url, timeout=120) for url in urls]
    try:
        for client in clients:
            stream(client, "warm up", 4)
        for i in range(n):
            for client, samples in zip(clients, times):
                samples.append(stream(client, f"Say something about {i}.", 8)[0])
    finally:
        for client in clients:
            client.close()
    return [statistics.median(samples) for samples in times]


def throughput(url: str, concurrent: int, tokens: int) -> float:
    """Completion tokens per second over `concurrent` simultaneous streams."""
    with httpx.Client(base_url=url, timeout=300, limits=httpx.Limits(max_connections=concurrent)) as http:
        stream(http, "warm up", 4)
        began = time.perf_counter()
        with ThreadPoolExecutor(concurrent) as pool:
            counts = list(pool.map(lambda i: stream(http, f"Write a story about ship {i}.", tokens)[1], range(concurrent)))
        return sum(counts) / (time.perf_counter() - began)


def report(results: dict[str, dict]) -> str:
    base = results["homeport serve"]
    lines = [SECTION, "",
             ("One machine, SmolLM2-135M-Instruct, `--threads 1` per engine, `--parallel 8`; `bench/cluster.py`. "
              "Latency: median of sequential 1-token completions; TTFT: median over 8-token streams; for the "
              "baseline and the 1-replica cluster the requests alternate between the two, both running. "
              "Throughput: completion tokens/s of 8 concurrent 96-token streams. Ratios against plain "
              "`homeport serve` in the same run."), "",
             "| system | latency (ms) | vs base | TTFT (ms) | vs base | throughput (tok/s) | vs base |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['latency'] * 1000:.1f} | {r['latency'] / base['latency']:.2f}x "
                     f"| {r['ttft'] * 1000:.1f} | {r['ttft'] / base['ttft']:.2f}x "
                     f"| {r['throughput']:.1f} | {r['throughput'] / base['throughput']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter requests")
    parser.add_argument("--write", action="store_true", help="replace the section in docs/benchmarks.md")
    args = parser.parse_args()
    n, tokens = (5, 32) if args.quick else (20, 96)
    names = ("homeport serve", "cluster, 1 replica", "cluster, 2 replicas")
    results: dict[str, dict] = {name: {} for name in names}
    with tempfile.TemporaryDirectory(prefix="hpbench-") as tmp:
        base, base_url = start(Path(tmp))
        try:
            # The baseline and a 1-replica cluster side by side: latency and TTFT alternate between them.
            one, one_url = start(Path(tmp), "--ray-address", "local", "--replicas", "1")
            try:
                for name, value in zip(names, one_token_latencies([base_url, one_url], n)):
                    results[name]["latency"] = value
                for name, value in zip(names, ttfts([base_url, one_url], n)):
                    results[name]["ttft"] = value
                results[names[1]]["throughput"] = throughput(one_url, 8, tokens)
            finally:
                stop(one)
            results[names[0]]["throughput"] = throughput(base_url, 8, tokens)
            two, two_url = start(Path(tmp), "--ray-address", "local", "--replicas", "2")
            try:
                results[names[2]]["latency"] = one_token_latencies([two_url], n)[0]
                results[names[2]]["ttft"] = ttfts([two_url], n)[0]
                results[names[2]]["throughput"] = throughput(two_url, 8, tokens)
            finally:
                stop(two)
        finally:
            stop(base)
    for name, values in results.items():
        print(name, {k: round(v, 4) for k, v in values.items()}, flush=True)
    text = report(results)
    print(text)
    if args.write:
        doc_path = ROOT / "docs" / "benchmarks.md"
        doc = doc_path.read_text()
        if SECTION in doc:
            start_at = doc.index(SECTION)
            end_at = doc.find("\n## ", start_at + len(SECTION))
            doc = doc[:start_at] + text + (doc[end_at + 1:] if end_at != -1 else "")
        else:
            doc = doc.rstrip("\n") + "\n\n" + text
        doc_path.write_text(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
