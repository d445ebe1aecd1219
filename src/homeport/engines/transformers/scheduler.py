"""The decode loop of the transformers engine, run by its one thread.

Each running generation has its own KV cache and advances one step per round, in turn: a prompt
chunk while it prefills, then one token per step. A long request therefore never stalls the
others, and each request's forward passes are the same whatever runs beside it (batch size 1), so
its output does not depend on its neighbours. At most `parallel` generations run; the rest wait.
The thread, its inbox, stop and cancellation are the shared runtime's (`engines/runtime`).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from contextlib import AbstractContextManager
from typing import Any

import torch

from homeport.engines.runtime import GenerationJob, GenerationRuntime
from homeport.engines.runtime.generation import Outcome
from homeport.engines.transformers.sampling import Sampler, log_softmax, top_entries
from homeport.engines.transformers.tokens import Tokens
from homeport.errors import EngineError


@dataclass(eq=False, kw_only=True)
class Job(GenerationJob):
    cache: Any = None  # this request's own KV cache
    sampler: Sampler | None = None  # for a probe: its filter (None: the raw distribution)


class Scheduler(GenerationRuntime):
    job_type = Job

    def __init__(
        self,
        model: Any,
        tokens: Tokens,
        *,
        name: str,
        device: torch.device,
        parallel: int,
        context_length: int,
        prefill_chunk: int,
        eog: frozenset[int],
        model_id: str = "",
    ) -> None:
        super().__init__(name, parallel=parallel, context_length=context_length, eog=eog,
                         piece=lambda token, special: tokens.piece(token, render_special=special),
                         top_entries=top_entries, model_id=model_id)
        self.model = model  # None once the engine is closed (frees its memory)
        self._device = device
        self._chunk = prefill_chunk
        self._vocab_size = tokens.vocab_size
        params = inspect.signature(model.forward).parameters
        # transformers 5 renamed past_key_values to cache; either works.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._trim_logits = "logits_to_keep" in params

    # ---- engine thread ---------------------------------------------------------------------

    def thread_context(self) -> AbstractContextManager:
        return torch.inference_mode()

    def admit(self, job: Job) -> None:
        prompt = job.request.prompt_tokens
        if not prompt:
            raise EngineError("cannot generate from an empty prompt")
        if len(prompt) > self.context_length:
            raise EngineError(f"the prompt ({len(prompt)} tokens) is longer than the context ({self.context_length})")
        sampling = job.probe[0] if job.probe is not None else job.request.sampling
        if sampling is not None:
            job.sampler = Sampler(sampling, self._vocab_size, self.context_length, prompt)

    def release(self, job: Job, outcome: Outcome) -> None:
        job.cache = None  # frees this request's KV memory now
        job.sampler = None

    def step(self, running: list[Job]) -> None:
        for job in list(running):
            try:
                self._step_one(job, running)
            except Exception as exc:  # one request's failure (e.g. out of memory) fails it only
                self.broke([job], running, exc)

    def _step_one(self, job: Job, running: list[Job]) -> None:
        request = job.request
        if job.decoding:
            logits = self._forward(job, [job.pending_token], all_rows=False)[-1]
        else:
            prompt = request.prompt_tokens
            start = job.prefilled
            end = min(len(prompt), start + self._chunk)
            rows = self._forward(job, prompt[start:end], all_rows=request.prompt_logprobs)
            if request.prompt_logprobs:
                self.record_prompt_logprobs(job, start, end, lambda i: log_softmax(rows[i], self._vocab_size))
            job.prefilled = end
            if not job.decoding:
                return  # more prompt to go: the next round continues it
            logits = rows[-1]
        if job.probe is not None:
            self.complete(job, running, self._distribution(job, logits))
            return
        logprobs = log_softmax(logits, self._vocab_size) if request.logprobs is not None else None
        if job.produced < request.min_tokens:
            logits = logits.clone()
            logits[[t for t in self._eog if t < logits.numel()]] = float("-inf")
        token = job.sampler.sample(logits)
        event = self.advance(job, token, logprobs)
        if event.finish_reason is not None:
            self.complete(job, running, event)
        else:
            job.send(event)

    def _forward(self, job: Job, tokens: list[int], *, all_rows: bool) -> torch.Tensor:
        """Feeds `tokens` after what the job's cache holds; returns the logits rows (float32, CPU)."""
        kwargs: dict[str, Any] = {"use_cache": True}
        if job.cache is not None:
            kwargs[self._cache_arg] = job.cache
        if self._trim_logits and not all_rows:
            kwargs["logits_to_keep"] = 1
        input_ids = torch.tensor([tokens], dtype=torch.long, device=self._device)
        out = self.model(input_ids=input_ids, **kwargs)
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
