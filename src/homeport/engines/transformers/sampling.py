"""Sampling parameters applied to one row of torch logits, with llama.cpp's semantics so a request
samples alike on either engine: logit bias, then the stages in `SamplingParams.order`, then a
draw from a per-request seeded generator. Stages listed by `unsupported_sampling` are skipped.

All work is on CPU float32 vectors of the tokenizer's vocabulary size: one token at a time.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import torch

from homeport.engines.base import SamplingParams, TopLogprobs

NEG_INF = float("-inf")


class Sampler:
    """One request's sampler. `history` starts as the prompt (the penalties see it too, as
    llama-server's do) and grows with each accepted token."""

    def __init__(
        self, params: SamplingParams, vocab_size: int, context_length: int, history: Sequence[int] = ()
    ) -> None:
        self.params = params
        self.vocab_size = vocab_size
        # mirostat is not applied (see unsupported_sampling), so it does not stop greedy decoding.
        self.greedy = params.temperature <= 0.0 or params.top_k == 1
        self._window = params.repetition_penalty_range if params.repetition_penalty_range > 0 else context_length
        self._penalized = (
            params.repetition_penalty != 1.0 or params.frequency_penalty != 0.0 or params.presence_penalty != 0.0
        )
        self._history = list(history) if self._penalized else []
        bias = {t: b for t, b in params.logit_bias.items() if 0 <= t < vocab_size}
        self._bias_ids = torch.tensor(list(bias), dtype=torch.long)
        self._bias_values = torch.tensor(list(bias.values()), dtype=torch.float32)
        seed = params.seed if params.seed is not None else secrets.randbits(32)
        self._generator = torch.Generator().manual_seed(seed & 0xFFFFFFFF)

    def sample(self, logits: torch.Tensor) -> int:
        """Picks the next token from the model's raw logits and remembers it."""
        filtered = self.filter(logits)
        if self.greedy or not torch.isfinite(filtered).any():
            token = int(torch.argmax(filtered))
        else:
            probs = torch.softmax(filtered, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=self._generator))
        if self._penalized:
            self._history.append(token)
        return token

    def distribution(self, logits: torch.Tensor, top_n: int) -> list[tuple[int, float]]:
        """The probabilities the samplers leave (renormalised), most likely first."""
        filtered = self.filter(logits)
        finite = int(torch.isfinite(filtered).sum())
        if finite == 0:
            return []
        probs = torch.softmax(filtered.double(), dim=-1)
        values, ids = torch.topk(probs, min(top_n, finite))
        return [(int(t), float(p)) for t, p in zip(ids, values)]

    def filter(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits after bias and every stage, except the final pick (a new tensor)."""
        params = self.params
        logits = logits[: self.vocab_size].float().clone()
        if self._bias_ids.numel():
            logits.index_add_(0, self._bias_ids, self._bias_values)
        for stage in params.order:
            if stage == "penalties" and self._penalized:
                logits = self._penalties(logits)
            elif self.greedy:
                continue  # the filters below cannot change the arg-max
            elif stage == "temperature":
                logits = logits / params.temperature
            elif stage == "top_k" and 0 < params.top_k < logits.numel():
                kth = torch.topk(logits, params.top_k).values[-1]
                logits = logits.masked_fill(logits < kth, NEG_INF)
            elif stage == "top_p" and params.top_p < 1.0:
                logits = _top_p(logits, params.top_p)
            elif stage == "typical_p" and params.typical_p < 1.0:
                logits = _typical(logits, params.typical_p)
            elif stage == "min_p" and params.min_p > 0.0:
                probs = torch.softmax(logits, dim=-1)
                logits = logits.masked_fill(probs < params.min_p * probs.max(), NEG_INF)
        return logits

    def _penalties(self, logits: torch.Tensor) -> torch.Tensor:
        # llama.cpp's rule: a seen token's logit is divided by the repetition penalty when
        # positive and multiplied when not, then lowered by count × frequency + presence.
        params = self.params
        recent = [t for t in self._history[-self._window:] if 0 <= t < self.vocab_size]
        if not recent:
            return logits
        counts = torch.bincount(torch.tensor(recent, dtype=torch.long), minlength=self.vocab_size).float()
        seen = counts > 0
        if params.repetition_penalty != 1.0:
            scaled = torch.where(logits <= 0, logits * params.repetition_penalty, logits / params.repetition_penalty)
            logits = torch.where(seen, scaled, logits)
        return logits - counts * params.frequency_penalty - seen.float() * params.presence_penalty


def _top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keeps the most likely tokens until their probabilities reach `top_p` (at least one)."""
    probs, order = torch.sort(torch.softmax(logits, dim=-1), descending=True)
    before = torch.cumsum(probs, dim=-1) - probs
    drop = before >= top_p
    drop[0] = False
    return logits.index_fill(0, order[drop], NEG_INF)


def _typical(logits: torch.Tensor, typical_p: float) -> torch.Tensor:
    """Locally typical sampling: keeps the tokens whose surprise is closest to the entropy until
    their probabilities exceed `typical_p` (at least one)."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    probs = logp.exp()
    entropy = -torch.nansum(probs * logp)
    shifted = (-logp - entropy).abs()
    order = torch.argsort(shifted, stable=True)
    ordered = probs[order]
    before = torch.cumsum(ordered, dim=-1) - ordered
    drop = before > typical_p
    drop[0] = False
    return logits.index_fill(0, order[drop], NEG_INF)


def log_softmax(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The model's own distribution (float64), for logprobs: read before any sampler edits it."""
    return torch.log_softmax(logits[:vocab_size].double(), dim=-1)


def top_entries(logprobs: torch.Tensor, k: int) -> TopLogprobs:
    if k <= 0:
        return ()
    values, ids = torch.topk(logprobs, min(k, logprobs.numel()))
    return tuple((int(t), float(v)) for t, v in zip(ids, values))
