"""Many clients at once: continuous batching, prefix cache, queueing, stop-generation, soak."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from support.server import API_KEY, start_server, stop_server
from support.sse import parse_sse


def counting(start: int) -> str:
    return ", ".join(str(start + i) for i in range(8)) + ","


def complete(server, payload: dict) -> dict:
    with server.http() as http:
        return http.post("/v1/completions", json=payload).json()


def test_eight_concurrent_greedy_requests_each_continue_their_own_prompt(server):
    starts = [3, 20, 150, 400, 1000, 2500, 7000, 31000]
    payloads = [{"prompt": counting(s), "max_tokens": 16, "temperature": 0} for s in starts]
    with ThreadPoolExecutor(len(payloads)) as pool:
        bodies = list(pool.map(lambda p: complete(server, p), payloads))
    for start, body in zip(starts, bodies):
        text = body["choices"][0]["text"]
        assert text.startswith(f" {start + 8}, {start + 9}"), (start, text)


def test_same_request_twice_same_greedy_output_and_the_second_hits_the_prefix_cache(server):
    history = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(40))
    payload = {"prompt": history + "\nLine 40:", "max_tokens": 24, "temperature": 0}
    first = complete(server, payload)
    second = complete(server, payload)
    assert second["choices"][0]["text"] == first["choices"][0]["text"]
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached > 0.8 * second["usage"]["prompt_tokens"]
    assert cached < second["usage"]["prompt_tokens"]  # the last prompt token is always decoded


def test_a_shared_chat_history_is_reused_on_the_next_turn(server):
    messages = [{"role": "user", "content": "Tell me about ports. " * 60}]
    with server.http() as http:
        first = http.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 8, "temperature": 0}).json()
        messages += [
            {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
            {"role": "user", "content": "And harbours?"},
        ]
        second = http.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 8}).json()
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] >= 256


def test_a_conversation_sharing_only_an_opening_does_not_take_anothers_cache(server):
    """A request whose prompt shares only a short opening with a slot's long cache goes to another
    slot: the first conversation's next turn still finds its cache."""
    opening = "You are a helpful assistant who answers questions about numbers. "
    first = {"prompt": opening + counting(5000) * 40, "max_tokens": 1, "temperature": 0}
    other = {"prompt": opening + counting(90000) * 2, "max_tokens": 1, "temperature": 0}
    complete(server, first)
    complete(server, other)
    again = complete(server, first)
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] >= 256, again["usage"]


def test_stop_generation_by_response_id_stops_only_that_stream(server):
    long_run = {"prompt": counting(1), "max_tokens": 600, "temperature": 0, "logit_bias": {"1": -100}, "stream": True}
    results: dict[str, tuple[list[dict], bool]] = {}
    first_id: list[str] = []
    started = threading.Event()

    def stream(name: str) -> None:
        with server.http() as http:
            with http.stream("POST", "/v1/completions", json=long_run) as response:
                body = ""
                for line in response.iter_lines():
                    body += line + "\n\n"
                    if name == "target" and line.startswith("data: {") and not first_id:
                        first_id.append(parse_sse(line + "\n\n")[0][0]["id"])
                        started.set()
        results[name] = parse_sse(body)

    threads = [threading.Thread(target=stream, args=(name,)) for name in ("target", "other")]
    for thread in threads:
        thread.start()
    assert started.wait(120)
    with server.http() as http:
        assert http.post("/v1/internal/stop-generation", json={"id": first_id[0]}).json() == "OK"
    for thread in threads:
        thread.join()
    target, done = results["target"]
    assert done and target[-1]["choices"][0]["finish_reason"] == "stop"
    assert len(target) < 300
    other, done = results["other"]
    assert done and other[-1]["choices"][0]["finish_reason"] == "length"


@pytest.fixture(scope="module")
def tiny_queue_server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("queue"), "--api-key", API_KEY, "--parallel", "1", "--max-queue", "1")
    yield running
    stop_server(running)


def test_requests_past_the_bounded_queue_get_503_with_retry_after(tiny_queue_server):
    server = tiny_queue_server
    long_run = {"prompt": counting(1), "max_tokens": 400, "temperature": 0, "logit_bias": {"1": -100}}
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(complete, server, long_run)
        while server.generation_stats()["active"] == 0:
            pass
        waiting = pool.submit(complete, server, {**long_run, "max_tokens": 4})
        while server.generation_stats()["queued"] == 0:
            pass
        with server.http() as http:
            # the one slot is busy and one request already waits: the queue is full
            response = http.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"]
            assert response.json()["error"]["code"] == "server_busy"
            http.post("/v1/internal/stop-generation")
        assert running.result()["choices"][0]["finish_reason"] == "stop"
        assert waiting.result()["choices"]
    assert complete(server, {"prompt": "x", "max_tokens": 2})["choices"]


SYSTEM = ("You are a patient assistant for a small harbour office. You answer questions about "
          "ships, tides, berths and opening hours in one or two short sentences.")


def chat(server, question: str) -> dict:
    payload = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
               "max_tokens": 24, "temperature": 0}
    with server.http() as http:
        return http.post("/v1/chat/completions", json=payload).json()


def chat_server(tmp_path_factory, slots: int):
    """The default model (SmolLM2, whose chat template ends each turn with an end-of-turn token)."""
    running = start_server(tmp_path_factory.mktemp(f"slots-{slots}"), "--parallel", str(slots), model=None)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def one_slot_chat_server(tmp_path_factory):
    yield from chat_server(tmp_path_factory, 1)


def test_a_shared_system_prompt_is_reused_to_its_end_with_the_same_output(one_slot_chat_server):
    """A system prompt shorter than a prefill chunk (128 tokens) is reused up to its end-of-turn
    token, and a request that reuses it answers exactly as it did with nothing cached (one slot:
    the other conversation replaced the first's cache but for the system prompt)."""
    server = one_slot_chat_server
    first = chat(server, "When does the office open on Sundays?")
    other = chat(server, "How deep is berth four at low tide?")
    again = chat(server, "When does the office open on Sundays?")
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    system_end = other["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert 20 < system_end < 128, other["usage"]
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == system_end
    assert again["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]


@pytest.fixture(scope="module")
def two_slot_chat_server(tmp_path_factory):
    yield from chat_server(tmp_path_factory, 2)


def test_a_system_prompt_another_slot_holds_is_taken_from_it(two_slot_chat_server):
    """A conversation sharing only the system prompt with a slot's long conversation goes to the
    other slot (so as not to wipe that one) and still reuses the system prompt: its cells are
    taken from the slot that holds them, the answer is the one read afresh, and the long
    conversation keeps its cache."""
    server = two_slot_chat_server
    question = "When does the office open on Sundays?"
    fresh = chat(server, question)  # slot 1: nothing cached yet
    complete(server, {"prompt": counting(700), "max_tokens": 4, "temperature": 0})  # slot 2: no system prompt
    long = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Tell me about the tides. " * 40}]
    with server.http() as http:
        first_long = http.post("/v1/chat/completions", json={"messages": long, "max_tokens": 2, "temperature": 0}).json()
    # Slot 1 now holds the long conversation; slot 2, the least recently used, gets the question.
    again = chat(server, question)
    with server.http() as http:
        long_again = http.post("/v1/chat/completions", json={"messages": long, "max_tokens": 2, "temperature": 0}).json()
    assert fresh["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    system_end = first_long["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert 20 < system_end < 128, first_long["usage"]
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == system_end, again["usage"]
    assert again["choices"][0]["message"]["content"] == fresh["choices"][0]["message"]["content"]
    assert long_again["usage"]["prompt_tokens_details"]["cached_tokens"] >= 128, long_again["usage"]

def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_soak_32_streaming_clients_a_third_disconnecting(server, spec):
    rng = random.Random(20261125)
    plans = [(i, rng.random() < 1 / 3, rng.randint(1, 40)) for i in range(32)]

    def client(plan) -> tuple[str, list[dict] | None, bool]:
        index, disconnects, after = plan
        payload = {
            "prompt": counting(index * 10),
            "max_tokens": 48,
            "temperature": 0.8,
            "seed": index,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300) as http:
            with http.stream("POST", "/v1/completions", json=payload) as response:
                body, frames = "", 0
                for line in response.iter_lines():
                    body += line + "\n\n" if line else ""
                    frames += line.startswith("data: ")
                    if disconnects and frames >= after:
                        return "gone", None, False
        chunks, done = parse_sse(body)
        return "done", chunks, done

    def run_round() -> list:
        with ThreadPoolExecutor(32) as pool:
            return list(pool.map(client, plans))

    run_round()  # warm-up: allocations that are made once
    server.wait_idle()
    rss_before = rss_kib(server.process.pid)
    outcomes = run_round()
    stats = server.wait_idle()
    rss_after = rss_kib(server.process.pid)

    completed = [o for o in outcomes if o[0] == "done"]
    assert len(completed) >= 16
    for _, chunks, done in completed:
        assert done
        *text_chunks, usage = chunks
        for chunk in chunks:
            spec.validate("CreateCompletionChunk", chunk)
        assert [c["choices"][0]["finish_reason"] is not None for c in text_chunks].count(True) == 1
        assert usage["choices"] == [] and 0 < usage["usage"]["completion_tokens"] <= 48
    assert stats["active"] == 0
    assert server.process.poll() is None
    # no leak: memory holds steady across a whole round of 32 clients
    assert rss_after - rss_before < 64 * 1024, (rss_before, rss_after)
    # and the slots are free: a full batch of fresh requests is served
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda s: complete(server, {"prompt": counting(s), "max_tokens": 6, "temperature": 0}), range(8)))
    assert all(b["choices"][0]["text"].startswith(f" {s + 8}") for s, b in zip(range(8), bodies))
