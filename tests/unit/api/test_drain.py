"""Graceful shutdown in-process: 503 while draining, streams and waits cut at the deadline with
an error, generations that finish in time untouched. (The signal path is in
tests/integration/test_shutdown.py.)"""

from __future__ import annotations

import asyncio

import pytest

from homeport.api import streaming
from homeport.api.drain import Drain
from homeport.engines.fake import FakeEngine
from support.sse import parse_sse

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Hi"}]
WAIT_S = 60  # generous: only a hang fails


def stat(engine: FakeEngine, name: str) -> int:
    stats = engine.stats()
    return stats[name] if isinstance(stats, dict) else getattr(stats, name)


async def wait_for_generation(engine: FakeEngine, request: asyncio.Task) -> None:
    async with asyncio.timeout(WAIT_S):
        while not engine.requests:
            if request.done():
                response = request.result()
                raise AssertionError(f"the request ended first: {response.status_code} {response.text}")
            await asyncio.sleep(0.01)


def slow_client(make_client, tokens: int = 5000):
    engine = FakeEngine(script="x" * tokens, step_delay=0.01, context_length=tokens + 512)
    return make_client(engine), engine


async def test_new_requests_get_503_while_draining(make_client):
    client, engine = slow_client(make_client)
    request = asyncio.create_task(client.http.post(CHAT, json={"messages": USER, "max_tokens": 4000}))
    await wait_for_generation(engine, request)
    drain = asyncio.create_task(client.app.state.drain.run(timeout=WAIT_S))
    await asyncio.sleep(0)  # the drain begins
    refused = await client.http.get("/v1/models")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "shutting_down"
    assert refused.headers["retry-after"]
    engine.stop()  # let the running one end, so the drain finds nothing left to cut
    assert (await request).status_code == 200
    assert await drain == 0


async def test_a_stream_still_running_at_the_deadline_ends_with_an_error_frame_then_done(make_client):
    client, engine = slow_client(make_client)
    payload = {"messages": USER, "max_tokens": 4000, "stream": True}
    request = asyncio.create_task(client.http.post(CHAT, json=payload))
    await wait_for_generation(engine, request)
    assert await client.app.state.drain.run(timeout=0.05) == 1
    response = await request
    payloads, done = parse_sse(response.text)
    assert done
    assert payloads[-1]["error"]["code"] == "server_shutdown"
    assert all("error" not in p for p in payloads[:-1])
    assert stat(engine, "cancelled") == 1  # the generation itself was stopped


async def test_a_non_streaming_request_still_running_at_the_deadline_gets_503(make_client):
    client, engine = slow_client(make_client)
    request = asyncio.create_task(client.http.post(CHAT, json={"messages": USER, "max_tokens": 4000}))
    await wait_for_generation(engine, request)
    assert await client.app.state.drain.run(timeout=0.05) == 1
    response = await request
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "server_shutdown"
    assert stat(engine, "cancelled") == 1


async def test_a_stream_that_ends_in_time_is_untouched(make_client):
    client, engine = slow_client(make_client, tokens=20)
    payload = {"messages": USER, "max_tokens": 10, "stream": True}
    request = asyncio.create_task(client.http.post(CHAT, json=payload))
    await wait_for_generation(engine, request)
    assert await client.app.state.drain.run(timeout=WAIT_S) == 0
    payloads, done = parse_sse((await request).text)
    assert done
    assert all("error" not in p for p in payloads)
    assert [c["finish_reason"] for p in payloads for c in p["choices"] if c["finish_reason"]] == ["length"]


async def test_an_idle_server_drains_at_once(client):
    assert await client.app.state.drain.run(timeout=WAIT_S) == 0
    assert (await client.http.get("/health")).status_code == 503


async def numbers(closed: list[str]):
    try:
        for n in range(1000):
            await asyncio.sleep(0.01)
            yield {"n": n}
    finally:
        closed.append("closed")


async def test_a_stream_cut_between_frames_closes_its_generation_and_says_why(monkeypatch):
    # The cut lands while the stream is not waiting for a chunk (here: between frames, as when
    # it waits on a slow client): no cancellation then, the next step ends it instead.
    drain = Drain()
    monkeypatch.setattr(streaming, "current_drain", lambda: drain)
    closed: list[str] = []
    frames = streaming.sse_frames(numbers(closed))
    assert await anext(frames) == streaming.frame({"n": 0})
    (handle,) = drain.streams
    handle.cut_for_shutdown()
    rest = [item async for item in frames]
    assert closed == ["closed"]
    assert b'"code":"server_shutdown"' in rest[0] and rest[1:] == [streaming.DONE]
    assert not drain.streams


async def test_a_client_disconnect_still_cancels_the_stream_without_an_error_frame(monkeypatch):
    drain = Drain()
    monkeypatch.setattr(streaming, "current_drain", lambda: drain)
    closed: list[str] = []
    sent: list[bytes] = []

    async def consume() -> None:
        async for item in streaming.sse_frames(numbers(closed)):
            sent.append(item)

    task = asyncio.create_task(consume())
    async with asyncio.timeout(WAIT_S):
        while not sent:
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == ["closed"]
    assert all(b"error" not in item and item != streaming.DONE for item in sent)


async def test_a_stream_that_starts_after_the_deadline_ends_at_once(monkeypatch):
    drain = Drain()
    drain.deadline.set()
    monkeypatch.setattr(streaming, "current_drain", lambda: drain)
    closed: list[str] = []
    frames = [item async for item in streaming.sse_frames(numbers(closed))]
    assert len(frames) == 2 and b'"code":"server_shutdown"' in frames[0] and frames[1] == streaming.DONE
