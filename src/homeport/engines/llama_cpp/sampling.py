"""Sampling parameters → llama.cpp's native sampler chain, plus logprob arithmetic on raw logits.

The chain runs in C for every token; Python only builds it once per request. A greedy request
with no stage that keeps state (grammar, penalties, DRY) skips it: llama.cpp's sampler copies the
whole vocabulary into a candidate array before its arg-max, ~0.5 ms a token for Gemma's 262k
entries, where one numpy arg-max over the logits row picks the same token (`GreedyPick`).
Logprobs (only when asked for) are one numpy log-softmax over the vocabulary per token.
"""

from __future__ import annotations

import ctypes
import random
from collections.abc import Sequence
from dataclasses import dataclass

import llama_cpp
import numpy as np
from llama_cpp import _internals
from llama_cpp.llama_grammar import JSON_GBNF

from homeport.engines.base import Grammar, SamplingParams, TopLogprobs
from homeport.engines.llama_cpp.json_grammar import json_schema_to_gbnf


def to_gbnf(grammar: Grammar) -> str:
    """Raises ValueError when a JSON schema cannot be turned into a grammar."""
    if grammar.kind == "gbnf":
        return grammar.source
    if grammar.kind == "json":
        return JSON_GBNF
    try:
        return json_schema_to_gbnf(grammar.source, or_text=grammar.or_text)
    except Exception as exc:  # the converter raises bare exceptions on unsupported schemas
        raise ValueError(f"the JSON schema cannot be enforced: {exc}") from None


def grammar_sampler(grammar: Grammar, vocab: llama_cpp.llama_vocab_p) -> ctypes.c_void_p:
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, to_gbnf(grammar).encode(), b"root")
    if not sampler:
        raise ValueError("the grammar could not be parsed (GBNF, with a `root` rule)")
    return sampler


class GreedyPick:
    """The token llama.cpp's logit-bias + greedy chain would pick, from the logits row: the first
    arg-max after adding the biases (in float32, as the C stage does). The row is llama.cpp's own
    buffer: biased in place for the arg-max, then restored."""

    def __init__(self, logit_bias: dict[int, float], n_vocab: int) -> None:
        kept = {t: b for t, b in logit_bias.items() if 0 <= t < n_vocab}  # the C stage skips the others
        self._ids = np.fromiter(kept, dtype=np.intp, count=len(kept)) if kept else None
        self._bias = np.fromiter(kept.values(), dtype=np.float32, count=len(kept)) if kept else None

    def __call__(self, logits: np.ndarray) -> int:
        if self._ids is None:
            return int(logits.argmax())
        saved = logits[self._ids]
        logits[self._ids] = saved + self._bias
        token = int(logits.argmax())
        logits[self._ids] = saved
        return token


@dataclass
class SamplerChain:
    """A request's chain, and the stages that must see the prompt (penalties, DRY).

    A grammar is kept beside the chain, not in it, and checked as llama.cpp's own server does:
    sample freely, then ask the grammar about that one token; only when it refuses is the whole
    vocabulary filtered by the grammar and the token drawn again. Filtering ~50k-260k candidates
    costs several milliseconds a token, more than a small model's decode; one check costs little.
    """

    chain: _internals.LlamaSampler
    history_stages: list[int]  # indexes in the chain
    grammar: ctypes.c_void_p | None = None
    n_vocab: int = 0
    _candidates: _internals.LlamaTokenDataArray | None = None
    _one: llama_cpp.llama_token_data_array | None = None
    greedy: GreedyPick | None = None  # the chain is only logit bias + greedy: pick without it

    def accept_history(self, tokens: Sequence[int]) -> None:
        # Only the repetition stages learn the prompt: the grammar must not consume it.
        for index in self.history_stages:
            stage = llama_cpp.llama_sampler_chain_get(self.chain.sampler, index)
            for token in tokens:
                llama_cpp.llama_sampler_accept(stage, token)

    def sample(self, ctx: _internals.LlamaContext, row: int) -> int:
        """The next token from the logits at batch row `row`, accepted by every stage."""
        if self.grammar is None:
            if self.greedy is not None:
                return self.greedy(logits_row(ctx, row, self.n_vocab))
            return llama_cpp.llama_sampler_sample(self.chain.sampler, ctx.ctx, row)
        logits = logits_row(ctx, row, self.n_vocab)
        token = self._pick(logits, with_grammar=False)
        if not self._grammar_allows(token):
            token = self._pick(logits, with_grammar=True)
        llama_cpp.llama_sampler_accept(self.grammar, token)
        llama_cpp.llama_sampler_accept(self.chain.sampler, token)
        return token

    def _pick(self, logits: np.ndarray, *, with_grammar: bool) -> int:
        if self._candidates is None:
            self._candidates = _internals.LlamaTokenDataArray(n_vocab=self.n_vocab)
        candidates = self._candidates
        candidates.copy_logits(logits)
        candidates.candidates.selected = -1
        array = ctypes.byref(candidates.candidates)
        if with_grammar:
            llama_cpp.llama_sampler_apply(self.grammar, array)
        llama_cpp.llama_sampler_apply(self.chain.sampler, array)
        return int(candidates.candidates_data.id[candidates.candidates.selected])

    def _grammar_allows(self, token: int) -> bool:
        if self._one is None:
            self._one = llama_cpp.llama_token_data_array(
                data=(llama_cpp.llama_token_data * 1)(), size=1, selected=-1, sorted=False
            )
        one = self._one
        one.data[0].id, one.data[0].logit, one.data[0].p = token, 1.0, 0.0
        one.size, one.selected, one.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(one))
        return bool(np.isfinite(one.data[0].logit))

    def close(self) -> None:
        if self.grammar is not None:
            llama_cpp.llama_sampler_free(self.grammar)
            self.grammar = None
        self.chain.close()


def _n(chain: _internals.LlamaSampler) -> int:
    return llama_cpp.llama_sampler_chain_n(chain.sampler)


def build_chain(
    params: SamplingParams, model: _internals.LlamaModel, n_vocab: int, context_length: int, *, select: bool = True
) -> SamplerChain:
    """The chain for `params`; with `select=False`, only the filtering stages (no final pick),
    to read the distribution the samplers leave. Penalty windows of 0 or -1 mean the whole
    context (llama.cpp itself would read them as "off")."""

    def window(n: int) -> int:
        return n if n > 0 else context_length

    chain = _internals.LlamaSampler()
    history: list[int] = []
    if params.logit_bias:
        chain.add_logit_bias(n_vocab, params.logit_bias)
    grammar = None
    if params.grammar is not None:
        try:
            grammar = grammar_sampler(params.grammar, model.vocab)
        except ValueError:
            chain.close()
            raise
        if not select:  # a distribution read through the chain: the grammar filters it
            llama_cpp.llama_sampler_chain_add(chain.sampler, grammar)
            grammar = None
    seed = params.seed if params.seed is not None else random.getrandbits(32)
    seed &= 0xFFFFFFFF
    for stage in params.order:
        if stage == "penalties" and (
            params.repetition_penalty != 1.0 or params.frequency_penalty != 0.0 or params.presence_penalty != 0.0
        ):
            history.append(_n(chain))
            chain.add_penalties(
                n_vocab,
                window(params.repetition_penalty_range),
                params.repetition_penalty,
                params.frequency_penalty,
                params.presence_penalty,
            )
        elif stage == "dry" and params.dry_multiplier > 0.0:
            history.append(_n(chain))
            chain.add_dry(
                model,
                params.dry_multiplier,
                params.dry_base,
                params.dry_allowed_length,
                window(params.dry_penalty_last_n),
                list(params.dry_sequence_breakers),
            )
        elif params.greedy:
            continue  # the filters below cannot change the arg-max
        elif stage == "top_n_sigma" and params.top_n_sigma > 0.0:
            chain.add_top_n_sigma(params.top_n_sigma)
        elif stage == "temperature":
            if params.dynatemp_range > 0.0:
                chain.add_temp_ext(params.temperature, params.dynatemp_range, params.dynatemp_exponent)
            else:
                chain.add_temp(params.temperature)
        elif stage == "top_k" and params.top_k > 0:
            chain.add_top_k(params.top_k)
        elif stage == "top_p" and params.top_p < 1.0:
            chain.add_top_p(params.top_p, 1)
        elif stage == "typical_p" and params.typical_p < 1.0:
            chain.add_typical(params.typical_p, 1)
        elif stage == "min_p" and params.min_p > 0.0:
            chain.add_min_p(params.min_p, 1)
        elif stage == "xtc" and params.xtc_probability > 0.0:
            chain.add_xtc(params.xtc_probability, params.xtc_threshold, 1, seed)
    fast = None
    if select:
        if params.greedy:
            chain.add_greedy()
            if params.grammar is None and not history:
                fast = GreedyPick(params.logit_bias, n_vocab)
        elif params.mirostat_mode == 1:
            chain.add_mirostat(n_vocab, seed, params.mirostat_tau, params.mirostat_eta, 100)
        elif params.mirostat_mode == 2:
            chain.add_mirostat_v2(seed, params.mirostat_tau, params.mirostat_eta)
        else:
            chain.add_dist(seed)
    return SamplerChain(chain=chain, history_stages=history, grammar=grammar, n_vocab=n_vocab, greedy=fast)


def logits_row(ctx: _internals.LlamaContext, index: int, n_vocab: int) -> np.ndarray:
    pointer = llama_cpp.llama_get_logits_ith(ctx.ctx, index)
    return np.ctypeslib.as_array(pointer, shape=(n_vocab,))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def top_entries(logprobs: np.ndarray, k: int) -> TopLogprobs:
    if k <= 0:
        return ()
    k = min(k, logprobs.shape[0])
    best = np.argpartition(-logprobs, k - 1)[:k]
    best = best[np.argsort(-logprobs[best], kind="stable")]
    return tuple((int(t), float(logprobs[t])) for t in best)


def filtered_distribution(
    chain: SamplerChain, logits: np.ndarray, n_vocab: int, top_n: int
) -> list[tuple[int, float]]:
    """Probabilities after the chain's filtering stages (temperature, top-k, …), renormalised."""
    candidates = _internals.LlamaTokenDataArray(n_vocab=n_vocab)
    candidates.copy_logits(logits)
    llama_cpp.llama_sampler_apply(chain.chain.sampler, ctypes.byref(candidates.candidates))
    size = candidates.candidates.size
    data = candidates.candidates_data[:size]
    kept = np.asarray(data.logit, dtype=np.float64)
    finite = np.isfinite(kept)
    ids, kept = np.asarray(data.id)[finite], kept[finite]
    if kept.size == 0:
        return []
    probs = np.exp(kept - kept.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")[:top_n]
    return [(int(ids[i]), float(probs[i])) for i in order]
