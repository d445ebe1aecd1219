"""The decode loop of the transformers engine, run by its one thread.

Each running generation has its own KV cache and advances one step per round, in turn: a prompt
chunk while it prefills, then one token per step. A long request therefore never stalls the
others, and each request's forward passes are the same whatever runs beside it (batch size 1), so
its output does not depend on its neighbours. At most `parallel` generations run; the rest wait.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from homeport.engines.base import GenerationRequest, GenerationStats, SamplingParams, TokenEvent
from homeport.engines.text import IncrementalUtf8
from homeport.engines.transformers.sampling import Sampler, log_softmax, top_entries
from homeport.engines.transformers.tokens import Tokens
from homeport.errors import EngineError

log = logging.getLogger(__name__)

STOP_THREAD = object()  # put in the inbox to end the thread


@dataclass(eq=False)
class Job:
    """One generation as the engine thread sees it. The loop sets `cancelled` (the client is gone:
    drop it) or `stop_requested` (stop-generation: finish it cleanly with what it has)."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    # A distribution probe: answer with the next-token distribution after the prompt, filtered
    # by these sampling parameters (None: the raw model distribution), then end.
    probe: tuple[SamplingParams | None, int] | None = None
    # Engine-thread state.
    cache: Any = None
    prefilled: int = 0
    produced: int = 0
    pending_token: int = -1  # sampled, to be fed to the model at the next step
    sampler: Sampler | None = None
    decoder: IncrementalUtf8 = field(default_factory=IncrementalUtf8)
    prompt_logprobs: list = field(default_factory=list)

    def send(self, item: object) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)

    @property
    def decoding(self) -> bool:
        return self.prefilled == len(self.request.prompt_tokens)


class Scheduler:
    def __init__(
        self,
        model: Any,
        tokens: Tokens,
        *,
        device: torch.device,
        parallel: int,
        context_length: int,
        prefill_chunk: int,
        eog: frozenset[int],
        stats: GenerationStats,
    ) -> None:
        self._model = model
        self._tokens = tokens
        self._device = device
        self._parallel = parallel
        self._context_length = context_length
        self._chunk = prefill_chunk
        self._eog = eog
        self._stats = stats
        self._vocab_size = tokens.vocab_size
        params = inspect.signature(model.forward).parameters
        # transformers 5 renamed past_key_values to cache; either works.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._trim_logits = "logits_to_keep" in params
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()

    def release(self) -> None:
        """After the thread has ended: fails what it never took and drops the model (its memory)."""
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Job):
                item.send(EngineError("the model was unloaded"))
        self._model = None

    # ---- engine thread ---------------------------------------------------------------------

    def run(self) -> None:
        with torch.inference_mode():
            self._loop()

    def _loop(self) -> None:
        running: list[Job] = []
        waiting: list[Job] = []
        while True:
            block = not running and not waiting
            try:
                while True:
                    item = self.inbox.get(block=block)
                    block = False
                    if item is None:  # a wake-up call: look at the flags again
                        continue
                    if item is STOP_THREAD:
                        for job in running + waiting:
                            job.send(EngineError("the model was unloaded"))
                        return
                    waiting.append(item)
            except queue.Empty:
                pass
            for job in [j for j in waiting if j.cancelled.is_set() or j.stop_requested.is_set()]:
                waiting.remove(job)
                if job.stop_requested.is_set() and not job.cancelled.is_set():
                    self._stats.completed += 1
                    job.send(TokenEvent(token_id=-1, text="", finish_reason="stop"))
                else:
                    self._count_cancelled(0)
            while waiting and len(running) < self._parallel:
                job = waiting.pop(0)
                problem = self._admit(job)
                if problem is not None:
                    self._stats.failed += 1
                    job.send(problem)
                    continue
                running.append(job)
                self._stats.active += 1
            for job in list(running):
                if job.cancelled.is_set():
                    self._finish(job, running, "cancelled")
                elif job.stop_requested.is_set():
                    self._finish(job, running, "completed")
                    job.send(TokenEvent(token_id=-1, text=job.decoder.flush(), finish_reason="stop"))
                else:
                    try:
                        self._step(job, running)
                    except Exception as exc:  # one request's failure (e.g. out of memory) fails it only
                        log.error("transformers engine step failed: %s", type(exc).__name__)
                        if job in running:
                            self._finish(job, running, "failed")
                        job.send(EngineError("internal engine error"))

    def _admit(self, job: Job) -> EngineError | None:
        prompt = job.request.prompt_tokens
        if not prompt:
            return EngineError("cannot generate from an empty prompt")
        if len(prompt) > self._context_length:
            return EngineError(
                f"the prompt ({len(prompt)} tokens) is longer than the context ({self._context_length})"
            )
        try:
            if job.probe is not None:
                sampling = job.probe[0]
                if sampling is not None:
                    job.sampler = Sampler(sampling, self._vocab_size, self._context_length, prompt)
            else:
                job.sampler = Sampler(job.request.sampling, self._vocab_size, self._context_length, prompt)
        except Exception as exc:
            log.error("cannot start a generation: %s", type(exc).__name__)
            return EngineError("cannot start generation with these sampling parameters")
        return None

    def _finish(self, job: Job, running: list[Job], outcome: str) -> None:
        running.remove(job)
        job.cache = None  # frees this request's KV memory now
        job.sampler = None
        self._stats.active -= 1
        if outcome == "cancelled":
            self._count_cancelled(job.produced)
        else:
            setattr(self._stats, outcome, getattr(self._stats, outcome) + 1)

    def _count_cancelled(self, produced: int) -> None:
        self._stats.cancelled += 1
        self._stats.last_cancelled_tokens = produced

    def _step(self, job: Job, running: list[Job]) -> None:
        request = job.request
        if job.decoding:
            logits = self._forward(job, [job.pending_token], all_rows=False)[-1]
        else:
            prompt = request.prompt_tokens
            start = job.prefilled
            end = min(len(prompt), start + self._chunk)
            rows = self._forward(job, prompt[start:end], all_rows=request.prompt_logprobs)
            if request.prompt_logprobs:
                self._record_prompt_logprobs(job, start, end, rows)
            job.prefilled = end
            if not job.decoding:
                return  # more prompt to go: the next round continues it
            logits = rows[-1]
        if job.probe is not None:
            result = self._distribution(job, logits)
            self._finish(job, running, "completed")
            job.send(result)
            return
        logprobs = log_softmax(logits, self._vocab_size) if request.logprobs is not None else None
        token = job.sampler.sample(logits)
        event = self._advance(job, token, logprobs)
        if event.finish_reason is not None:
            self._finish(job, running, "completed")  # first, so stats are final when the caller sees the end
        job.send(event)

    def _forward(self, job: Job, tokens: list[int], *, all_rows: bool) -> torch.Tensor:
        """Feeds `tokens` after what the job's cache holds; returns the logits rows (float32, CPU)."""
        kwargs: dict[str, Any] = {"use_cache": True}
        if job.cache is not None:
            kwargs[self._cache_arg] = job.cache
        if self._trim_logits and not all_rows:
            kwargs["logits_to_keep"] = 1
        input_ids = torch.tensor([tokens], dtype=torch.long, device=self._device)
        out = self._model(input_ids=input_ids, **kwargs)
        if job.cache is None:
            cache = getattr(out, "cache", None)
            job.cache = cache if cache is not None else getattr(out, "past_key_values", None)
        return out.logits[0].float().cpu()

    def _distribution(self, job: Job, logits: torch.Tensor) -> list[tuple[int, float]]:
        top_n = job.probe[1]
        if job.sampler is not None:
            return job.sampler.distribution(logits, top_n)
        logprobs = log_softmax(logits, self._vocab_size)
        return [(t, math.exp(lp)) for t, lp in top_entries(logprobs, top_n)]

    def _record_prompt_logprobs(self, job: Job, start: int, end: int, rows: torch.Tensor) -> None:
        """Each prompt token's logprob given the tokens before it (the first token has none)."""
        prompt = job.request.prompt_tokens
        top_n = job.request.logprobs or 0
        if start == 0:
            job.prompt_logprobs.append((prompt[0], None, ()))
        for pos in range(start, min(end, len(prompt) - 1)):
            logprobs = log_softmax(rows[pos - start], self._vocab_size)
            following = prompt[pos + 1]
            lp = float(logprobs[following]) if following < self._vocab_size else float("-inf")
            job.prompt_logprobs.append((following, lp, top_entries(logprobs, top_n)))

    def _advance(self, job: Job, token: int, logprobs: torch.Tensor | None) -> TokenEvent:
        request = job.request
        job.produced += 1
        self._stats.tokens_generated += 1
        first = job.produced == 1
        extra: dict[str, Any] = {
            "prompt_logprobs": tuple(job.prompt_logprobs) if first and request.prompt_logprobs else None,
        }
        if logprobs is not None:
            extra["logprob"] = float(logprobs[token])
            extra["top_logprobs"] = top_entries(logprobs, request.logprobs or 0)
        if token in self._eog:
            return TokenEvent(token_id=token, text=job.decoder.flush(), finish_reason="stop", **extra)
        text = job.decoder.push(self._tokens.piece(token, render_special=request.render_special))
        job.pending_token = token
        used = len(request.prompt_tokens) + job.produced
        if job.produced >= request.max_tokens or used >= self._context_length:
            return TokenEvent(token_id=token, text=text + job.decoder.flush(), finish_reason="length", **extra)
        return TokenEvent(token_id=token, text=text, **extra)
