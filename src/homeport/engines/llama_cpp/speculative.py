"""Speculative decoding: cheap guesses of a sequence's next tokens, checked by the model in one step.

A drafter proposes up to `limit` tokens for each decoding sequence. The scheduler decodes the
sequence's pending token and its drafts in the same batch, with logits at each position, then
samples the model's own token at each position in turn with the request's sampler chain, keeping
drafts only while they equal what was sampled. Every emitted token is therefore drawn from the
model's own distribution by the same chain as without speculation; the drafts only decide how many
of those draws one decode call yields.

Two drafters: `DraftModel` (a smaller GGUF with the same vocabulary, `model_draft`) and
`NgramDrafter` (prompt lookup: what followed the last occurrence of the sequence's final tokens;
no second model, pays off when the reply repeats its input, as in edits, extraction and quotes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import llama_cpp
import numpy as np
from llama_cpp import _internals

from homeport.engines.llama_cpp.sampling import logits_row
from homeport.errors import EngineError, StartupError


@dataclass(frozen=True)
class DraftRequest:
    key: object  # the generation (drafters keep per-generation state; a slot is reused by others)
    seq_id: int
    history: Sequence[int]  # the tokens whose KV the model holds for the sequence (read, not kept)
    pending: int  # the sampled token that comes next, not yet decoded
    limit: int  # at most this many drafts


class Drafter(Protocol):
    def propose(self, requests: list[DraftRequest]) -> list[list[int]]: ...  # drafts per request, in order

    def forget(self, key: object) -> None: ...  # the generation ended

    def clear(self) -> None: ...  # every cached state is stale (new weights)

    def close(self) -> None: ...


@dataclass(eq=False)
class _NgramIndex:
    key: object
    tokens: list[int] = field(default_factory=list)  # history + pending as indexed so far
    last_seen: dict[tuple[int, ...], int] = field(default_factory=dict)  # n-gram → index of what followed it


class NgramDrafter:
    """Prompt lookup decoding: finds the latest earlier occurrence of the sequence's last n tokens
    (longest n first) and proposes the tokens that followed it. Each generation keeps an index of
    its n-grams, extended as it grows, so a step costs O(new tokens), not O(length)."""

    def __init__(self, longest: int = 4) -> None:
        self._sizes = tuple(range(longest, 1, -1)) or (longest,)  # longest first, down to 2
        self._indexes: dict[int, _NgramIndex] = {}  # by seq_id

    def propose(self, requests: list[DraftRequest]) -> list[list[int]]:
        return [self._propose(request) for request in requests]

    def _propose(self, request: DraftRequest) -> list[int]:
        index = self._indexes.get(request.seq_id)
        # Within a generation the indexed tokens stay a prefix of the history (rejected drafts never
        # enter it); a new generation on the slot starts a new index.
        if index is None or index.key is not request.key or not _extends(index.tokens, request.history):
            index = self._indexes[request.seq_id] = _NgramIndex(request.key)
        tokens = index.tokens
        indexed = len(tokens)
        tokens.extend(request.history[indexed:])
        tokens.append(request.pending)
        # Index each n-gram whose follower is now known; the final n-gram is the one looked up.
        for end in range(max(1, indexed), len(tokens)):
            for n in self._sizes:
                if end >= n:
                    index.last_seen[tuple(tokens[end - n:end])] = end
        for n in self._sizes:
            found = index.last_seen.get(tuple(tokens[-n:])) if len(tokens) > n else None
            if found is not None:
                return tokens[found:found + request.limit]
        return []

    def forget(self, key: object) -> None:
        for seq_id, index in list(self._indexes.items()):
            if index.key is key:
                del self._indexes[seq_id]

    def clear(self) -> None:
        self._indexes.clear()

    def close(self) -> None:
        self._indexes.clear()


@dataclass(frozen=True)
class DraftModelConfig:
    path: Path
    n_gpu_layers: int = 0
    p_min: float = 0.0  # stop drafting when the draft model's top token is less likely than this


@dataclass(eq=False)
class _DraftSeq:
    key: object = None
    tokens: list[int] = field(default_factory=list)  # what the draft context's KV holds for the sequence
    checked: int = 0  # a prefix of this length is known to equal the generation's history


class DraftModel:
    """A smaller model with the same vocabulary, run greedily on its own llama.cpp context (one
    sequence per slot, like the main one). Its KV follows each generation lazily: before drafting,
    whatever the main model accepted since is decoded, in chunks of at most `n_batch` tokens per
    step so catching up on a long prompt never stalls the other sequences for long."""

    def __init__(self, model: _internals.LlamaModel, ctx: _internals.LlamaContext, config: DraftModelConfig,
                 n_batch: int, n_seq: int) -> None:
        self._model = model
        self._ctx = ctx
        self._memory = ctx.memory
        self._config = config
        self._n_batch = n_batch
        self._vocab = model.vocab
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._batch = llama_cpp.llama_batch_init(n_batch + n_seq, 0, 1)
        self._seqs = [_DraftSeq() for _ in range(n_seq)]

    @classmethod
    def load(cls, config: DraftModelConfig, target: _internals.LlamaModel, *, n_seq: int, n_ctx_per_seq: int,
             n_batch: int, threads: int, threads_batch: int, kv_unified: bool, verbose: bool) -> DraftModel:
        if not config.path.is_file():
            raise StartupError(f"draft model file not found: {config.path}")
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0x7FFFFFFF if config.n_gpu_layers < 0 else config.n_gpu_layers
        try:
            model = _internals.LlamaModel(path_model=str(config.path), params=params, verbose=verbose)
        except ValueError:
            raise StartupError(f"cannot load draft model {config.path}: not a valid GGUF file") from None
        reason = vocab_mismatch(target.vocab, model.vocab)
        if reason:
            model.close()
            raise StartupError(f"draft model {config.path.name} cannot draft for this model: {reason}")
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.kv_unified = kv_unified
        ctx_params.n_ctx = n_ctx_per_seq * n_seq
        ctx_params.n_seq_max = n_seq
        ctx_params.n_batch = ctx_params.n_ubatch = n_batch + n_seq
        ctx_params.n_threads = threads
        ctx_params.n_threads_batch = threads_batch
        ctx_params.no_perf = True
        try:
            ctx = _internals.LlamaContext(model=model, params=ctx_params, verbose=verbose)
        except ValueError:
            model.close()
            raise StartupError(f"cannot create a llama.cpp context for draft model {config.path.name}") from None
        return cls(model, ctx, config, n_batch, n_seq)

    def propose(self, requests: list[DraftRequest]) -> list[list[int]]:
        drafts: list[list[int]] = [[] for _ in requests]
        # Catch up: decode what the sequence gained since the draft last saw it (the pending token
        # always; a whole prompt the first time), logits at its last token only.
        feeding: list[tuple[int, list[int]]] = []
        budget = self._n_batch
        for i, request in enumerate(requests):
            state = self._sync(request)
            missing = [*request.history[len(state.tokens):], request.pending]
            if len(missing) > budget:
                missing = missing[:max(0, budget)]  # the rest at the next step; no drafts this time
                if missing:
                    self._decode_into(request.seq_id, state, missing, last_logits=False)
                    budget -= len(missing)
                continue
            budget -= len(missing)
            feeding.append((i, missing))
        if not feeding:
            return drafts
        n = 0
        rows: dict[int, int] = {}
        for i, tokens in feeding:
            state = self._seqs[requests[i].seq_id]
            for j, token in enumerate(tokens):
                batch_add(self._batch, n, token, len(state.tokens), requests[i].seq_id, j == len(tokens) - 1)
                state.tokens.append(token)
                n += 1
            rows[i] = n - 1
        self._decode(n)
        # Draft greedily, one token per sequence per decode, until each has its limit or doubts.
        active = dict(rows)
        while active:
            n = 0
            following: dict[int, int] = {}
            for i, row in active.items():
                token, probability = self._best(row)
                if probability < self._config.p_min:
                    continue
                drafts[i].append(token)
                if len(drafts[i]) >= requests[i].limit or llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    continue
                state = self._seqs[requests[i].seq_id]
                batch_add(self._batch, n, token, len(state.tokens), requests[i].seq_id, True)
                state.tokens.append(token)
                following[i] = n
                n += 1
            if n:
                self._decode(n)
            active = following
        return drafts

    def _sync(self, request: DraftRequest) -> _DraftSeq:
        """Drops the draft KV beyond what the sequence's history still shares with it."""
        state = self._seqs[request.seq_id]
        history = request.history
        if state.key is not request.key:
            # A new generation starts the draft from scratch: reusing the last one's KV would
            # change how its prompt is batched, hence the drafts, hence (by a rounding) the
            # verifying batches: the same seeded request must give the same tokens each time.
            state.key, state.checked = request.key, 0
            llama_cpp.llama_memory_seq_rm(self._memory, request.seq_id, -1, -1)
            state.tokens.clear()
        shared = state.checked  # within a generation, what was checked stays true: history only grows
        limit = min(len(state.tokens), len(history))
        while shared < limit and state.tokens[shared] == history[shared]:
            shared += 1
        if shared < len(state.tokens):
            llama_cpp.llama_memory_seq_rm(self._memory, request.seq_id, shared, -1)
            del state.tokens[shared:]
        state.checked = min(shared, len(history))
        return state

    def _decode_into(self, seq_id: int, state: _DraftSeq, tokens: list[int], *, last_logits: bool) -> None:
        for j, token in enumerate(tokens):
            batch_add(self._batch, j, token, len(state.tokens), seq_id, last_logits and j == len(tokens) - 1)
            state.tokens.append(token)
        self._decode(len(tokens))

    def _best(self, row: int) -> tuple[int, float]:
        logits = logits_row(self._ctx, row, self._n_vocab)
        token = int(np.argmax(logits))
        if self._config.p_min <= 0.0:
            return token, 1.0
        probability = 1.0 / float(np.exp(logits.astype(np.float64) - float(logits[token])).sum())
        return token, probability

    def _decode(self, n: int) -> None:
        self._batch.n_tokens = n
        rc = llama_cpp.llama_decode(self._ctx.ctx, self._batch)
        if rc != 0:
            raise EngineError(f"llama_decode failed on the draft model ({rc})")

    def forget(self, key: object) -> None:
        pass  # the next generation on the slot clears it (see _sync)

    def clear(self) -> None:
        for state in self._seqs:
            state.key, state.tokens, state.checked = None, [], 0
        llama_cpp.llama_memory_clear(self._memory, True)

    def close(self) -> None:
        llama_cpp.llama_batch_free(self._batch)
        self._ctx.close()
        self._model.close()


def _extends(tokens: list[int], history: Sequence[int]) -> bool:
    return len(tokens) <= len(history) and (not tokens or tokens[-1] == history[len(tokens) - 1])


def vocab_mismatch(target: llama_cpp.llama_vocab_p, draft: llama_cpp.llama_vocab_p) -> str | None:
    """Why the draft's tokens cannot stand for the target's (llama.cpp's own compatibility rules),
    or None."""
    if llama_cpp.llama_vocab_type(target) != llama_cpp.llama_vocab_type(draft):
        return "its tokenizer type differs"
    for name in ("bos", "eos"):
        adds = getattr(llama_cpp, f"llama_vocab_get_add_{name}")
        ids = getattr(llama_cpp, f"llama_vocab_{name}")
        if adds(target) != adds(draft) or (adds(target) and ids(target) != ids(draft)):
            return f"its {name.upper()} token differs"
    n_target, n_draft = llama_cpp.llama_vocab_n_tokens(target), llama_cpp.llama_vocab_n_tokens(draft)
    if abs(n_target - n_draft) > 128:
        return f"its vocabulary has {n_draft} tokens, this model's {n_target}"
    for token in range(5, min(n_target, n_draft)):
        if llama_cpp.llama_vocab_get_text(target, token) != llama_cpp.llama_vocab_get_text(draft, token):
            return f"token {token} differs"
    return None


def batch_add(batch: llama_cpp.llama_batch, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
    """Row `i` of a batch: `token` at `pos` of sequence `seq_id`, with its logits kept or not."""
    batch.token[i] = token
    batch.pos[i] = pos
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq_id
    batch.logits[i] = logits
