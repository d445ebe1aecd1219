"""A real `homeport serve` subprocess on a packaged model, on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai

API_KEY = "integration-test-key"
# The suite's servers run Gemma 3 270M (a base model) unless a test asks for another: its assertions
# were written against it. The default model (no --model) is SmolLM2-135M-Instruct.
GEMMA_MODEL_ID = "gemma-3-270m-q4_k_m"
SMOLLM2_MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    base_url: str
    process: subprocess.Popen
    log_path: Path

    def http(self, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=120, **kwargs)

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=120)

    def generation_stats(self) -> dict:
        with self.http() as client:
            return client.get("/v1/internal/model/info").json()["generation"]

    def wait_idle(self, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.generation_stats()
            if stats["active"] == 0:
                return stats
            time.sleep(0.05)
        raise AssertionError(f"generation still active after {timeout}s: {stats}")


def start_server(tmp_dir: Path, *args: str, model: str | None = GEMMA_MODEL_ID) -> RunningServer:
    """`model` None: the server's own default model."""
    port = free_port()
    if model is not None and "--model" not in args:
        args = ("--model", model, *args)
    log_path = tmp_dir / f"server-{port}.log"
    command = [sys.executable, "-m", "homeport", "serve", "--api-port", str(port), "--user-data-dir", str(tmp_dir), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENEDAI_")}
    log_file = log_path.open("w")
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    scheme = "https" if "--ssl-certfile" in args else "http"
    base_url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            # Ready, not just live: the default model loads after the server starts answering.
            if httpx.get(f"{base_url}/health/ready", timeout=1, verify=False).status_code == 200:
                return RunningServer(base_url, process, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not start:\n{log_path.read_text()}")


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


