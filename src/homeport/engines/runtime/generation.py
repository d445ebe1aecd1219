"""The generation runtime shared by the text engines: one thread per model runs the decode loop.

The event-loop side keeps the live generations (`queue_depth`, `stop`), submits jobs and turns
what the thread sends back into `generate()`'s events or `distribution()`'s answer. The thread
side admits jobs up to `parallel`, ends stopped and cancelled ones, counts outcomes, and builds
each token's event. An engine subclasses `GenerationRuntime` and implements what is its own:

- `admit(job)`: take what the job needs (a KV slot or cache, a sampler; for a probe, the filter
  of `job.probe`); raise to refuse it.
- `step(running)`: advance every running job once (a prompt chunk, or one token through
  `advance`), ending finished ones with `complete` and broken ones with `fail`.
- `release(job, outcome)`: give back what `admit` took, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from homeport.engines.base import GenerationRequest, GenerationStats, SamplingParams, TokenEvent, TopLogprobs
from homeport.engines.runtime.worker import Job, Worker
from homeport.engines.text import IncrementalUtf8
from homeport.errors import EngineError
from homeport import metrics

log = logging.getLogger(__name__)

Outcome = Literal["completed", "cancelled", "failed"]
Probe = tuple[SamplingParams | None, int]  # (the samplers to filter by, None: the raw model; how many tokens)


@dataclass
class GenerationCounters:
    """The counts behind `GenerationStats`, kept by whoever runs the generations."""

    active: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    tokens_generated: int = 0
    draft_tokens: int = 0
    draft_accepted: int = 0
    last_cancelled_tokens: int | None = None
    paused: int = 0  # set by an engine that pauses generations when its KV cache is full
    caches_stored: int = 0  # set by an engine that moves idle caches to host memory
    caches_restored: int = 0

    def ended(self, outcome: Outcome, produced: int = 0) -> None:
        """A generation ended (`active` is the caller's to lower, if it was running)."""
        setattr(self, outcome, getattr(self, outcome) + 1)
        if outcome == "cancelled":
            self.last_cancelled_tokens = produced

    def snapshot(self, queued: int) -> GenerationStats:
        return GenerationStats(**vars(self), queued=queued)


@dataclass(eq=False, kw_only=True)
class GenerationJob(Job):
    """One generation as the thread sees it. The loop side sets `cancelled` (the client is gone:
    drop it) or `stop_requested` (stop-generation: finish it cleanly with what it has)."""

    request: GenerationRequest
    stop_requested: threading.Event = field(default_factory=threading.Event)
    # A distribution probe (the logits endpoint): answer with the next-token distribution after the
    # prompt, filtered by these sampling parameters (None: the raw model distribution), then end.
    probe: Probe | None = None
    events: asyncio.Queue = field(default_factory=asyncio.Queue)  # what the loop side reads
    prefilled: int = 0  # prompt tokens the model has seen
    cached: int = 0  # of those, how many came from a prefix cache
    produced: int = 0
    pending_token: int = -1  # sampled, to be fed to the model at the next step
    decoder: IncrementalUtf8 = field(default_factory=IncrementalUtf8)
    prompt_logprobs: list = field(default_factory=list)  # filled while prefilling, when asked for
    submitted_at: float = field(default_factory=time.perf_counter)  # for time to first token
    last_token_at: float = 0.0  # for inter-token latency

    def deliver(self, item: object) -> None:
        self.events.put_nowait(item)

    @property
    def decoding(self) -> bool:
        return self.prefilled == len(self.request.prompt_tokens)


class GenerationRuntime(Worker[GenerationJob]):
    job_type: ClassVar[type[GenerationJob]] = GenerationJob

    def __init__(
        self,
        name: str,
        *,
        parallel: int,
        context_length: int,
        eog: frozenset[int],
        piece: Callable[[int, bool], bytes],  # (token, render special) → its bytes
        top_entries: Callable[[Any, int], TopLogprobs],  # (logprobs row, k) → the k best
        model_id: str = "",  # the `model` label of its metrics
    ) -> None:
        super().__init__(name)
        self.model_id = model_id or name
        self.parallel = parallel
        self.context_length = context_length
        self.counters = GenerationCounters()
        self._eog = eog
        self._piece = piece
        self._top_entries = top_entries
        self._live: set[GenerationJob] = set()  # submitted and not yet given up by their caller
        # While a step runs, what it sends waits here and goes to each event loop in one hop at
        # its end (`post`): one wake-up of the loop per step, not one per token per stream.
        self._outbox: list[tuple[GenerationJob, object]] | None = None
        self._generated = metrics.GENERATED_TOKENS.labels(self.model_id)  # per token: labelled once
        self._inter_token = metrics.INTER_TOKEN.labels(self.model_id)

    # ---- event-loop side -----------------------------------------------------------------------

    def stats(self) -> GenerationStats:
        return self.counters.snapshot(queued=self.queue_depth())

    def queue_depth(self) -> int:
        return max(0, len(self._live) - self.parallel)

    def stop(self, request_id: str | None = None) -> int:
        """Ends running and queued generations cleanly (finish_reason "stop"): all of them, or
        those of one response id. Returns how many were asked to stop."""
        jobs = [job for job in list(self._live) if request_id is None or job.request.request_id == request_id]
        for job in jobs:
            job.stop_requested.set()
        self.wake()
        return len(jobs)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        job = self._submit(request)
        try:
            while True:
                item = await job.events.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            # Reached on completion, on error, and when the consumer closes us (client gone):
            # the thread drops a cancelled job at its next step.
            self._forget(job)

    async def distribution(
        self, prompt_tokens: list[int], sampling: SamplingParams | None, top_n: int
    ) -> list[tuple[int, float]]:
        request = GenerationRequest(prompt_tokens=prompt_tokens, sampling=SamplingParams(temperature=0), max_tokens=1)
        job = self._submit(request, probe=(sampling, top_n))
        try:
            item = await job.events.get()
            if isinstance(item, BaseException):
                raise item
            return item
        finally:
            self._forget(job)

    def _submit(self, request: GenerationRequest, probe: Probe | None = None) -> GenerationJob:
        if not self.running:
            raise EngineError("the model is not running")
        job = self.job_type(request=request, probe=probe)
        self._live.add(job)
        self.inbox.put(job)
        return job

    def _forget(self, job: GenerationJob) -> None:
        job.cancelled.set()
        self._live.discard(job)
        self.wake()

    # ---- what an engine implements (on the thread) ---------------------------------------------

    def step(self, running: list[GenerationJob]) -> None:
        raise NotImplementedError

    def release(self, job: GenerationJob, outcome: Outcome) -> None:
        """Gives back what `admit` took (also after a failed admit, and for a job dropped before it)."""

    # ---- the thread ----------------------------------------------------------------------------

    def has_room(self, running: list[GenerationJob], job: GenerationJob) -> bool:
        return len(running) < self.parallel

    def withdraw(self, waiting: list[GenerationJob]) -> None:
        for job in [j for j in waiting if j.cancelled.is_set() or j.stop_requested.is_set()]:
            waiting.remove(job)
            self.release(job, "cancelled")
            if job.stop_requested.is_set() and not job.cancelled.is_set():
                self.ended("completed")
                job.send(TokenEvent(token_id=-1, text="", finish_reason="stop"))  # a queued job ends with no text
            else:
                self.ended("cancelled", 0)

    def reject(self, job: GenerationJob, exc: Exception) -> None:
        if not isinstance(exc, EngineError):  # e.g. a sampler that cannot be built: this request only
            log.error("cannot start a generation: %s", type(exc).__name__)
            exc = EngineError("cannot start generation with these sampling parameters")
        self.release(job, "failed")
        self.ended("failed")
        job.send(exc)

    def admit(self, job: GenerationJob) -> None:
        raise NotImplementedError

    def started(self, job: GenerationJob) -> None:
        self.counters.active += 1

    def work(self, running: list[GenerationJob]) -> None:
        for job in list(running):
            if job.cancelled.is_set():
                self.finish(job, running, "cancelled")
            elif job.stop_requested.is_set():
                self.complete(job, running, TokenEvent(token_id=-1, text=job.decoder.flush(), finish_reason="stop"))
        if running:
            self._outbox = []
            try:
                self.step(running)
            finally:
                self._flush()

    def post(self, job: GenerationJob, item: object) -> None:
        """Sends `item` to the job: at the end of the running step (in order), else at once."""
        if self._outbox is None:
            job.send(item)
        else:
            self._outbox.append((job, item))

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, None
        if not outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[GenerationJob, object]]] = {}
        for job, item in outbox:
            by_loop.setdefault(job.loop, []).append((job, item))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver_all, items)
            except RuntimeError:  # that loop is closed (its caller is gone); the others still get theirs
                continue

    def crash(self, running: list[GenerationJob], exc: Exception) -> None:
        self.broke(list(running), running, exc)

    def broke(self, jobs: Sequence[GenerationJob], running: list[GenerationJob], exc: Exception) -> None:
        """A step raised `exc` while running these jobs: they end as failed (logged by type only:
        an exception can quote request text)."""
        log.error("%s: engine step failed: %s", self.name, type(exc).__name__)
        self.fail(jobs, running, EngineError("internal engine error"))

    def abandon(self, jobs: list[GenerationJob]) -> None:
        for job in jobs:
            self.release(job, "cancelled")
        super().abandon(jobs)

    def ended(self, outcome: Outcome, produced: int = 0) -> None:
        self.counters.ended(outcome, produced)
        metrics.GENERATIONS.labels(self.model_id, outcome).inc()

    def drafted(self, proposed: int, accepted: int) -> None:
        """Speculative decoding proposed `proposed` draft tokens and the model agreed with `accepted`."""
        self.counters.draft_tokens += proposed
        self.counters.draft_accepted += accepted
        metrics.DRAFTED_TOKENS.labels(self.model_id).inc(proposed)
        metrics.ACCEPTED_TOKENS.labels(self.model_id).inc(accepted)

    def finish(self, job: GenerationJob, running: list[GenerationJob], outcome: Outcome) -> None:
        running.remove(job)
        self.release(job, outcome)
        self.counters.active -= 1
        self.ended(outcome, job.produced)

    def complete(self, job: GenerationJob, running: list[GenerationJob], last: object) -> None:
        """Ends a job with its last item (a final event, or a probe's answer). Finished first, sent
        second: whoever reads the last item may look at the counters at once (the client that
        then asks for model info, the evictor waiting for `active == 0`) and must find the job
        already counted. Sending first would let the stream end while the job still looked
        active; every end of a job (stop, completion, failure) goes through this order."""
        self.finish(job, running, "completed")
        self.post(job, last)

    def fail(self, jobs: Sequence[GenerationJob], running: list[GenerationJob], error: Exception) -> None:
        """Ends these jobs with `error`, counted as failed (the same order as `complete`)."""
        for job in jobs:
            if job in running:
                self.finish(job, running, "failed")
            self.post(job, error)

    def advance(self, job: GenerationJob, token: int, logprobs: Any = None) -> TokenEvent:
        """The event for a token just sampled (`logprobs`: the model's distribution it came from,
        when the request asked for logprobs). Sets `finish_reason` when the job is done."""
        request = job.request
        job.produced += 1
        self.counters.tokens_generated += 1
        first = job.produced == 1
        self._observe_token(job, first)
        extra: dict[str, Any] = {
            "cached_tokens": job.cached if first else 0,
            "prompt_logprobs": tuple(job.prompt_logprobs) if first and request.prompt_logprobs else None,
        }
        if logprobs is not None:
            extra["logprob"] = float(logprobs[token])
            extra["top_logprobs"] = self._top_entries(logprobs, request.logprobs or 0)
        if token in self._eog:
            return TokenEvent(token_id=token, text=job.decoder.flush(), finish_reason="stop", **extra)
        text = job.decoder.push(self._piece(token, request.render_special))
        job.pending_token = token
        used = len(request.prompt_tokens) + job.produced
        if job.produced >= request.max_tokens or used >= self.context_length:
            return TokenEvent(token_id=token, text=text + job.decoder.flush(), finish_reason="length", **extra)
        return TokenEvent(token_id=token, text=text, **extra)

    def _observe_token(self, job: GenerationJob, first: bool) -> None:
        now = time.perf_counter()
        model = self.model_id
        self._generated.inc()
        if first:
            metrics.TIME_TO_FIRST_TOKEN.labels(model).observe(now - job.submitted_at)
            metrics.PROMPT_TOKENS.labels(model).inc(len(job.request.prompt_tokens))
            metrics.PREFIX_CACHE_TOKENS.labels(model).inc(job.cached)
        else:
            self._inter_token.observe(now - job.last_token_at)
        job.last_token_at = now

    def record_prompt_logprobs(self, job: GenerationJob, start: int, end: int, row: Callable[[int], Any]) -> None:
        """Each prompt token's logprob given the tokens before it (the first token has none), for
        the prompt positions start..end just decoded; `row(i)` is the model's log-distribution after
        position start + i."""
        prompt = job.request.prompt_tokens
        top_n = job.request.logprobs or 0
        if start == 0:
            job.prompt_logprobs.append((prompt[0], None, ()))
        for pos in range(start, min(end, len(prompt) - 1)):
            logprobs = row(pos - start)
            following = prompt[pos + 1]
            logprob = float(logprobs[following]) if following < len(logprobs) else float("-inf")
            job.prompt_logprobs.append((following, logprob, self._top_entries(logprobs, top_n)))


def _deliver_all(items: list[tuple[GenerationJob, object]]) -> None:  # on the event loop
    for job, item in items:
        job.deliver(item)


class RuntimeEngine:
    """The `TextEngine` methods that an engine with a `GenerationRuntime` (its `_scheduler`) only
    passes on."""

    _scheduler: GenerationRuntime

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        return self._scheduler.generate(request)

    async def distribution(
        self, prompt_tokens: list[int], sampling: SamplingParams | None, top_n: int
    ) -> list[tuple[int, float]]:
        return await self._scheduler.distribution(prompt_tokens, sampling, top_n)

    def stop(self, request_id: str | None = None) -> int:
        return self._scheduler.stop(request_id)

    def queue_depth(self) -> int:
        return self._scheduler.queue_depth()

    def stats(self) -> GenerationStats:
        return self._scheduler.stats()
