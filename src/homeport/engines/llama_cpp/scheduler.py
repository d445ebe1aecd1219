"""Continuous batching over llama.cpp's multi-sequence batch API, run by the engine's thread.

The thread, its inbox, stop and cancellation are the shared runtime's (`engines/runtime`); this
module admits a job (a slot, a sampler chain) and runs one step for all running ones.

Each step builds one `llama_batch`: the next token of every decoding sequence, plus one
position-aligned prompt chunk of each sequence still prefilling, then calls `llama_decode` once.
A request joins at the next step; a finished or cancelled one frees its slot at once.

Prefill budget: a step takes at most `prefill_budget` prompt tokens, earliest request first. On a
CPU a prompt's cost grows with its tokens however they are batched, so eight prompts read one or
two at a time cost what they cost together, while the first ones start streaming at once (a lower
median time to first token; llama-server reads all of them in one step).

Prefix cache: a slot keeps the tokens whose KV it holds after its request ends. A new request
takes the free slot sharing the longest prefix with its prompt, and only the rest is prefilled.
Prompts are always prefilled in pieces that end at multiples of `chunk` and before each end-of-turn
token of the prompt (where a chat's system prompt, and each earlier turn, ends), and reuse is cut
back to such a boundary, so a cache hit decodes exactly the pieces a fresh run would: the same
request gives the same greedy output whether or not its prefix was cached (llama.cpp's CPU kernels
are not batch-invariant). The turn ends let a shared system prompt, or a conversation's earlier
turns, be reused to the token instead of to the last whole chunk.

KV pool (the unified cache's cells, shared by all sequences): `kv_pool`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import llama_cpp
import numpy as np
from llama_cpp import _internals

from homeport.engines.base import GenerationRequest
from homeport.engines.llama_cpp.kv_pool import KVPool
from homeport.engines.llama_cpp.prefix import Slot, choose_slot, common_prefix, piece_boundary, turn_ends
from homeport.engines.llama_cpp.sampling import (
    SamplerChain,
    build_chain,
    filtered_distribution,
    log_softmax,
    logits_row,
    top_entries,
)
from homeport.engines.llama_cpp.speculative import Drafter, DraftRequest, batch_add
from homeport.engines.llama_cpp.vision import VisionProjector
from homeport.engines.runtime import GenerationJob, GenerationRuntime
from homeport.engines.runtime.generation import Outcome
from homeport.errors import EngineError

log = logging.getLogger(__name__)

MAX_DRAFT_PAUSE = 16  # steps


@dataclass(eq=False, kw_only=True)
class Job(GenerationJob):
    slot: Slot | None = None
    sampler: SamplerChain | None = None  # for a probe: its filtering stages (None: the raw distribution)
    draft_misses: int = 0  # speculative decoding: steps in a row whose drafts were all rejected
    draft_pause: int = 0  # steps to decode without drafts before trying again
    resume: list[int] = field(default_factory=list)  # after a pause: generated tokens to re-read
    turn_ends: list[int] = field(default_factory=list)  # prompt positions of end-of-turn tokens, ascending
    paused: bool = False  # gave up its cells and has not finished re-reading
    # Prompt tokens in common with other jobs' prompts (they never change; compared once).
    common: dict[Job, int] = field(default_factory=dict)

    @property
    def decoding(self) -> bool:
        return self.prefilled == len(self.request.prompt_tokens) + len(self.resume)

    def feed(self) -> Sequence[int]:
        """The tokens to prefill: the prompt, and after a pause what had been generated."""
        return [*self.request.prompt_tokens, *self.resume] if self.resume else self.request.prompt_tokens

    def shares(self, other: Job) -> int:
        """How many prompt tokens it has in common with `other`'s prompt."""
        n = self.common.get(other)
        if n is None:
            n = self.common[other] = other.common[self] = common_prefix(self.request.prompt_tokens,
                                                                        other.request.prompt_tokens)
        return n

    def footprint(self) -> int:
        """The KV cells it holds by the end of the next step, prefilled or not."""
        return len(self.request.prompt_tokens) + self.produced + 1


class Scheduler(KVPool, GenerationRuntime):
    job_type = Job

    def __init__(
        self,
        ctx: _internals.LlamaContext,
        model: _internals.LlamaModel,
        *,
        name: str,
        n_slots: int,
        n_batch: int,
        chunk: int,
        context_length: int,
        piece: Callable[[int, bool], bytes],
        eog: frozenset[int],
        drafter: Drafter | None = None,
        vision: VisionProjector | None = None,
        draft_max: int = 0,
        draft_min: int = 0,
        model_id: str = "",
        kv_cells: int | None = None,
        prefill_budget: int | None = None,
        store_bytes: int = 0,
    ) -> None:
        super().__init__(name, parallel=n_slots, context_length=context_length, eog=eog, piece=piece,
                         top_entries=top_entries, model_id=model_id)
        self._ctx = ctx
        self._model = model
        self._memory = ctx.memory
        self._n_batch = n_batch
        self._chunk = chunk
        # Prompt tokens per step, taken first come first served (a piece goes whole or waits).
        self._prefill_budget = max(chunk, min(prefill_budget or n_batch, n_batch))
        self._drafter = drafter
        self._vision = vision
        self._draft_max = draft_max if drafter is not None else 0
        self._draft_min = max(1, draft_min)
        # A step: the prompt budget, plus each decoding sequence's pending token and its drafts.
        self._batch = llama_cpp.llama_batch_init(n_batch + n_slots * (1 + self._draft_max), 0, 1)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(model.vocab)
        self._eog_ids = np.fromiter(sorted(eog), dtype=np.intp, count=len(eog))
        self._n_swa = llama_cpp.llama_model_n_swa(model.model)  # 0: no sliding-window layers
        self._slots = [Slot(seq_id=i) for i in range(n_slots)]
        self._free = list(self._slots)
        self._clock = itertools.count(1)
        # The unified cache's cells (None: each sequence has a stream of context_length of its own).
        self._cells = kv_cells
        self._store_bytes = store_bytes  # host memory for idle slots' cells (kv_pool; 0: they stay)

    @property
    def max_image_tokens(self) -> int:
        """An image attended bidirectionally must fit one compute pass (llama.cpp aborts otherwise)."""
        return llama_cpp.llama_n_ubatch(self._ctx.ctx)

    def free(self) -> None:
        """After the thread has ended: frees the batch and the drafter."""
        llama_cpp.llama_batch_free(self._batch)
        if self._drafter is not None:
            self._drafter.close()

    def clear_cache(self) -> None:
        """Forgets every slot's cached prefix. Engine thread only, with no generation running."""
        for slot in self._slots:
            slot.clear()
        llama_cpp.llama_memory_clear(self._memory, True)
        if self._drafter is not None:
            self._drafter.clear()

    # ---- engine thread ---------------------------------------------------------------------

    def admit(self, seq: Job) -> None:
        # The sampler first: a request whose chain cannot be built never takes a slot.
        if seq.probe is not None:
            params = seq.probe[0]
            seq.sampler = None if params is None else build_chain(
                params, self._model, self._n_vocab, self.context_length, select=False
            )
        else:
            seq.sampler = self._build_sampler(seq.request)
        prompt = seq.request.prompt_tokens
        # Separate streams never share cells: only the free slots are candidates there.
        candidates = self._free if self._cells is None else self._slots
        shared = {id(s): common_prefix(s.tokens, prompt) for s in candidates}
        slot = choose_slot(self._free, shared)
        self._free.remove(slot)
        seq.slot = slot
        seq.turn_ends = turn_ends(prompt, self._eog_ids, self._chunk)
        if not self._may_share(seq):
            reuse, source = 0, slot
        else:
            reuse, source = max(((self._reusable(seq, s, shared[id(s)]), s) for s in self._sources(slot)),
                                key=lambda r: (r[0], r[1] is slot))
        if source is not slot or not reuse:  # nothing of the slot's own cache is kept
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            slot.clear()
        # The idle caches (and what this slot keeps) leave the cache first, so that what comes
        # back and the new prompt go to the freed cells in order (kv_pool).
        self._store_idle(slot, source)
        if source.stored is not None:
            seq.prefilled = seq.cached = self._restore(slot, source, reuse)
        elif source is slot:
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, reuse, -1)
            slot.truncate(reuse)
            seq.prefilled = seq.cached = reuse
        else:
            self._borrow(seq, source, reuse)

    def _may_share(self, seq: Job) -> bool:
        return seq.request.use_prefix_cache and not seq.request.prompt_logprobs

    def _borrow(self, seq: Job, source: Slot, reuse: int) -> None:
        """Another slot holds more of this prompt (a shared system prompt, say, next to another
        conversation): its cells join this sequence (the unified cache shares cells, so nothing is
        copied) and both keep what they hold."""
        slot = seq.slot
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._memory, source.seq_id, slot.seq_id, 0, reuse)
        slot.take(source, reuse)
        seq.prefilled = seq.cached = reuse

    def _unstarted(self, seq: Job) -> bool:
        """A prefilling request that has read nothing of its own yet (it may still borrow)."""
        return (self._cells is not None and not seq.decoding and not seq.paused
                and seq.prefilled == seq.cached and self._may_share(seq))

    def _borrow_prefilled(self, running: list[Job]) -> None:
        """Requests admitted together with the same opening: a later one waits (`_shares_ahead`)
        while an earlier one reads it, then takes those cells here, at the start of a step (what
        this step's batch adds is not in the cache yet), so the opening is read once. (Only the
        running ones' cells can have grown since its admission compared every slot's; theirs
        begin with their prompts.)"""
        for seq in running:
            if not self._unstarted(seq):
                continue
            reuse, source = max(((self._reusable(seq, o.slot, min(seq.shares(o), len(o.slot.tokens))), o.slot)
                                 for o in running if o is not seq),
                                key=lambda r: r[0], default=(0, None))
            if reuse > seq.prefilled:
                self._borrow(seq, source, reuse)

    def _shares_ahead(self, reading: list[Job], seq: Job) -> bool:
        """Whether a request ahead of it in `reading` (those still reading their prompts when the
        step began) will hold more of its prompt than it has: then it waits a step rather than
        read the same tokens again."""
        if not self._unstarted(seq):
            return False
        return any(self._reusable(seq, None, seq.shares(other)) > seq.prefilled
                   for other in reading[:reading.index(seq)])

    def _sources(self, slot: Slot) -> list[Slot]:
        """The slots whose cached prefix the chosen one may start from: itself, and in the unified
        cache any other slot, free or running."""
        return [slot] if self._cells is None else [slot, *(s for s in self._slots if s is not slot and s.tokens)]

    def _reusable(self, seq: Job, slot: Slot | None, shared: int) -> int:
        """How much of the prompt a sequence may take from `slot`, which holds its first `shared`
        tokens (None: a slot still reading them): up to a piece boundary only, and always leaving
        the last prompt token to decode (its logits give the first sampled token)."""
        reuse = piece_boundary(min(shared, len(seq.request.prompt_tokens) - 1), self._chunk, seq.turn_ends)
        for segment in _segments(seq):
            if segment.start < reuse < segment.start + segment.length:
                reuse = segment.start  # an image is decoded whole or not at all
        if reuse and self._n_swa and slot is not None:
            # A window-sized SWA cache (--no-swa-full) may have overwritten the cells the window
            # before `reuse` needs; then the prompt is read afresh (as llama-server does).
            pos_min = (slot.stored_pos_min if slot.stored is not None
                       else llama_cpp.llama_memory_seq_pos_min(self._memory, slot.seq_id))
            if pos_min > max(0, reuse - self._n_swa):
                reuse = 0
        return reuse

    def _build_sampler(self, request: GenerationRequest) -> SamplerChain:
        chain = build_chain(request.sampling, self._model, self._n_vocab, self.context_length)
        if chain.history_stages:
            # The repetition windows cover the prompt too, as llama-server does.
            chain.accept_history([t for t in request.prompt_tokens if t >= 0])  # not image placeholders
        return chain

    def release(self, seq: Job, outcome: Outcome) -> None:
        slot = seq.slot
        if slot is not None:
            if outcome == "failed":  # its KV may be half written: forget it
                llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
                slot.clear()
            slot.last_used = next(self._clock)
            self._free.append(slot)
            seq.slot = None
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None
        for other in seq.common:  # (both sides hold the pair: a long job must not keep ended ones alive)
            other.common.pop(seq, None)
        seq.common.clear()
        if self._drafter is not None:
            self._drafter.forget(seq)

    def step(self, running: list[Job]) -> None:
        prefill = 0  # prompt tokens in this step; decode tokens come on top (one per sequence, plus drafts)
        # What each sequence puts in the batch: (job, tokens, first position, which of them want logits).
        plan: list[tuple[Job, Sequence[int], int, Callable[[int], bool]]] = []
        decoded: list[tuple[Job, int, list[int]]] = []  # (job, its tokens in the batch, the drafts among them)
        # (job, first prompt position, tokens, sample after its last, logits for all of them)
        read: list[tuple[Job, int, int, bool, bool]] = []
        self._borrow_prefilled(running)
        # Images first: each is its own decode call, which would wipe the logits of the batch.
        for seq in [s for s in running if not s.decoding and s.request.media is not None]:
            if not self._room_for(running, seq, self._image_cells(seq)):
                continue  # it waits for cells
            try:
                self._decode_images(seq)
            except EngineError as exc:  # this request's image only: the others go on
                log.error("decoding an image failed")
                self.fail([seq], running, exc)
        drafts = self._drafts(running)
        self._room_to_decode(running, drafts)
        for seq in running:
            if seq.decoding:
                guesses = drafts.get(seq, [])
                tokens = (seq.pending_token, *guesses)
                plan.append((seq, tokens, len(seq.slot.tokens), _every_row))
                seq.slot.extend(tokens)
                decoded.append((seq, len(tokens), guesses))
        reading = [seq for seq in running if not seq.decoding]
        for seq in reading:
            prompt = seq.feed()
            start = seq.prefilled
            end = min(len(prompt), (start // self._chunk + 1) * self._chunk)
            end = min([end, *(s.start for s in _segments(seq) if s.start > start)])  # text up to the next image
            end = next((t for t in seq.turn_ends if start < t < end), end)  # and to the next turn end
            if prefill + (end - start) > self._prefill_budget or self._shares_ahead(reading, seq):
                continue  # this step is full (the chunk goes whole into a later one), or it borrows later
            # A paused request starts again only once all it must re-read fits, with a token to
            # spare for each running one: else it would be paused again at the next step.
            room = min(self._cells, len(prompt) - start + len(running)) if seq.paused else end - start
            if not self._room_for(running, seq, room):
                continue  # it waits for cells
            prefill += end - start
            resumed = bool(seq.resume)  # its first token was sampled before the pause: no logits here
            all_logits = bool(seq.request.prompt_logprobs) and not resumed
            last = len(prompt) - 1 - start
            plan.append((seq, prompt[start:end], start,
                         _every_row if all_logits else (lambda i, last=last, r=resumed: i == last and not r)))
            seq.slot.extend(prompt[start:end])
            seq.prefilled = end
            read.append((seq, start, end - start, seq.decoding and not resumed, all_logits))
            if seq.decoding:
                seq.paused = False
        # Rows in sequence order for separate KV streams (--no-kv-unified): they decode in one pass
        # only the sequences whose ids follow each other in the batch; out of order, a step would be
        # many passes. The unified cache keeps admission order: a row's place in the batch changes
        # its bits (the CPU's matrix kernels take rows in groups), so a request's rows must not
        # depend on which slots earlier requests left free, or a seeded request is not reproducible.
        if self._cells is None:
            plan.sort(key=lambda p: p[0].slot.seq_id)
        first_row: dict[Job, int] = {}
        n = 0
        for seq, tokens, position, wants_logits in plan:
            first_row[seq] = n
            for i, token in enumerate(tokens):
                batch_add(self._batch, n, token, position + i, seq.slot.seq_id, wants_logits(i))
                n += 1
        # (job, its batch rows to sample in turn, the drafts those rows check)
        sample_at = [(seq, list(range(first_row[seq], first_row[seq] + count)), guesses)
                     for seq, count, guesses in decoded]
        sample_at += [(seq, [first_row[seq] + count - 1], []) for seq, _, count, sample, _ in read if sample]
        prompt_rows = [(seq, start, first_row[seq]) for seq, start, _, _, every in read if every]
        if n == 0:
            return
        self._batch.n_tokens = n
        rc = llama_cpp.llama_decode(self._ctx.ctx, self._batch)
        if rc != 0:
            raise EngineError(f"llama_decode failed ({rc})")
        for seq, start, row in prompt_rows:
            self.record_prompt_logprobs(seq, start, seq.prefilled, lambda i, row=row: self._logprobs(row + i))
        for seq, rows, guesses in sample_at:
            if seq.cancelled.is_set():
                continue
            if seq.probe is not None:
                self._answer_probe(seq, rows[0], running)
                continue
            for checked, row in enumerate(rows):
                # Read the model's distribution before sampling: the sampler may edit the logits.
                logprobs = self._logprobs(row) if seq.request.logprobs is not None else None
                if seq.produced < seq.request.min_tokens:  # (llama.cpp's own buffer: this row only)
                    logits_row(self._ctx, row, self._n_vocab)[self._eog_ids] = -np.inf
                token = seq.sampler.sample(self._ctx, row)
                event = self.advance(seq, token, logprobs)
                if checked == len(guesses) or token != guesses[checked] or event.finish_reason is not None:
                    break
                self.post(seq, event)
            if guesses:
                # The KV keeps the pending token and the drafts the model agreed with.
                self.drafted(len(guesses), checked)
                # Where drafts keep missing (free sampling, text unlike its context), checking them
                # only costs: back off exponentially, and start over at the first hit.
                seq.draft_misses = seq.draft_misses + 1 if checked == 0 else 0
                seq.draft_pause = min(MAX_DRAFT_PAUSE, 2 ** seq.draft_misses - 1)
                slot = seq.slot
                keep = len(slot.tokens) - len(guesses) + checked
                llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1)
                slot.truncate(keep, exclusive=not any(s.holds(slot.writing) for s in self._slots if s is not slot))
            if event.finish_reason is not None:
                self.complete(seq, running, event)
            else:
                self.post(seq, event)

    def _image_cells(self, seq: Job) -> int:
        return sum(s.length for s in _segments(seq) if s.start == seq.prefilled)

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
            room = min(self._draft_max, seq.request.max_tokens - seq.produced - 1, self.context_length - used - 1)
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
            seq.slot.extend(seq.request.prompt_tokens[segment.start:end])
            seq.prefilled = end

    def _answer_probe(self, seq: Job, row: int, running: list[Job]) -> None:
        top_n = seq.probe[1]
        logits = logits_row(self._ctx, row, self._n_vocab)
        if seq.sampler is None:
            probs = [(t, float(np.exp(lp))) for t, lp in top_entries(log_softmax(logits), top_n)]
        else:
            probs = filtered_distribution(seq.sampler, logits, self._n_vocab, top_n)
        self.complete(seq, running, probs)

    def _logprobs(self, row: int) -> np.ndarray:
        return log_softmax(logits_row(self._ctx, row, self._n_vocab).astype(np.float64))


def _every_row(_: int) -> bool:
    return True


def _segments(seq: Job) -> tuple:
    return seq.request.media.segments if seq.request.media is not None else ()
