"""The shared engine runtime (engines/runtime) with a toy engine: no llama.cpp, no torch."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from contextlib import aclosing

import pytest

from homeport.engines.base import GenerationRequest, GenerationStats, SamplingParams
from homeport.engines.runtime import GenerationRuntime, MicroBatcher
from homeport.errors import EngineError

EOG = 99


class ToyRuntime(GenerationRuntime):
    """Prefills a prompt in one step, then emits token 10, 11, ...; `gate` (when set) holds each
    step until the test lets it go; `boom` makes the next step raise."""

    def __init__(self, parallel: int = 2) -> None:
        super().__init__("toy:test", parallel=parallel, context_length=1000, eog=frozenset({EOG}),
                         piece=lambda token, special: b"x", top_entries=lambda logprobs, k: ())
        self.gate: threading.Semaphore | None = None
        self.boom = False
        self.released: list[str] = []

    def admit(self, job) -> None:
        if not job.request.prompt_tokens:
            raise EngineError("cannot generate from an empty prompt")
        if job.request.sampling.top_k == 13:
            raise ValueError("private text in an exception")

    def release(self, job, outcome) -> None:
        self.released.append(outcome)

    def step(self, running) -> None:
        if self.gate is not None:
            self.gate.acquire()
        if self.boom:
            self.boom = False
            raise RuntimeError("private text in an exception")
        for job in list(running):
            if not job.decoding:
                job.prefilled = len(job.request.prompt_tokens)
                continue
            if job.probe is not None:
                self.complete(job, running, [(1, 1.0)])
                continue
            event = self.advance(job, 10 + job.produced)
            if event.finish_reason is not None:
                self.complete(job, running, event)
            else:
                job.send(event)


def request(max_tokens: int = 3, request_id: str = "", top_k: int = 0) -> GenerationRequest:
    return GenerationRequest([1, 2, 3], SamplingParams(top_k=top_k), max_tokens, request_id=request_id)


@pytest.fixture
async def runtime():
    toy = ToyRuntime()
    toy.start()
    yield toy
    if toy.gate is not None:
        toy.gate.release(1000)
    await toy.aclose()


async def test_a_generation_runs_to_its_length_and_is_counted(runtime):
    events = [event async for event in runtime.generate(request(3))]
    assert [e.token_id for e in events] == [10, 11, 12] and events[-1].finish_reason == "length"
    stats = runtime.stats()
    assert stats.completed == 1 and stats.active == 0 and stats.tokens_generated == 3


async def test_a_stopped_generation_is_already_counted_when_its_last_event_arrives(runtime):
    runtime.gate = threading.Semaphore(2)  # admission step (prefill) and one token
    async with aclosing(runtime.generate(request(100, request_id="resp-1"))) as events:
        first = await anext(events)
        assert first.token_id == 10
        assert runtime.stop("other") == 0 and runtime.stop("resp-1") == 1
        runtime.gate.release(1000)
        rest = [event async for event in events]
        # Finished, then sent: nothing may still count it as running once the stream has ended.
        assert rest[-1].finish_reason == "stop"
        stats = runtime.stats()
        assert stats.active == 0 and stats.completed == 1 and stats.cancelled == 0
    assert runtime.released == ["completed"]


async def test_a_queued_generation_that_is_stopped_ends_with_no_text(runtime):
    runtime.gate = threading.Semaphore(0)
    streams = [runtime.generate(request(100)) for _ in range(2)]
    running = [asyncio.ensure_future(anext(stream)) for stream in streams]
    queued_stream = runtime.generate(request(100, request_id="queued"))
    queued = asyncio.ensure_future(anext(queued_stream))
    while runtime.queue_depth() < 1:
        await asyncio.sleep(0.01)
    assert runtime.stats().queued == 1
    runtime.stop("queued")
    runtime.gate.release(1000)
    event = await queued
    assert (event.token_id, event.text, event.finish_reason) == (-1, "", "stop")
    await queued_stream.aclose()
    for task, stream in zip(running, streams):
        assert (await task).token_id == 10
        await stream.aclose()


async def test_closing_the_stream_cancels_the_generation(runtime):
    runtime.gate = threading.Semaphore(2)  # prefill and one token, then it waits for us
    async with aclosing(runtime.generate(request(100))) as events:
        async for _ in events:
            break
    runtime.gate.release(1000)
    for _ in range(500):
        if runtime.stats().cancelled:
            break
        await asyncio.sleep(0.01)
    stats = runtime.stats()
    assert stats.cancelled == 1 and stats.last_cancelled_tokens >= 1 and stats.active == 0


async def test_a_refused_admission_fails_that_request_only(runtime, caplog):
    with pytest.raises(EngineError, match="empty prompt"):
        [e async for e in runtime.generate(GenerationRequest([], SamplingParams(), 3))]
    with pytest.raises(EngineError, match="sampling parameters") as raised:
        [e async for e in runtime.generate(request(3, top_k=13))]
    assert "private" not in str(raised.value) and "private" not in caplog.text
    assert len([e async for e in runtime.generate(request(2))]) == 2
    assert runtime.stats().failed == 2


async def test_a_step_that_raises_fails_the_running_jobs_and_the_thread_goes_on(runtime, caplog):
    runtime.boom = True
    with pytest.raises(EngineError, match="internal engine error"):
        [e async for e in runtime.generate(request(3))]
    assert "private" not in caplog.text
    assert runtime.stats().failed == 1 and runtime.released == ["failed"]
    assert len([e async for e in runtime.generate(request(3))]) == 3


async def test_a_probe_answers_once(runtime):
    assert await runtime.distribution([1, 2], None, 5) == [(1, 1.0)]
    assert runtime.stats().completed == 1


async def test_an_exclusive_call_runs_with_nothing_running(runtime):
    runtime.gate = threading.Semaphore(3)
    stream = runtime.generate(request(5))
    assert (await anext(stream)).token_id == 10
    seen: list[int] = []
    call = asyncio.wrap_future(runtime.call_in_thread(lambda: seen.append(runtime.counters.active), exclusive=True))
    runtime.gate.release(1000)
    assert len([e async for e in stream]) == 4
    await call
    assert seen == [0]


async def test_closing_fails_what_is_left_and_a_closed_runtime_refuses_work():
    toy = ToyRuntime(parallel=1)
    toy.gate = threading.Semaphore(0)
    toy.start()
    first = asyncio.ensure_future(anext(toy.generate(request(100))))
    waiting = asyncio.ensure_future(anext(toy.generate(request(100))))
    while toy.queue_depth() < 1:
        await asyncio.sleep(0.01)
    closing = asyncio.ensure_future(toy.aclose())
    await asyncio.sleep(0)  # it has asked the thread to end
    toy.gate.release(1000)
    await closing
    for task in (first, waiting):
        with pytest.raises(EngineError, match="unloaded"):
            await task
    with pytest.raises(EngineError, match="not running"):
        await anext(toy.generate(request(1)))


def test_stats_are_frozen_and_served_in_their_field_order():
    stats = GenerationStats(active=1, queued=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.active = 0  # type: ignore[misc]
    assert list(dataclasses.asdict(stats)) == [
        "active", "completed", "cancelled", "failed", "tokens_generated", "draft_tokens", "draft_accepted",
        "last_cancelled_tokens", "paused", "caches_stored", "caches_restored", "queued",
    ]


async def test_a_batcher_runs_batches_on_its_thread_and_refuses_work_once_closed():
    threads: list[str] = []

    def run(model: str, items: list[str]) -> list[str]:
        threads.append(threading.current_thread().name)
        return [f"{model}:{item}" for item in items]

    batcher = MicroBatcher(lambda: "model", run, what="toy model")
    assert await batcher.submit(["a", "b"]) == ["model:a", "model:b"]
    assert threads == ["homeport-toy-model"] and batcher.batches == 1 and batcher.items == 2
    batcher.close()
    with pytest.raises(EngineError, match="closed"):
        await batcher.submit(["c"])
