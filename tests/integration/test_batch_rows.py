"""With separate KV streams (--no-kv-unified) llama.cpp decodes in one compute pass only the
sequences whose ids follow each other in the batch, so a step's rows go in sequence-id order
whatever order the requests were admitted in (out of order, a step took 1.4x as long)."""

from __future__ import annotations

import asyncio

import llama_cpp

from homeport.engines.base import GenerationRequest, SamplingParams
from homeport.engines.llama_cpp.engine import LlamaCppConfig, LlamaCppEngine
from support.engine_gate import admit_together


async def _generate(eng: LlamaCppEngine, tokens: list[int]) -> str:
    request = GenerationRequest(prompt_tokens=tokens, max_tokens=6, sampling=SamplingParams(temperature=0.0))
    return "".join([event.text async for event in eng.generate(request)])


async def test_a_step_of_separate_streams_puts_its_rows_in_sequence_order(monkeypatch):
    from homeport.registry.library import packaged_models

    eng = LlamaCppEngine.load(LlamaCppConfig(path=packaged_models()[0].path, model_id="m", ctx_size=256,
                                             parallel=3, kv_unified=False))
    await eng.start()
    try:
        await _generate(eng, eng.tokenize("The first slot is now the most recently used one."))
        prompts = [eng.tokenize(f"Three {thing} on a quay:") for thing in ("boats", "gulls", "crates")]
        rows: list[list[int]] = []
        slots: dict[int, int] = {}  # prompt → its slot
        decode = llama_cpp.llama_decode

        def recording(ctx, batch):
            if not rows:
                slots.update({prompts.index(j.request.prompt_tokens): j.slot.seq_id for j in eng._scheduler._live})
            rows.append([batch.seq_id[i][0] for i in range(batch.n_tokens)])
            return decode(ctx, batch)

        monkeypatch.setattr(llama_cpp, "llama_decode", recording)
        tasks = [asyncio.ensure_future(_generate(eng, p)) for p in prompts]
        await admit_together(eng, tasks)
        together = await asyncio.gather(*tasks)
        monkeypatch.setattr(llama_cpp, "llama_decode", decode)
        alone = [await _generate(eng, p) for p in prompts]
    finally:
        await eng.close()
    # Admitted in turn, they took slots 1, 2 and then 0 (least recently used first).
    assert slots == {0: 1, 1: 2, 2: 0}
    assert rows[0] == sorted(rows[0]) and set(rows[0]) == {0, 1, 2}
    assert all(r == sorted(r) for r in rows), rows
    assert sum(r == [0, 1, 2] for r in rows) >= 4  # the decode steps, all three in one pass
    assert together == alone  # separate streams: the same output as alone
