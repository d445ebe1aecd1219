"""The transformers engine: a Hugging Face causal LM folder, its tokenizer, and the thread that
runs its decode loop.

One thread per loaded model owns the torch model and runs the `Scheduler`; requests reach it
through a queue and tokens come back to the event loop with `loop.call_soon_threadsafe`, so no
forward pass ever runs on the event loop. Build it with `load_transformers_engine` (loader.py).
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from homeport.engines.base import (
    GenerationRequest,
    GenerationStats,
    Grammar,
    ModelInfo,
    SamplingParams,
    TokenEvent,
)
from homeport.engines.transformers.scheduler import STOP_THREAD, Job, Scheduler
from homeport.engines.transformers.support import DEFAULT_PARALLEL, GRAMMAR_UNSUPPORTED, unsupported_sampling
from homeport.engines.transformers.tokens import Tokens
from homeport.errors import EngineError, UnsupportedParameterError

PREFILL_CHUNK = 256  # prompt tokens per step: a long prompt yields to the other requests between chunks


@dataclass(frozen=True)
class TransformersConfig:
    path: Path
    model_id: str
    ctx_size: int = 0  # per request; 0: the model's training context, capped at DEFAULT_MAX_CONTEXT
    threads: int = 0  # 0: torch's default
    parallel: int = DEFAULT_PARALLEL
    dtype: str = "auto"
    device: str = "auto"
    debug: bool = False


class TransformersEngine:
    """A Hugging Face model served with torch. Construct with `load_transformers_engine()`."""

    def __init__(
        self,
        config: TransformersConfig,
        model: Any,
        tokens: Tokens,
        *,
        info: ModelInfo,
        eog: frozenset[int],
        device: Any,
        dtype: str,
        prefill_chunk: int = PREFILL_CHUNK,
    ) -> None:
        self.config = config
        self.info = info
        self._model = model
        self._tokens = tokens
        self._eog = eog
        self._device = device
        self._dtype = dtype
        self._stats = GenerationStats()
        self._live: set[Job] = set()
        self._thread: threading.Thread | None = None
        self._scheduler = Scheduler(
            model,
            tokens,
            device=device,
            parallel=config.parallel,
            context_length=info.context_length,
            prefill_chunk=prefill_chunk,
            eog=eog,
            stats=self._stats,
        )

    async def start(self) -> None:
        self._thread = threading.Thread(
            target=self._scheduler.run, name=f"transformers:{self.info.model_id}", daemon=True
        )
        self._thread.start()

    async def close(self) -> None:
        if self._thread is not None:
            self._scheduler.inbox.put(STOP_THREAD)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        self._scheduler.release()
        self._model = None
        gc.collect()
        if str(self._device).startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # ---- tokens ----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._tokens.vocab_size

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return self._tokens.encode(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._tokens.decode(tokens)

    def token_piece(self, token: int) -> bytes:
        return self._tokens.piece(token, render_special=True)

    def eog_tokens(self) -> frozenset[int]:
        return self._eog

    def fim_tokens(self) -> tuple[int, int, int] | None:
        return None

    def check_grammar(self, grammar: Grammar) -> str | None:
        return GRAMMAR_UNSUPPORTED

    def media_marker(self) -> str | None:
        return None  # image inputs: GGUF models with an mmproj only, for now

    def tokenize_media(self, text: str, images: Sequence[bytes], *, add_special: bool = True) -> NoReturn:
        raise UnsupportedParameterError("image inputs are not supported by the transformers engine yet", param="messages")

    def unsupported_sampling(self, params: SamplingParams) -> list[str]:
        """Sampling parameters set to a value this engine cannot apply (it treats them as neutral)."""
        return unsupported_sampling(params)

    def stats(self) -> dict:
        return {**self._stats.snapshot(), "queued": self.queue_depth()}

    def effective_args(self) -> dict:
        return {
            "ctx_size": self.info.context_length,
            "threads": self.config.threads,
            "parallel": self.config.parallel,
            "dtype": self._dtype,
            "device": str(self._device),
        }

    # ---- LoRA adapters ---------------------------------------------------------------------

    @property
    def lora_names(self) -> list[str]:
        return []

    async def set_loras(self, adapters: list[tuple[Path, float]]) -> None:
        raise UnsupportedParameterError("LoRA adapters are not supported by the transformers engine yet")

    # ---- generation (event-loop side) ------------------------------------------------------

    def queue_depth(self) -> int:
        return max(0, len(self._live) - self.config.parallel)

    def stop(self, request_id: str | None = None) -> int:
        """Ends running and queued generations cleanly (finish_reason "stop"): all of them, or
        those of one response id. Returns how many were asked to stop."""
        jobs = [job for job in list(self._live) if request_id is None or job.request.request_id == request_id]
        for job in jobs:
            job.stop_requested.set()
        self._scheduler.inbox.put(None)  # wake the thread if it is idle
        return len(jobs)

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
            self._release(job)

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
            # the engine thread drops a cancelled job at its next step.
            self._release(job)

    def _submit(self, request: GenerationRequest, probe: tuple[SamplingParams | None, int] | None = None) -> Job:
        if self._thread is None:
            raise EngineError("the model is not running")
        job = Job(request=request, loop=asyncio.get_running_loop(), events=asyncio.Queue(), probe=probe)
        self._live.add(job)
        self._scheduler.inbox.put(job)
        return job

    def _release(self, job: Job) -> None:
        job.cancelled.set()
        self._live.discard(job)
        self._scheduler.inbox.put(None)
