"""The transformers engine on a tiny random-weight Llama built locally (tests/support/tiny_hf_model.py)."""

from __future__ import annotations

import asyncio
import json
import math
from contextlib import aclosing
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from homeport.engines.base import GenerationRequest, Grammar, SamplingParams, TextEngine  # noqa: E402
from homeport.engines.transformers import (  # noqa: E402
    check_transformers_folder,
    load_transformers_engine,
    unsupported_sampling,
)
from homeport.engines.transformers.engine import TransformersEngine  # noqa: E402
from homeport.engines.transformers.support import LOAD_ARGS  # noqa: E402
from homeport.engines.transformers.sampling import Sampler  # noqa: E402
from homeport.errors import EngineError, StartupError, UnsupportedParameterError  # noqa: E402
from homeport.engines.transformers.tokens import Tokens  # noqa: E402
from support.tiny_hf_model import (  # noqa: E402
    PADDED_LOGITS,
    corrupt_copy,
    sentencepiece_style_tokenizer,
    tiny_model_folder,
)

NO_EOG = {2: float("-inf"), 4: float("-inf")}  # </s> and <|im_end|>: runs last exactly max_tokens


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return tiny_model_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def engine(tiny_folder):
    engine = load_transformers_engine(tiny_folder, "tiny", {"device": "cpu"}, threads=2, debug=False)
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.close())


def request(engine, prompt="Hello world", max_tokens=8, *, request_id="", logprobs=None, prompt_logprobs=False,
            **sampling) -> GenerationRequest:
    return GenerationRequest(
        engine.tokenize(prompt), SamplingParams(**sampling), max_tokens, request_id=request_id, logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
    )


async def collect(engine, req: GenerationRequest) -> list:
    return [event async for event in engine.generate(req)]


async def settled(engine, key: str, value: int):
    """The stats once the engine thread has counted what the test expects (it may lag a step)."""
    for _ in range(200):
        stats = engine.stats()
        if getattr(stats, key) >= value:
            return stats
        await asyncio.sleep(0.01)
    return engine.stats()


# ---- loading and tokens ----------------------------------------------------------------------


def test_loads_the_folder_with_its_info(engine, tiny_folder):
    assert isinstance(engine, TextEngine)
    info = engine.info
    assert (info.loader, info.model_id, info.path) == ("transformers", "tiny", str(tiny_folder))
    assert info.context_length == 256  # the config's max_position_embeddings
    assert "<|im_start|>" in info.chat_template
    assert (info.bos_token, info.eos_token) == ("<s>", "</s>")
    config = json.loads((tiny_folder / "config.json").read_text())
    assert engine.vocab_size == config["vocab_size"] - PADDED_LOGITS  # the tokenizer's, not the padded logits
    assert engine.eog_tokens() == frozenset({2, 4})  # config eos + generation_config's list
    assert engine.fim_tokens() is None and engine.lora_names == []
    assert engine.effective_args() == {
        "ctx_size": 256, "threads": 2, "parallel": 4, "dtype": "float32", "device": "cpu"
    }
    names = {arg.name for arg in LOAD_ARGS}
    assert "trust_remote_code" not in names
    assert {"ctx_size", "threads", "dtype", "device", "parallel"} <= names


def test_tokenize_round_trip_and_token_bytes(engine):
    text = "Café über 日本語 🙂 done"
    with_bos = engine.tokenize(text)
    bare = engine.tokenize(text, add_special=False)
    assert with_bos == [1, *bare]
    assert engine.detokenize(with_bos) == text  # special tokens are not text
    # Byte-level pieces are exact bytes: characters split across tokens join back.
    assert b"".join(engine.token_piece(t) for t in bare) == text.encode()
    assert any(len(engine.token_piece(t).decode("utf-8", errors="ignore")) == 0 for t in bare)  # a split character
    assert engine.token_piece(4) == b"<|im_end|>"
    # Special tokens are parsed from text unless told not to.
    assert engine.tokenize("<|im_end|>", add_special=False) == [4]
    literal = engine.tokenize("<|im_end|>", add_special=False, parse_special=False)
    assert 4 not in literal and engine.detokenize(literal) == "<|im_end|>"


def test_sentencepiece_pieces_turn_markers_into_spaces_and_bytes():
    tokenizer = sentencepiece_style_tokenizer()
    tokens = Tokens(tokenizer, len(tokenizer))
    ids = tokens.encode("hello wörld 日", add_special=False, parse_special=True)
    assert "<0xC3>" in tokenizer.convert_ids_to_tokens(ids)  # ö is not in the vocabulary: byte fallback
    assert b"".join(tokens.piece(t) for t in ids) == " hello wörld 日".encode()  # pieces keep ▁ as a space
    assert tokens.decode(ids) == "hello wörld 日"
    assert tokens.piece(1) == b"" and tokens.piece(1, render_special=True) == b"<s>"


# ---- generation ------------------------------------------------------------------------------


async def test_greedy_matches_transformers_generate(engine, tiny_folder):
    from transformers import AutoModelForCausalLM

    prompt = engine.tokenize("Once upon a time")
    events = await collect(engine, GenerationRequest(prompt, SamplingParams(temperature=0), 10))
    again = await collect(engine, GenerationRequest(prompt, SamplingParams(temperature=0), 10))
    assert [e.token_id for e in events] == [e.token_id for e in again]

    model = AutoModelForCausalLM.from_pretrained(tiny_folder, local_files_only=True, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, pad_token_id=0)
    reference = out[0, len(prompt):].tolist()
    assert [e.token_id for e in events] == reference
    last = events[-1]
    assert last.finish_reason == ("stop" if reference[-1] in (2, 4) else "length")
    assert [e.finish_reason for e in events[:-1]] == [None] * (len(events) - 1)


async def test_chunked_prefill_gives_the_same_tokens_and_prompt_logprobs(engine):
    chunked = TransformersEngine(
        engine.config, engine._model, engine._tokens, info=engine.info, eog=engine.eog_tokens(),
        device=engine._device, dtype="float32", prefill_chunk=3,
    )
    await chunked.start()
    try:
        req = request(engine, "The quick brown fox jumps over the lazy dog", 6, logprobs=2, prompt_logprobs=True,
                      temperature=0, logit_bias=NO_EOG)
        whole, parts = await collect(engine, req), await collect(chunked, req)
    finally:
        await chunked.close()
    assert [e.token_id for e in parts] == [e.token_id for e in whole]
    a, b = whole[0].prompt_logprobs, parts[0].prompt_logprobs
    assert len(a) == len(req.prompt_tokens) and a[0] == (req.prompt_tokens[0], None, ())
    assert [t for t, _, _ in a] == req.prompt_tokens == [t for t, _, _ in b]
    for (_, x, _), (_, y, _) in zip(a[1:], b[1:]):
        assert x <= 0 and x == pytest.approx(y, abs=1e-4)
    assert all(e.prompt_logprobs is None for e in whole[1:])


async def test_seeded_sampling_is_reproducible(engine):
    def sampled(seed):
        return collect(engine, request(engine, max_tokens=12, temperature=1.5, seed=seed, logit_bias=NO_EOG))

    a, b, c = await sampled(7), await sampled(7), await sampled(8)
    assert [e.token_id for e in a] == [e.token_id for e in b]
    assert [e.token_id for e in a] != [e.token_id for e in c]
    # Bytes of a character split across tokens are held back until it is complete.
    for events in (a, c):
        whole = b"".join(engine.token_piece(e.token_id) for e in events).decode("utf-8", errors="replace")
        assert "".join(e.text for e in events) == whole


async def test_max_tokens_ends_with_length(engine):
    events = await collect(engine, request(engine, max_tokens=5, temperature=0, logit_bias=NO_EOG))
    assert len(events) == 5
    assert [e.finish_reason for e in events] == [None] * 4 + ["length"]
    assert all(e.cached_tokens == 0 for e in events)


async def test_an_eog_token_stops_with_empty_text(engine):
    events = await collect(engine, request(engine, max_tokens=5, temperature=0, logit_bias={2: 100.0}))
    assert [(e.token_id, e.text, e.finish_reason) for e in events] == [(2, "", "stop")]


async def test_a_banned_token_never_appears(engine):
    greedy = [e.token_id for e in await collect(engine, request(engine, max_tokens=12, temperature=0))]
    banned = max(set(greedy), key=greedy.count)
    events = await collect(engine, request(engine, max_tokens=12, temperature=0, logit_bias={banned: float("-inf")}))
    assert banned not in [e.token_id for e in events]
    hot = await collect(engine, request(engine, max_tokens=12, temperature=1.5, seed=3,
                                        logit_bias={banned: float("-inf"), **NO_EOG}))
    assert banned not in [e.token_id for e in hot]


async def test_logprobs_are_the_models_and_sorted(engine):
    events = await collect(engine, request(engine, max_tokens=6, logprobs=3, temperature=0, logit_bias=NO_EOG))
    for event in events:
        assert event.logprob is not None and event.logprob <= 0
        values = [lp for _, lp in event.top_logprobs]
        assert len(values) == 3 and values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        assert event.top_logprobs[0] == (event.token_id, event.logprob)  # greedy takes the best
    plain = await collect(engine, request(engine, max_tokens=2, temperature=0))
    assert all(e.logprob is None and e.top_logprobs is None for e in plain)


async def test_penalties_change_the_greedy_path(engine):
    plain = await collect(engine, request(engine, max_tokens=16, temperature=0, logit_bias=NO_EOG))
    penalized = await collect(engine, request(engine, max_tokens=16, temperature=0, logit_bias=NO_EOG,
                                              presence_penalty=50.0))
    tokens = [e.token_id for e in penalized]
    prompt = set(engine.tokenize("Hello world"))
    assert len(set(tokens)) == len(tokens) and not prompt & set(tokens)  # nothing seen is picked again
    assert tokens != [e.token_id for e in plain]


async def test_distribution_raw_and_filtered(engine):
    prompt = engine.tokenize("Hello")
    raw = await engine.distribution(prompt, None, 5)
    assert len(raw) == 5 and [p for _, p in raw] == sorted((p for _, p in raw), reverse=True)
    assert 0 < sum(p for _, p in raw) <= 1
    greedy_first = (await collect(engine, GenerationRequest(prompt, SamplingParams(temperature=0), 1)))[0].token_id
    assert raw[0][0] == greedy_first
    filtered = await engine.distribution(prompt, SamplingParams(top_k=3), 5)
    assert [t for t, _ in filtered] == [t for t, _ in raw[:3]]
    assert sum(p for _, p in filtered) == pytest.approx(1.0)


# ---- concurrency, cancellation, stop ---------------------------------------------------------


async def test_concurrent_generations_interleave_and_match_solo(engine):
    a = request(engine, "Hello world", 30, temperature=0, logit_bias=NO_EOG)
    b = request(engine, "One, two, three", 30, temperature=0, logit_bias=NO_EOG)
    solo_a, solo_b = await collect(engine, a), await collect(engine, b)
    arrivals: list[str] = []

    async def run(name, req):
        events = []
        async for event in engine.generate(req):
            arrivals.append(name)
            events.append(event)
        return events

    together_a, together_b = await asyncio.gather(run("a", a), run("b", b))
    assert [e.token_id for e in together_a] == [e.token_id for e in solo_a]
    assert [e.token_id for e in together_b] == [e.token_id for e in solo_b]
    # Interleaved: neither ran to its end before the other started.
    assert arrivals.index("b") < len(arrivals) - 1 - arrivals[::-1].index("a")
    assert arrivals.index("a") < len(arrivals) - 1 - arrivals[::-1].index("b")


async def test_closing_one_stream_cancels_it_and_the_other_completes(engine):
    before = engine.stats()
    long = request(engine, "Hello world", 200, temperature=0, logit_bias=NO_EOG)
    short = request(engine, "One, two, three", 20, temperature=0, logit_bias=NO_EOG)
    solo_short = await collect(engine, short)

    async def cancel_after_three():
        seen = 0
        async with aclosing(engine.generate(long)) as events:
            async for _ in events:
                seen += 1
                if seen == 3:
                    break
        return seen

    seen, other = await asyncio.gather(cancel_after_three(), collect(engine, short))
    assert seen == 3
    assert [e.token_id for e in other] == [e.token_id for e in solo_short] and other[-1].finish_reason == "length"
    stats = await settled(engine, "cancelled", before.cancelled + 1)
    assert stats.cancelled == before.cancelled + 1
    assert 3 <= stats.last_cancelled_tokens < 200
    assert stats.active == 0 and stats.queued == 0


async def test_stop_ends_a_generation_cleanly(engine):
    req = request(engine, max_tokens=200, request_id="resp-1", temperature=0, logit_bias=NO_EOG)
    events = []
    async for event in engine.generate(req):
        events.append(event)
        if len(events) == 2:
            assert engine.stop("other-id") == 0
            assert engine.stop("resp-1") == 1
    assert events[-1].finish_reason == "stop" and len(events) < 200
    assert engine.stop() == 0  # nothing left running


async def test_parallel_limit_queues_and_context_limit_ends_with_length(tiny_folder):
    args = {"ctx_size": 40, "parallel": 1, "device": "cpu"}
    small = load_transformers_engine(tiny_folder, "tiny-small", args, threads=0, debug=False)
    await small.start()
    try:
        assert small.info.context_length == 40 and small.effective_args()["parallel"] == 1
        first = request(small, "The quick brown fox jumps over the lazy dog", 100, temperature=0, logit_bias=NO_EOG)
        second = request(small, "Hello world", 3, temperature=0, logit_bias=NO_EOG)
        depths: list[int] = []

        async def watch_first():
            events = []
            async for event in small.generate(first):
                depths.append(small.queue_depth())
                events.append(event)
            return events

        events, later = await asyncio.gather(watch_first(), collect(small, second))
        assert max(depths) == 1  # the second waited for the only slot
        assert len(events) == 40 - len(first.prompt_tokens) and events[-1].finish_reason == "length"
        assert len(later) == 3 and later[-1].finish_reason == "length"
        too_long = GenerationRequest(list(range(5, 50)), SamplingParams(temperature=0), 4)
        with pytest.raises(EngineError):
            await collect(small, too_long)
    finally:
        await small.close()
    with pytest.raises(EngineError):
        await collect(small, second)  # closed: the thread is gone


# ---- what the engine refuses -----------------------------------------------------------------


async def test_grammars_loras_and_unsupported_samplers_are_named(engine):
    assert "not supported by the transformers engine" in engine.check_grammar(Grammar(kind="json"))
    with pytest.raises(UnsupportedParameterError):
        await engine.set_loras([(Path("adapter.gguf"), 1.0)])
    assert unsupported_sampling(SamplingParams()) == []
    params = SamplingParams(dry_multiplier=0.8, xtc_probability=0.5, top_n_sigma=1.0, dynatemp_range=0.5,
                            mirostat_mode=2)
    assert unsupported_sampling(params) == [
        "dry_multiplier", "xtc_probability", "top_n_sigma", "dynatemp_range", "mirostat_mode"
    ]
    assert engine.unsupported_sampling(params) == unsupported_sampling(params)


def test_corrupt_folders_raise_startup_error(tiny_folder, tmp_path):
    import safetensors.torch

    broken_config = corrupt_copy(tiny_folder, tmp_path / "bad-config", config="{not json")
    no_weights = corrupt_copy(tiny_folder, tmp_path / "no-weights", drop_weights=True)
    truncated = corrupt_copy(tiny_folder, tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    custom = corrupt_copy(tiny_folder, tmp_path / "custom", config=json.dumps(
        {"model_type": "my-own-arch", "auto_map": {"AutoModelForCausalLM": "modeling_mine.MyModel"}}))
    for folder, reason in [(broken_config, "config.json"), (no_weights, "no weights"), (truncated, "truncated"),
                           (custom, "never runs")]:
        with pytest.raises(StartupError, match=reason):
            check_transformers_folder(folder)
        with pytest.raises(StartupError, match=reason):
            load_transformers_engine(folder, "broken", {}, threads=0, debug=False)
    # Weights that pass the header check but do not fit the architecture fail the load itself.
    foreign = corrupt_copy(tiny_folder, tmp_path / "foreign", drop_weights=True)
    safetensors.torch.save_file({"something.else": torch.zeros(4)}, str(foreign / "model.safetensors"))
    check_transformers_folder(foreign)
    with pytest.raises(StartupError, match="cannot load model"):
        load_transformers_engine(foreign, "foreign", {}, threads=0, debug=False)
    with pytest.raises(StartupError, match="dtype"):
        load_transformers_engine(tiny_folder, "tiny", {"dtype": "int3"}, threads=0, debug=False)
    if not torch.cuda.is_available():
        with pytest.raises(StartupError, match="cuda"):
            load_transformers_engine(tiny_folder, "tiny", {"device": "cuda"}, threads=0, debug=False)
    with pytest.raises(StartupError, match="not found"):
        check_transformers_folder(tmp_path / "nowhere")


# ---- the sampler on hand-made logits ---------------------------------------------------------


def _kept(params: SamplingParams, logits: list[float], history=()) -> list[int]:
    filtered = Sampler(params, len(logits), 64, history).filter(torch.tensor(logits))
    return [i for i, v in enumerate(filtered.tolist()) if math.isfinite(v)]


def test_sampler_filters_follow_llama_cpp():
    logits = [math.log(p) for p in (0.5, 0.25, 0.15, 0.07, 0.03)]
    assert _kept(SamplingParams(top_k=2), logits) == [0, 1]
    assert _kept(SamplingParams(top_p=0.7), logits) == [0, 1]  # 0.5 < 0.7 ≤ 0.75
    assert _kept(SamplingParams(top_p=0.8), logits) == [0, 1, 2]
    assert _kept(SamplingParams(min_p=0.2), logits) == [0, 1, 2]  # p ≥ 0.1
    # Typical: surprise closest to the entropy (1.27 nats) first, so token 1 (1.39) leads token 0 (0.69).
    assert _kept(SamplingParams(typical_p=0.2), logits) == [1]
    assert _kept(SamplingParams(typical_p=0.8), logits) == [0, 1, 2]
    assert _kept(SamplingParams(logit_bias={0: float("-inf")}), logits) == [1, 2, 3, 4]
    # Order matters: a high temperature before min_p flattens the distribution, so min_p keeps all.
    assert _kept(SamplingParams(temperature=3.0, min_p=0.2), logits) == [0, 1, 2, 3, 4]
    assert _kept(SamplingParams(temperature=3.0, min_p=0.2, order=("min_p", "temperature")), logits) == [0, 1, 2]
    # Greedy skips the filters but keeps bias and penalties.
    greedy = Sampler(SamplingParams(temperature=0, repetition_penalty=10.0), 5, 64, history=[0])
    assert greedy.sample(torch.tensor([2.0, 1.0, 0.0, -1.0, -2.0])) == 1  # 2.0 / 10 < 1.0


def test_sampler_seed_decides_the_draws():
    def draws(seed):
        sampler = Sampler(SamplingParams(seed=seed), 50, 64)
        return [sampler.sample(torch.zeros(50)) for _ in range(8)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)
