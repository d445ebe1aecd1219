from contextlib import aclosing

from homeport.engines.base import GenerationRequest, SamplingParams
from homeport.engines.fake import FakeEngine


async def collect(engine, prompt="hi", max_tokens=1000, **sampling):
    request = GenerationRequest(engine.tokenize(prompt), SamplingParams(**sampling), max_tokens)
    return [event async for event in engine.generate(request)]


async def test_script_is_replayed_and_ends_with_stop():
    events = await collect(FakeEngine(script="héllo"))
    assert "".join(e.text for e in events) == "héllo"
    assert events[-1].finish_reason == "stop"
    assert [e.finish_reason for e in events[:-1]] == [None] * (len(events) - 1)


async def test_max_tokens_finishes_with_length():
    events = await collect(FakeEngine(script="abcdef"), max_tokens=3)
    assert "".join(e.text for e in events) == "abc"
    assert events[-1].finish_reason == "length"


async def test_same_seed_same_text_different_seed_different_text():
    engine = FakeEngine()
    a = await collect(engine, seed=1, temperature=1.0)
    b = await collect(engine, seed=1, temperature=1.0)
    c = await collect(engine, seed=2, temperature=1.0)
    assert [e.text for e in a] == [e.text for e in b]
    assert [e.text for e in a] != [e.text for e in c]


async def test_closing_the_stream_counts_as_cancelled():
    engine = FakeEngine(script="abcdefgh")
    request = GenerationRequest(engine.tokenize("x"), SamplingParams(), 100)
    async with aclosing(engine.generate(request)) as events:
        async for _ in events:
            break
    stats = engine.stats()
    assert stats.cancelled == 1 and stats.last_cancelled_tokens == 1 and stats.active == 0
