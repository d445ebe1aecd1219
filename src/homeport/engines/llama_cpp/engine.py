"""The llama.cpp engine: one thread owns the llama.cpp context and runs the decode loop.

Requests reach the thread through a queue; tokens come back to the event loop with
`loop.call_soon_threadsafe`. Each loop step decodes one token for every running sequence plus a
chunk of pending prompt in a single `llama_batch` (up to `parallel` sequences), and every
sequence samples with its own native sampler chain (no per-logit Python work).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import queue
import random
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
from llama_cpp import _internals
from llama_cpp import _logger as llama_logger

from homeport.engines.base import (
    GenerationRequest,
    GenerationStats,
    ModelInfo,
    SamplingParams,
    TokenEvent,
)
from homeport.engines.text import IncrementalUtf8
from homeport.errors import EngineError, StartupError

log = logging.getLogger(__name__)

DEFAULT_MAX_CONTEXT = 8192  # an auto ctx-size caps the model's training context here (KV memory)
_STOP = object()  # sentinel that ends the engine thread


@dataclass(frozen=True)
class LlamaCppConfig:
    path: Path
    model_id: str
    ctx_size: int = 0  # 0: the model's training context, capped at DEFAULT_MAX_CONTEXT
    threads: int = 0  # 0: every core
    n_gpu_layers: int = 0
    batch_size: int = 512
    parallel: int = 1
    verbose: bool = False


@dataclass(eq=False)
class _Sequence:
    """One generation as the engine thread sees it."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)
    slot: int = -1
    prefilled: int = 0  # prompt tokens already decoded
    n_past: int = 0  # positions in the KV cache
    produced: int = 0
    last_token: int = -1
    sampler: _internals.LlamaSampler | None = None
    decoder: IncrementalUtf8 = field(default_factory=IncrementalUtf8)

    def send(self, item: object) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


class LlamaCppEngine:
    """A GGUF model served by llama.cpp. Construct with `load()` (blocking: call it off the loop)."""

    def __init__(self, config: LlamaCppConfig, model: _internals.LlamaModel, ctx: _internals.LlamaContext) -> None:
        self.config = config
        self._model = model
        self._ctx = ctx
        self._vocab = model.vocab
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._n_ctx = ctx.n_ctx()
        self._n_batch = min(config.batch_size, self._n_ctx)
        self._batch = llama_cpp.llama_batch_init(self._n_batch + config.parallel, 0, 1)
        self._piece_cache: dict[int, bytes] = {}
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._stats = GenerationStats()
        self._thread: threading.Thread | None = None
        metadata = model.metadata()
        self.info = ModelInfo(
            model_id=config.model_id,
            context_length=self._n_ctx,
            loader="llama.cpp",
            path=str(config.path),
            chat_template=metadata.get("tokenizer.chat_template") or None,
            bos_token=self._token_text(llama_cpp.llama_vocab_bos(self._vocab)),
            eos_token=self._token_text(llama_cpp.llama_vocab_eos(self._vocab)),
        )

    # ---- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, config: LlamaCppConfig) -> LlamaCppEngine:
        llama_logger.set_verbose(config.verbose)
        if not config.path.is_file():
            raise StartupError(f"model file not found: {config.path}")
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0x7FFFFFFF if config.n_gpu_layers < 0 else config.n_gpu_layers
        try:
            model = _internals.LlamaModel(path_model=str(config.path), params=model_params, verbose=config.verbose)
        except ValueError as exc:
            raise StartupError(f"cannot load model {config.path}: not a valid GGUF file") from exc
        n_ctx_train = model.n_ctx_train()
        n_ctx = config.ctx_size or min(n_ctx_train, DEFAULT_MAX_CONTEXT)
        threads = config.threads or _default_threads()
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = n_ctx
        ctx_params.n_batch = min(config.batch_size, n_ctx)
        ctx_params.n_ubatch = min(config.batch_size, n_ctx)
        ctx_params.n_seq_max = config.parallel
        ctx_params.n_threads = threads
        ctx_params.n_threads_batch = threads
        ctx_params.kv_unified = True  # every sequence may use the whole context
        ctx_params.no_perf = True
        try:
            ctx = _internals.LlamaContext(model=model, params=ctx_params, verbose=config.verbose)
        except ValueError as exc:
            model.close()
            raise StartupError(f"cannot create a llama.cpp context of {n_ctx} tokens for {config.path}") from exc
        return cls(config, model, ctx)

    async def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"llama.cpp:{self.info.model_id}", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        if self._thread is not None:
            self._inbox.put(_STOP)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        llama_cpp.llama_batch_free(self._batch)
        self._ctx.close()
        self._model.close()

    # ---- tokens ----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._n_vocab

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        add_bos = add_special and bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_bos, parse_special)
        if n < 0:
            capacity = -n
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_bos, parse_special)
        return list(buf[:n])

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self._piece(t) for t in tokens).decode("utf-8", errors="replace")

    def _piece(self, token: int) -> bytes:
        piece = self._piece_cache.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            piece = buf.raw[:n]
            self._piece_cache[token] = piece
        return piece

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text = llama_cpp.llama_vocab_get_text(self._vocab, token)
        return text.decode("utf-8", errors="replace") if text else ""

    def stats(self) -> dict:
        return self._stats.snapshot()

    # ---- generation (event-loop side) ------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        if self._thread is None:
            raise EngineError("the model is not running")
        seq = _Sequence(request=request, loop=asyncio.get_running_loop(), events=asyncio.Queue())
        self._inbox.put(seq)
        try:
            while True:
                item = await seq.events.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            # Reached on completion, on error, and when the consumer closes us (client gone):
            # the engine thread drops a cancelled sequence at its next step.
            seq.cancelled.set()

    # ---- the engine thread -----------------------------------------------------------------

    def _run(self) -> None:
        running: list[_Sequence] = []
        waiting: list[_Sequence] = []
        free_slots = list(range(self.config.parallel))
        while True:
            # Block only when there is nothing to decode; otherwise just drain the inbox.
            block = not running and not waiting
            try:
                while True:
                    item = self._inbox.get(block=block)
                    block = False
                    if item is _STOP:
                        for seq in running + waiting:
                            seq.send(EngineError("the model was unloaded"))
                        return
                    waiting.append(item)
            except queue.Empty:
                pass
            for seq in [s for s in waiting if s.cancelled.is_set()]:
                waiting.remove(seq)
                self._stats.cancelled += 1
                self._stats.last_cancelled_tokens = 0
            while waiting and free_slots:
                seq = waiting.pop(0)
                try:
                    self._admit(seq, free_slots.pop())
                except Exception as exc:  # a sampler that cannot be built fails this request only
                    free_slots.append(seq.slot)
                    seq.send(EngineError(f"cannot start generation: {exc}"))
                    continue
                running.append(seq)
                self._stats.active += 1
            for seq in [s for s in running if s.cancelled.is_set()]:
                self._release(seq, running, free_slots, "cancelled")
            if running:
                try:
                    self._step(running, free_slots)
                except Exception as exc:  # never let the thread die silently: fail the batch instead
                    log.error("llama.cpp engine step failed: %s", type(exc).__name__)
                    for seq in list(running):
                        seq.send(EngineError("internal engine error"))
                        self._release(seq, running, free_slots, "failed")

    def _admit(self, seq: _Sequence, slot: int) -> None:
        seq.slot = slot
        llama_cpp.llama_memory_seq_rm(self._ctx.memory, slot, -1, -1)
        seq.sampler = self._build_sampler(seq.request.sampling, seq.request.prompt_tokens)

    def _release(self, seq: _Sequence, running: list[_Sequence], free_slots: list[int], outcome: str) -> None:
        running.remove(seq)
        llama_cpp.llama_memory_seq_rm(self._ctx.memory, seq.slot, -1, -1)
        free_slots.append(seq.slot)
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None
        self._stats.active -= 1
        setattr(self._stats, outcome, getattr(self._stats, outcome) + 1)
        if outcome == "cancelled":
            self._stats.last_cancelled_tokens = seq.produced

    def _step(self, running: list[_Sequence], free_slots: list[int]) -> None:
        """One llama_decode over every running sequence: a sampled token for those decoding, a
        prompt chunk for those still prefilling (chunked so long prompts don't stall streams)."""
        batch = self._batch
        n = 0
        sample_at: list[tuple[_Sequence, int]] = []
        for seq in running:
            if seq.prefilled == len(seq.request.prompt_tokens):
                self._batch_add(n, seq.last_token, seq.n_past, seq.slot, True)
                sample_at.append((seq, n))
                seq.n_past += 1
                n += 1
        budget = self._n_batch - n
        for seq in running:
            prompt = seq.request.prompt_tokens
            if seq.prefilled == len(prompt) or budget <= 0:
                continue
            chunk = prompt[seq.prefilled : seq.prefilled + budget]
            for i, token in enumerate(chunk):
                last = seq.prefilled + i == len(prompt) - 1
                self._batch_add(n, token, seq.n_past + i, seq.slot, last)
                if last:
                    sample_at.append((seq, n))
                n += 1
            seq.prefilled += len(chunk)
            seq.n_past += len(chunk)
            budget -= len(chunk)
        batch.n_tokens = n
        rc = llama_cpp.llama_decode(self._ctx.ctx, batch)
        if rc != 0:
            message = "the KV cache is full" if rc == 1 else f"llama_decode failed ({rc})"
            for seq in list(running):
                seq.send(EngineError(message))
                self._release(seq, running, free_slots, "failed")
            return
        for seq, index in sample_at:
            if seq.cancelled.is_set():
                continue
            token = llama_cpp.llama_sampler_sample(seq.sampler.sampler, self._ctx.ctx, index)
            event = self._advance(seq, token)
            seq.send(event)
            if event.finish_reason is not None:
                self._release(seq, running, free_slots, "completed")

    def _advance(self, seq: _Sequence, token: int) -> TokenEvent:
        seq.produced += 1
        self._stats.tokens_generated += 1
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            return TokenEvent(token_id=token, text=seq.decoder.flush(), finish_reason="stop")
        text = seq.decoder.push(self._piece(token))
        seq.last_token = token
        if seq.produced >= seq.request.max_tokens or seq.n_past + 1 >= self._n_ctx:
            return TokenEvent(token_id=token, text=text + seq.decoder.flush(), finish_reason="length")
        return TokenEvent(token_id=token, text=text)  # decoded at the next step, at position n_past

    def _batch_add(self, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        batch = self._batch
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq_id
        batch.logits[i] = logits

    def _build_sampler(self, params: SamplingParams, prompt: Sequence[int]) -> _internals.LlamaSampler:
        sampler = _internals.LlamaSampler()
        if params.logit_bias:
            sampler.add_logit_bias(self._n_vocab, params.logit_bias)
        penalized = (
            params.repetition_penalty != 1.0 or params.frequency_penalty != 0.0 or params.presence_penalty != 0.0
        )
        if penalized:
            sampler.add_penalties(
                self._n_vocab,
                params.repetition_penalty_range,
                params.repetition_penalty,
                params.frequency_penalty,
                params.presence_penalty,
            )
        if params.greedy:
            sampler.add_greedy()
        else:
            if params.top_k > 0:
                sampler.add_top_k(params.top_k)
            if params.top_p < 1.0:
                sampler.add_top_p(params.top_p, 1)
            if params.min_p > 0.0:
                sampler.add_min_p(params.min_p, 1)
            sampler.add_temp(params.temperature)
            seed = params.seed if params.seed is not None else random.getrandbits(32)
            sampler.add_dist(seed & 0xFFFFFFFF)
        if penalized:
            # The repetition window covers the prompt's tail too, as llama-server does.
            for token in prompt[-params.repetition_penalty_range :]:
                sampler.accept(token)
        return sampler


def _default_threads() -> int:
    import os

    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
