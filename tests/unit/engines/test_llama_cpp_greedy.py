"""The greedy fast path picks exactly the token llama.cpp's logit-bias + greedy chain picks."""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import pytest
from llama_cpp import _internals

from homeport.engines.base import SamplingParams
from homeport.engines.llama_cpp.sampling import GreedyPick, build_chain

N_VOCAB = 4096


def native_pick(logits: np.ndarray, bias: dict[int, float]) -> int:
    chain = _internals.LlamaSampler()
    if bias:
        chain.add_logit_bias(N_VOCAB, bias)
    chain.add_greedy()
    candidates = _internals.LlamaTokenDataArray(n_vocab=N_VOCAB)
    candidates.copy_logits(logits)
    candidates.candidates.selected = -1
    llama_cpp.llama_sampler_apply(chain.sampler, ctypes.byref(candidates.candidates))
    token = int(candidates.candidates_data.id[candidates.candidates.selected])
    chain.close()
    return token


@pytest.mark.parametrize("seed", range(20))
def test_same_token_as_the_native_chain(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=N_VOCAB).astype(np.float32)
    if seed % 3 == 0:  # ties: the first arg-max wins in both
        logits[[7, 300, 4000]] = logits.max() + 1
    top = int(logits.argmax())
    bias = {top: -100.0, int(rng.integers(N_VOCAB)): float(rng.normal() * 5), 5: float("-inf"),
            N_VOCAB + 10: 50.0}  # an id past the vocabulary: ignored by both
    if seed % 2:
        bias[int(rng.integers(N_VOCAB))] = 3.0 + float(logits.max() - logits.min())  # a boost that wins
    before = logits.copy()
    assert GreedyPick(bias, N_VOCAB)(logits) == native_pick(before, bias)
    assert np.array_equal(logits, before)  # the row is restored
    assert GreedyPick({}, N_VOCAB)(logits) == native_pick(before, {})


def test_only_stateless_greedy_chains_take_the_fast_path():
    greedy = build_chain(SamplingParams(temperature=0, logit_bias={1: -100.0}), None, N_VOCAB, 128)
    assert greedy.greedy is not None
    greedy.close()
    penalised = build_chain(SamplingParams(temperature=0, repetition_penalty=1.2), None, N_VOCAB, 128)
    assert penalised.greedy is None
    penalised.close()
    sampled = build_chain(SamplingParams(temperature=0.7), None, N_VOCAB, 128)
    assert sampled.greedy is None
    sampled.close()
