"""Idle slots' cached prefixes leave the unified KV cache for host memory when a request starts
(the attention of every decode step scans all the cells in use: docs/benchmarks.md), and come back
by a copy when a request reuses them: the same answer as a fresh run, within a memory budget."""

from __future__ import annotations

import asyncio

import llama_cpp

from homeport.engines.base import GenerationRequest, SamplingParams
from homeport.engines.llama_cpp.engine import PREFILL_CHUNK, LlamaCppConfig, LlamaCppEngine

LETTER = "Dear harbour master,\n" + "".join(
    f"On day {n} the ferry {name} left berth {n % 7} at {6 + n % 12} o'clock with {40 + 3 * n} passengers.\n"
    for n, name in enumerate(["Aurora", "Bittern", "Cormorant", "Dunlin", "Eider", "Fulmar", "Gannet",
                              "Heron", "Ibis", "Jackdaw", "Kestrel", "Lapwing", "Merlin"])
)


async def _generate(eng: LlamaCppEngine, tokens: list[int], n: int = 8, cache: bool = True) -> tuple[str, int]:
    request = GenerationRequest(prompt_tokens=tokens, max_tokens=n, use_prefix_cache=cache,
                                sampling=SamplingParams(temperature=0.0))
    events = [event async for event in eng.generate(request)]
    return "".join(e.text for e in events), events[0].cached_tokens


async def _engine(**config) -> LlamaCppEngine:
    """The default model (SmolLM2) with a 1,024-token context, started."""
    from homeport.registry.library import packaged_models

    eng = LlamaCppEngine.load(LlamaCppConfig(path=packaged_models()[0].path, model_id="m", ctx_size=1024, **config))
    await eng.start()
    return eng


def _in_thread(eng: LlamaCppEngine, fn):
    return asyncio.wrap_future(eng._scheduler.call_in_thread(fn))


async def test_an_idle_cache_leaves_the_kv_when_another_starts_and_comes_back_for_its_conversation():
    eng = await _engine(parallel=2)
    scheduler = eng._scheduler
    try:
        first = eng.tokenize(LETTER + "Which ferry left on day 3?")
        assert 2 * PREFILL_CHUNK < len(first) < 3 * PREFILL_CHUNK
        await _generate(eng, first)
        slot = next(s for s in scheduler._slots if s.tokens)
        await _generate(eng, eng.tokenize("A short note about the weather:"), n=16)  # another conversation
        assert scheduler.counters.caches_stored == 1 and slot.stored is not None and not slot.runs
        pos_max = await _in_thread(eng, lambda: llama_cpp.llama_memory_seq_pos_max(scheduler._memory, slot.seq_id))
        assert pos_max == -1  # none of its cells are in the cache
        follow_up = eng.tokenize(LETTER + "Which ferry left on day 5?")
        text, cached = await _generate(eng, follow_up)
        assert cached == 2 * PREFILL_CHUNK and scheduler.counters.caches_restored == 1
        await _in_thread(eng, scheduler.clear_cache)
        fresh, _ = await _generate(eng, follow_up, cache=False)
    finally:
        await eng.close()
    assert text == fresh


async def test_the_store_keeps_within_its_budget_dropping_the_least_recently_used():
    # SmolLM2's cells take 23,040 bytes each: 3 MiB hold one 120-token prompt's, not two.
    eng = await _engine(parallel=3, cache_ram=3)
    scheduler = eng._scheduler
    try:
        letters = [eng.tokenize(f"Letter {k}.\n" + LETTER[:300]) for k in (1, 2)]
        assert all(80 < len(t) < PREFILL_CHUNK for t in letters)
        for tokens in letters:
            await _generate(eng, tokens + eng.tokenize(" Reply:", add_special=False))
        await _generate(eng, eng.tokenize("A short note about the weather:"), n=16)
        # The first letter's cache was stored when the second started; the second's then pushed it out.
        assert scheduler.counters.caches_stored == 2
        stored = [s for s in scheduler._slots if s.stored is not None]
        assert len(stored) == 1 and stored[0].tokens[:len(letters[1])] == letters[1]
        assert not any(s.tokens[:len(letters[0])] == letters[0] for s in scheduler._slots)
    finally:
        await eng.close()


async def test_with_no_budget_idle_caches_stay_in_the_kv():
    eng = await _engine(parallel=2, cache_ram=0)
    scheduler = eng._scheduler
    try:
        first = eng.tokenize(LETTER + "Which ferry left on day 3?")
        await _generate(eng, first)
        await _generate(eng, eng.tokenize("A short note about the weather:"), n=16)
        _, cached = await _generate(eng, eng.tokenize(LETTER + "Which ferry left on day 5?"))
    finally:
        await eng.close()
    assert scheduler.counters.caches_stored == 0 and cached == 2 * PREFILL_CHUNK
