"""Images benchmark: homeport's /v1/images/generations against the bare diffusers pipeline call,
in one run, on the tiny random-weight Stable Diffusion of tests/support/tiny_diffusers.py (no real
weights are installable here; the ratio measures homeport's overhead, not image quality).

    .venv/bin/python bench/images.py [--quick] [--write]

- Seconds per image at 64×64 and 256×256, 10 steps, DDIM, one image per request: homeport (HTTP,
  JSON, the worker thread, PNG + base64) against `pipe(...)` in this process on the same folder with
  the same threads, then PNG-encoded (what homeport must do too). Ratio = bare / homeport
  (≥ 0.95: within 5 %).
- Queue: 4 concurrent clients, each one 64×64 image: total wall time, and each request's latency
  (they run one at a time, in arrival order).

`--write` replaces the images section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from serving import free_port, wait_ready, write_section  # noqa: E402
from support.tiny_diffusers import build_tiny_sd  # noqa: E402

SECTION = "## Images (issue 12)"
STEPS = 10
THREADS = 2


def bare_pipeline(folder: Path):
    import torch
    from diffusers import AutoPipelineForText2Image

    torch.set_num_threads(THREADS)
    pipe = AutoPipelineForText2Image.from_pretrained(str(folder), local_files_only=True, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bare_once(pipe, side: int, seed: int) -> float:
    import torch

    start = time.perf_counter()
    with torch.inference_mode():  # as homeport's worker runs it
        image = pipe("an orange tree", num_inference_steps=STEPS, width=side, height=side, guidance_scale=7.0,
                     generator=torch.Generator().manual_seed(seed)).images[0]
    image.save(io.BytesIO(), "PNG")
    return time.perf_counter() - start


def served_once(client: httpx.Client, side: int, seed: int) -> float:
    start = time.perf_counter()
    client.post("/v1/images/generations", json={"prompt": "an orange tree", "steps": STEPS, "seed": seed,
                                                "cfg_scale": 7.0, "size": f"{side}x{side}"}).raise_for_status()
    return time.perf_counter() - start


def compare(base: str, pipe, side: int, runs: int) -> tuple[float, float]:
    """Bare and served runs alternate (the idle server costs nothing meanwhile), so both see the
    same machine load; the first of each is a warm-up."""
    bare, served = [], []
    with httpx.Client(base_url=base, timeout=600) as client:
        for i in range(runs + 1):
            b = bare_once(pipe, side, i)
            time.sleep(0.5)  # torch's idle worker threads spin a while: let them stop before the other side runs
            s = served_once(client, side, i)
            time.sleep(0.5)
            if i:
                bare.append(b)
                served.append(s)
    return statistics.median(bare), statistics.median(served)


def queue(base: str, clients: int = 4) -> tuple[float, list[float]]:
    def one(i: int) -> float:
        start = time.perf_counter()
        httpx.post(f"{base}/v1/images/generations", timeout=600, json={
            "prompt": "an orange tree", "steps": STEPS, "seed": i, "size": "64x64"}).raise_for_status()
        return time.perf_counter() - start

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        latencies = sorted(pool.map(one, range(clients)))
    return time.perf_counter() - start, latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    parser.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md")
    options = parser.parse_args()
    runs = 2 if options.quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        folder = build_tiny_sd(models / "tiny-sd")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [sys.executable, "-m", "homeport", "serve", "--api-port", str(port), "--model-dir", str(models),
             "--image-model", "tiny-sd", "--user-data-dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(f"{base}/health", process)
            httpx.post(f"{base}/v1/internal/model/load", timeout=600,
                       json={"model_name": "tiny-sd", "args": {"threads": THREADS, "device": "cpu"}}).raise_for_status()
            pipe = bare_pipeline(folder)
            results = {side: compare(base, pipe, side, runs) for side in (64, 256)}
            wall, latencies = queue(base)
        finally:
            process.terminate()
            process.wait(timeout=60)
        bare = {side: results[side][0] for side in results}
        served = {side: results[side][1] for side in results}
    lines = [
        SECTION, "",
        f"Tiny random-weight Stable Diffusion (tests/support/tiny_diffusers.py), CPU, {THREADS} threads, {STEPS} "
        f"DDIM steps, one image per request, median of {runs}, bare and homeport runs alternating; `.venv/bin/python bench/images.py`.", "",
        "| | bare diffusers | homeport | ratio (bare / homeport) |", "|---|---|---|---|",
        *(f"| {side}×{side}: seconds per image | {bare[side]:.3f} | {served[side]:.3f} | {bare[side] / served[side]:.2f} |"
          for side in (64, 256)),
        f"| queue: 4 concurrent clients, 64×64 | | {wall:.2f} s total; latencies "
        f"{', '.join(f'{x:.2f}' for x in latencies)} s | |", "",
        "homeport's times include the HTTP round trip, the worker thread hand-off, PNG encoding and base64 "
        "(the bare run PNG-encodes too). Other work on the machine moves both columns together (the runs alternate). Requests for one model run one at a time in arrival order, so under "
        "4 clients the latencies step up by about one image each.", "",
    ]
    text = "\n".join(lines)
    print(text)
    if options.write:
        write_section(ROOT / "docs" / "benchmarks.md", SECTION, text)


if __name__ == "__main__":
    main()
