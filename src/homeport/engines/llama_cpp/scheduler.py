"""Continuous batching over llama.cpp's multi-sequence batch API, run by the engine's thread.

Each step builds one `llama_batch`: the next token of every decoding sequence, plus one
position-aligned prompt chunk of each sequence still prefilling, then calls `llama_decode` once.
A request joins at the next step; a finished or cancelled one frees its slot at once.

Prefix cache: a slot keeps the tokens whose KV it holds after its request ends. A new request
takes the free slot sharing the longest prefix with its prompt, and only the rest is prefilled.
Prompts are always prefilled in chunks that start at multiples of `chunk`, and reuse is cut back
to such a boundary, so a cache hit decodes exactly the chunks a fresh run would: the same request
gives the same greedy output whether or not its prefix was cached.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import llama_cpp
import numpy as np
from llama_cpp import _internals

from homeport.engines.base import GenerationRequest, GenerationStats, TokenEvent
from homeport.engines.llama_cpp.speculative import Drafter, DraftRequest
from homeport.engines.llama_cpp.vision import VisionProjector
from homeport.engines.llama_cpp.sampling import (
    SamplerChain,
    filtered_distribution,
    log_softmax,
    logits_row,
    top_entries,
)
from homeport.engines.text import IncrementalUtf8
from homeport.errors import EngineError

log = logging.getLogger(__name__)

STOP_THREAD = object()  # put in the inbox to end the thread
MAX_DRAFT_PAUSE = 16  # steps


@dataclass(eq=False)
class _Call:
    """A function to run on the engine thread (see `Scheduler.call_in_thread`)."""

    fn: Callable[[], object]
    exclusive: bool
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return  # the caller gave up before it ran
        try:
            self.future.set_result(self.fn())
        except BaseException as exc:
            self.future.set_exception(exc)


@dataclass(eq=False)
class Job:
    """One generation as the engine thread sees it. The loop sets `cancelled` (the client is gone:
    drop it) or `stop_requested` (stop-generation: finish it cleanly with what it has)."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    slot: Slot | None = None
    prefilled: int = 0  # prompt tokens whose KV is in the cache
    cached: int = 0  # of those, how many came from the prefix cache
    produced: int = 0
    pending_token: int = -1  # sampled, to be decoded at the next step
    sampler: SamplerChain | None = None
    decoder: IncrementalUtf8 = field(default_factory=IncrementalUtf8)
    prompt_logprobs: list = field(default_factory=list)  # filled while prefilling, when asked for
    draft_misses: int = 0  # speculative decoding: steps in a row whose drafts were all rejected
    draft_pause: int = 0  # steps to decode without drafts before trying again
    # A distribution probe (the logits endpoint): answer with the next-token distribution after
    # the first decode, filtered by this chain (None: the raw model distribution), then end.
    probe: tuple[SamplerChain | None, int] | None = None

    def send(self, item: object) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)

    @property
    def decoding(self) -> bool:
        return self.prefilled == len(self.request.prompt_tokens)


@dataclass(eq=False)
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # what this slot's KV cells hold, in order
    last_used: int = 0


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Scheduler:
    def __init__(
        self,
        ctx: _internals.LlamaContext,
        vocab: llama_cpp.llama_vocab_p,
        *,
        n_slots: int,
        n_batch: int,
        chunk: int,
        context_length: int,
        build_sampler: Callable[[GenerationRequest], SamplerChain],
        piece: Callable[[int, bool], bytes],
        stats: GenerationStats,
        drafter: Drafter | None = None,
        vision: VisionProjector | None = None,
        draft_max: int = 0,
        draft_min: int = 0,
    ) -> None:
        self._ctx = ctx
        self._vocab = vocab
        self._memory = ctx.memory
        self._n_batch = n_batch
        self._chunk = chunk
        self._context_length = context_length
        self._build_sampler = build_sampler
        self._piece = piece
        self._stats = stats
        self._drafter = drafter
        self._vision = vision
        self._draft_max = draft_max if drafter is not None else 0
        self._draft_min = max(1, draft_min)
        # A step: the prompt budget, plus each decoding sequence's pending token and its drafts.
        self._batch = llama_cpp.llama_batch_init(n_batch + n_slots * (1 + self._draft_max), 0, 1)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self._slots = [Slot(seq_id=i) for i in range(n_slots)]
        self._free = list(self._slots)
        self._clock = itertools.count(1)
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()

    @property
    def max_image_tokens(self) -> int:
        """An image attended bidirectionally must fit one compute pass (llama.cpp aborts otherwise)."""
        return llama_cpp.llama_n_ubatch(self._ctx.ctx)

    def close(self) -> None:
        """After the thread has ended: frees the batch and fails calls it never took."""
        llama_cpp.llama_batch_free(self._batch)
        if self._drafter is not None:
            self._drafter.close()
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Call):
                _fail(item, EngineError("the model was unloaded"))

    # ---- calls onto the engine thread --------------------------------------------------------

    def call_in_thread(self, fn: Callable[[], object], *, exclusive: bool = False) -> concurrent.futures.Future:
        """Runs `fn()` on the engine thread between two decode steps; the future has its result.
        `exclusive`: first let every running generation finish, admitting no new one meanwhile
        (they wait in the queue and start after `fn`), for changes such as new weights that no
        generation may straddle."""
        call = _Call(fn, exclusive)
        self.inbox.put(call)
        return call.future

    def clear_cache(self) -> None:
        """Forgets every slot's cached prefix. Engine thread only, with no generation running."""
        for slot in self._slots:
            slot.tokens.clear()
        llama_cpp.llama_memory_clear(self._memory, True)
        if self._drafter is not None:
            self._drafter.clear()

    # ---- engine thread ---------------------------------------------------------------------

    def run(self) -> None:
        running: list[Job] = []
        waiting: list[Job] = []
        calls: list[_Call] = []
        while True:
            # Block only when there is nothing to decode or call; otherwise just drain the inbox.
            block = not running and not waiting and not calls
            try:
                while True:
                    item = self.inbox.get(block=block)
                    block = False
                    if item is None:  # a wake-up call: look at the flags again
                        continue
                    if item is STOP_THREAD:
                        for seq in running + waiting:
                            seq.send(EngineError("the model was unloaded"))
                        for call in calls:
                            _fail(call, EngineError("the model was unloaded"))
                        return
                    if isinstance(item, _Call):
                        calls.append(item)
                        continue
                    waiting.append(item)
            except queue.Empty:
                pass
            for seq in [s for s in waiting if s.cancelled.is_set() or s.stop_requested.is_set()]:
                waiting.remove(seq)
                if seq.stop_requested.is_set() and not seq.cancelled.is_set():
                    seq.send(TokenEvent(token_id=-1, text="", finish_reason="stop"))
                    self._stats.completed += 1
                else:
                    self._count_cancelled(0)
            # Calls run in order; an exclusive one waits for an empty batch and holds back the
            # calls and the admissions behind it until it has run.
            while calls and not (calls[0].exclusive and running):
                calls.pop(0).run()
            while waiting and self._free and not calls:
                seq = waiting.pop(0)
                try:
                    self._admit(seq)
                except Exception as exc:  # a sampler that cannot be built fails this request only
                    log.error("cannot start a generation: %s", type(exc).__name__)
                    seq.send(EngineError("cannot start generation with these sampling parameters"))
                    self._free_slot(seq)
                    self._stats.failed += 1
                    continue
                running.append(seq)
                self._stats.active += 1
            for seq in list(running):
                if seq.cancelled.is_set():
                    self._finish(seq, running, "cancelled")
                elif seq.stop_requested.is_set():
                    seq.send(TokenEvent(token_id=-1, text=seq.decoder.flush(), finish_reason="stop"))
                    self._finish(seq, running, "completed")
            if running:
                try:
                    self._step(running)
                except Exception as exc:  # never let the thread die silently: fail the batch instead
                    log.error("llama.cpp engine step failed: %s", type(exc).__name__)
                    for seq in list(running):
                        seq.send(EngineError("internal engine error"))
                        self._finish(seq, running, "failed", keep_cache=False)

    def _admit(self, seq: Job) -> None:
        prompt = seq.request.prompt_tokens
        # The free slot whose cache shares the longest prefix; among equals, the least recently used.
        slot = max(self._free, key=lambda s: (common_prefix(s.tokens, prompt), -s.last_used))
        self._free.remove(slot)
        seq.slot = slot
        wants_cache = seq.request.use_prefix_cache and not seq.request.prompt_logprobs
        shared = common_prefix(slot.tokens, prompt) if wants_cache else 0
        # Keep whole aligned chunks only, and always leave the last prompt token to decode (its
        # logits give the first sampled token).
        reuse = (min(shared, len(prompt) - 1) // self._chunk) * self._chunk
        for segment in _segments(seq):
            if segment.start < reuse < segment.start + segment.length:
                reuse = segment.start  # an image is decoded whole or not at all
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, reuse, -1)
        del slot.tokens[reuse:]
        seq.prefilled = seq.cached = reuse
        seq.sampler = self._build_sampler(seq.request)

    def _free_slot(self, seq: Job) -> None:
        if seq.slot is not None:
            seq.slot.last_used = next(self._clock)
            self._free.append(seq.slot)
            seq.slot = None

    def _finish(self, seq: Job, running: list[Job], outcome: str, *, keep_cache: bool = True) -> None:
        running.remove(seq)
        if seq.slot is not None and not keep_cache:
            llama_cpp.llama_memory_seq_rm(self._memory, seq.slot.seq_id, -1, -1)
            seq.slot.tokens.clear()
        self._free_slot(seq)
        for chain in (seq.sampler, seq.probe[0] if seq.probe else None):
            if chain is not None:
                chain.close()
        seq.sampler = None
        seq.probe = None
        if self._drafter is not None:
            self._drafter.forget(seq)
        self._stats.active -= 1
        if outcome == "cancelled":
            self._count_cancelled(seq.produced)
        else:
            setattr(self._stats, outcome, getattr(self._stats, outcome) + 1)

    def _count_cancelled(self, produced: int) -> None:
        self._stats.cancelled += 1
        self._stats.last_cancelled_tokens = produced

    def _step(self, running: list[Job]) -> None:
        n = 0
        prefill = 0  # prompt tokens in this step; decode tokens come on top (one per sequence, plus drafts)
        # (job, its batch rows to sample in turn, the drafts those rows check)
        sample_at: list[tuple[Job, list[int], list[int]]] = []
        prompt_rows: list[tuple[Job, int, int]] = []  # (job, first prompt position, first batch row)
        # Images first: each is its own decode call, which would wipe the logits of the batch.
        for seq in [s for s in running if not s.decoding and s.request.media is not None]:
            try:
                self._decode_images(seq)
            except EngineError as exc:  # this request's image only: the others go on
                log.error("decoding an image failed")
                seq.send(exc)
                self._finish(seq, running, "failed", keep_cache=False)
        drafts = self._drafts(running)
        for seq in running:
            if seq.decoding:
                slot = seq.slot
                guesses = drafts.get(seq, [])
                rows = []
                for token in (seq.pending_token, *guesses):
                    self._add(n, token, len(slot.tokens), slot.seq_id, True)
                    slot.tokens.append(token)
                    rows.append(n)
                    n += 1
                sample_at.append((seq, rows, guesses))
        for seq in running:
            if seq.decoding:
                continue
            prompt = seq.request.prompt_tokens
            start = seq.prefilled
            end = min(len(prompt), (start // self._chunk + 1) * self._chunk)
            end = min([end, *(s.start for s in _segments(seq) if s.start > start)])  # text up to the next image
            if prefill + (end - start) > self._n_batch:
                continue  # this step is full; the chunk goes whole into a later one
            prefill += end - start
            all_logits = seq.request.prompt_logprobs
            if all_logits:
                prompt_rows.append((seq, start, n))
            for pos in range(start, end):
                self._add(n, prompt[pos], pos, seq.slot.seq_id, all_logits or pos == len(prompt) - 1)
                n += 1
            seq.slot.tokens.extend(prompt[start:end])
            seq.prefilled = end
            if seq.decoding:
                sample_at.append((seq, [n - 1], []))
        if n == 0:
            return
        self._batch.n_tokens = n
        rc = llama_cpp.llama_decode(self._ctx.ctx, self._batch)
        if rc != 0:
            raise EngineError(f"llama_decode failed ({rc})")
        for seq, start, row in prompt_rows:
            self._record_prompt_logprobs(seq, start, row)
        for seq, rows, guesses in sample_at:
            if seq.cancelled.is_set():
                continue
            if seq.probe is not None:
                self._answer_probe(seq, rows[0], running)
                continue
            for checked, row in enumerate(rows):
                logprobs = None
                if seq.request.logprobs is not None:
                    # Read the model's distribution before sampling: the sampler may edit the logits.
                    logprobs = log_softmax(logits_row(self._ctx, row, self._n_vocab).astype(np.float64))
                token = llama_cpp.llama_sampler_sample(seq.sampler.chain.sampler, self._ctx.ctx, row)
                event = self._advance(seq, token, logprobs)
                if checked == len(guesses) or token != guesses[checked] or event.finish_reason is not None:
                    break
                seq.send(event)
            if guesses:
                # The KV keeps the pending token and the drafts the model agreed with.
                self._stats.draft_tokens += len(guesses)
                self._stats.draft_accepted += checked
                # Where drafts keep missing (free sampling, text unlike its context), checking them
                # only costs: back off exponentially, and start over at the first hit.
                seq.draft_misses = seq.draft_misses + 1 if checked == 0 else 0
                seq.draft_pause = min(MAX_DRAFT_PAUSE, 2 ** seq.draft_misses - 1)
                keep = len(seq.slot.tokens) - len(guesses) + checked
                llama_cpp.llama_memory_seq_rm(self._memory, seq.slot.seq_id, keep, -1)
                del seq.slot.tokens[keep:]
            seq.send(event)
            if event.finish_reason is not None:
                self._finish(seq, running, "completed")

    def _drafts(self, running: list[Job]) -> dict[Job, list[int]]:
        """Draft tokens for the decoding sequences that have room for them."""
        if self._drafter is None:
            return {}
        requests, jobs = [], []
        for seq in running:
            if not seq.decoding or seq.produced == 0 or seq.probe is not None or seq.request.media is not None:
                continue  # (a draft model cannot see images; it would draft blind)
            if seq.draft_pause:
                seq.draft_pause -= 1
                continue
            used = len(seq.request.prompt_tokens) + seq.produced  # the pending token included
            room = min(self._draft_max, seq.request.max_tokens - seq.produced - 1, self._context_length - used - 1)
            if room >= self._draft_min:
                requests.append(DraftRequest(seq, seq.slot.seq_id, seq.slot.tokens, seq.pending_token, room))
                jobs.append(seq)
        if not requests:
            return {}
        proposals = self._drafter.propose(requests)
        return {seq: guesses for seq, guesses in zip(jobs, proposals) if len(guesses) >= self._draft_min}

    def _decode_images(self, seq: Job) -> None:
        """Decodes the images the sequence's prefill has reached (their embeddings were made when
        the request was tokenized), each into the KV at its positions."""
        media = seq.request.media
        for index, segment in enumerate(media.segments):
            if segment.start != seq.prefilled:
                continue
            self._vision.decode_image(self._ctx, segment, seq_id=seq.slot.seq_id, n_past=segment.start,
                                      n_batch=self._n_batch, embeddings=media.embeddings[index])
            end = segment.start + segment.length
            seq.slot.tokens.extend(seq.request.prompt_tokens[segment.start:end])
            seq.prefilled = end

    def _answer_probe(self, seq: Job, row: int, running: list[Job]) -> None:
        chain, top_n = seq.probe
        logits = logits_row(self._ctx, row, self._n_vocab)
        if chain is None:
            probs = [(t, float(np.exp(lp))) for t, lp in top_entries(log_softmax(logits), top_n)]
        else:
            probs = filtered_distribution(chain, logits, self._n_vocab, top_n)
        seq.send(probs)
        self._finish(seq, running, "completed")

    def _record_prompt_logprobs(self, seq: Job, start: int, row: int) -> None:
        """Each prompt token's logprob given the tokens before it (the first token has none)."""
        prompt = seq.request.prompt_tokens
        top_n = seq.request.logprobs or 0
        if start == 0:
            seq.prompt_logprobs.append((prompt[0], None, ()))
        end = seq.prefilled
        for pos in range(start, min(end, len(prompt) - 1)):
            logprobs = log_softmax(logits_row(self._ctx, row + pos - start, self._n_vocab).astype(np.float64))
            following = prompt[pos + 1]
            seq.prompt_logprobs.append((following, float(logprobs[following]), top_entries(logprobs, top_n)))

    def _advance(self, seq: Job, token: int, logprobs: np.ndarray | None) -> TokenEvent:
        seq.produced += 1
        self._stats.tokens_generated += 1
        first = seq.produced == 1
        extra = {
            "cached_tokens": seq.cached if first else 0,
            "prompt_logprobs": tuple(seq.prompt_logprobs) if first and seq.request.prompt_logprobs else None,
        }
        if logprobs is not None:
            extra["logprob"] = float(logprobs[token])
            extra["top_logprobs"] = top_entries(logprobs, seq.request.logprobs or 0)
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            return TokenEvent(token_id=token, text=seq.decoder.flush(), finish_reason="stop", **extra)
        text = seq.decoder.push(self._piece(token, seq.request.render_special))
        seq.pending_token = token
        used = len(seq.request.prompt_tokens) + seq.produced
        if seq.produced >= seq.request.max_tokens or used >= self._context_length:
            return TokenEvent(token_id=token, text=text + seq.decoder.flush(), finish_reason="length", **extra)
        return TokenEvent(token_id=token, text=text, **extra)

    def _add(self, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        batch = self._batch
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq_id
        batch.logits[i] = logits


def _segments(seq: Job) -> tuple:
    return seq.request.media.segments if seq.request.media is not None else ()


def _fail(call: _Call, error: Exception) -> None:
    if call.future.set_running_or_notify_cancel():
        call.future.set_exception(error)
