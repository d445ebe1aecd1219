"""Where a step's rows go in the batch. With separate KV streams (--no-kv-unified) llama.cpp
decodes in one compute pass only the sequences whose ids follow each other in the batch, so rows go
in sequence-id order whatever order the requests were admitted in (out of order, a step took 1.4x
as long). In the unified cache they go in admission order: a row's place changes its bits, and
which slots a request gets depends on earlier requests."""

from __future__ import annotations

import asyncio

import llama_cpp

from homeport.engines.base import GenerationRequest, SamplingParams
from homeport.engines.llama_cpp.engine import LlamaCppConfig, LlamaCppEngine
from support.engine_gate import admit_together


async def _generate(eng: LlamaCppEngine, tokens: list[int]) -> str:
    request = GenerationRequest(prompt_tokens=tokens, max_tokens=6, sampling=SamplingParams(temperature=0.0))
    return "".join([event.text async for event in eng.generate(request)])


async def _sample(eng: LlamaCppEngine, tokens: list[int], seed: int) -> list[tuple[int, float]]:
    request = GenerationRequest(prompt_tokens=tokens, max_tokens=12, logprobs=1,
                                sampling=SamplingParams(temperature=1.0, seed=seed))
    return [(event.token_id, event.logprob) async for event in eng.generate(request)]


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


async def test_seeded_choices_are_reproducible_whichever_slots_earlier_requests_left_free(monkeypatch):
    """Three choices of one seeded request (seeds 7, 8, 9), run twice with another request between:
    the second time they take slots 1, 2, 0, so in sequence-id order their rows would move (Gemma's
    Q4_K kernels give a row other bits by its place: tokens and logprobs then differed)."""
    from homeport.registry.library import packaged_models

    eng = LlamaCppEngine.load(LlamaCppConfig(path=packaged_models()[1].path, model_id="g", ctx_size=512, parallel=3))
    await eng.start()
    prompt = eng.tokenize("Once upon a time")
    runs, slots = [], []
    admit = eng._scheduler.admit

    def recording(seq):
        admit(seq)
        if seq.request.sampling.seed is not None:
            slots[-1].append(seq.slot.seq_id)

    monkeypatch.setattr(eng._scheduler, "admit", recording)
    try:
        for between in (None, "The harbour at dawn"):
            if between is not None:
                await _generate(eng, eng.tokenize(between))  # takes slot 0, now the most recently used
            slots.append([])
            tasks = [asyncio.ensure_future(_sample(eng, prompt, 7 + k)) for k in range(3)]
            await admit_together(eng, tasks)
            runs.append(await asyncio.gather(*tasks))
    finally:
        await eng.close()
    assert slots == [[0, 1, 2], [1, 2, 0]]
    assert len({tuple(run) for run in runs[0]}) == 3  # the choices differ
    assert runs[1] == runs[0]
