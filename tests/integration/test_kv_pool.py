"""The unified KV cache as one pool shared by the running requests (engines/llama_cpp/kv_pool.py):
when their growth outruns it, the newest request pauses, gives up its cells, re-reads its prompt and
output later and goes on. Its client sees only a delay: the text continues where it was."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.server import API_KEY, start_server, stop_server


@pytest.fixture(scope="module")
def small_pool(tmp_path_factory):
    # 4 slots sharing 256 cells (one context): four 210-cell requests cannot all hold their KV at once.
    running = start_server(tmp_path_factory.mktemp("kvpool"), "--api-key", API_KEY, "--ctx-size", "256",
                           "--parallel", "4")
    yield running
    stop_server(running)


def counting(start: int) -> str:
    return ", ".join(str(start + i) for i in range(6)) + ","


def consecutive_run(start: int, text: str) -> int:
    """How many numbers the continuation counts on correctly from start + 6."""
    numbers = re.findall(r"\d+", text)
    n = 0
    for found in numbers[:-1]:  # the last may be cut mid-number by max_tokens
        if int(found) != start + 6 + n:
            break
        n += 1
    return n


def test_requests_outgrowing_the_pool_pause_and_resume_where_they_were(small_pool):
    starts = [10, 300, 2000, 50000]
    payloads = [{"prompt": counting(s), "max_tokens": 180, "temperature": 0, "ignore_eos": True} for s in starts]
    with small_pool.http() as http:
        before = http.get("/v1/internal/model/info").json()["generation"]["paused"]
        with ThreadPoolExecutor(len(payloads)) as pool:
            bodies = list(pool.map(lambda p: http.post("/v1/completions", json=p, timeout=600).json(), payloads))
        after = http.get("/v1/internal/model/info").json()["generation"]
    assert after["paused"] > before  # the pool did run dry
    assert after["failed"] == 0
    for start, body in zip(starts, bodies):
        choice = body["choices"][0]
        assert choice["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 180, body
        # Counting on is what a correct KV gives: a resumed request with lost or misplaced cells
        # would lose count. 180 tokens are well over 20 numbers here.
        assert consecutive_run(start, choice["text"]) >= 20, (start, choice["text"])


def test_a_request_alone_still_has_the_whole_context(small_pool):
    payload = {"prompt": counting(7), "max_tokens": 225, "temperature": 0, "ignore_eos": True}
    with small_pool.http() as http:
        body = http.post("/v1/completions", json=payload, timeout=600).json()
    assert body["usage"]["completion_tokens"] == 225 and body["usage"]["total_tokens"] > 240, body["usage"]
