"""Issue 4 over the fake engine: samplers, presets, structured output, logprobs, n, best_of, echo."""

import math

import pytest

from homeport.engines.base import Grammar
from homeport.engines.fake import EOS_ID, FakeEngine
from support.sse import parse_sse

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Hi"}]


def last_sampling(engine: FakeEngine):
    return engine.requests[-1].sampling


async def test_reference_samplers_reach_the_engine(make_client):
    engine = FakeEngine(script="ok")
    client = make_client(engine)
    payload = {
        "prompt": "x", "max_tokens": 3, "temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05,
        "typical_p": 0.8, "top_n_sigma": 1.5, "xtc_probability": 0.5, "xtc_threshold": 0.2,
        "dry_multiplier": 0.8, "dry_base": 2.0, "dry_allowed_length": 3, "dry_sequence_breakers": '"\\n", ";"',
        "repetition_penalty": 1.2, "repetition_penalty_range": 64, "frequency_penalty": 0.5,
        "presence_penalty": 0.3, "mirostat_mode": 2, "mirostat_tau": 4.0, "mirostat_eta": 0.2, "seed": 5,
    }
    response = await client.http.post("/v1/completions", json=payload)
    assert response.status_code == 200
    assert "x-homeport-ignored-parameters" not in response.headers
    s = last_sampling(engine)
    assert (s.temperature, s.top_k, s.top_p, s.min_p, s.typical_p, s.top_n_sigma) == (0.7, 40, 0.9, 0.05, 0.8, 1.5)
    assert (s.xtc_probability, s.xtc_threshold, s.dry_multiplier, s.dry_base, s.dry_allowed_length) == (0.5, 0.2, 0.8, 2.0, 3)
    assert s.dry_sequence_breakers == ("\n", ";")
    assert (s.repetition_penalty, s.repetition_penalty_range, s.frequency_penalty, s.presence_penalty) == (1.2, 64, 0.5, 0.3)
    assert (s.mirostat_mode, s.mirostat_tau, s.mirostat_eta, s.seed) == (2, 4.0, 0.2, 5)


async def test_dynamic_temperature_maps_to_a_range(make_client):
    engine = FakeEngine(script="ok")
    client = make_client(engine)
    await client.http.post("/v1/completions", json={
        "prompt": "x", "dynamic_temperature": True, "dynatemp_low": 0.5, "dynatemp_high": 1.5, "dynatemp_exponent": 2,
    })
    s = last_sampling(engine)
    assert (s.temperature, s.dynatemp_range, s.dynatemp_exponent) == (1.0, 0.5, 2.0)


async def test_sampler_priority_and_temperature_last_order_the_stages(make_client):
    engine = FakeEngine(script="ok")
    client = make_client(engine)
    await client.http.post("/v1/completions", json={"prompt": "x", "sampler_priority": "top_k\nmin_p\ntemperature"})
    assert last_sampling(engine).order[:3] == ("top_k", "min_p", "temperature")
    await client.http.post("/v1/completions", json={"prompt": "x", "temperature_last": True})
    assert last_sampling(engine).order[-1] == "temperature"


async def test_unknown_sampler_name_is_400(client):
    response = await client.http.post("/v1/completions", json={"prompt": "x", "sampler_priority": ["warp_drive"]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "sampler_priority"


async def test_parameters_without_an_engine_equivalent_are_named_in_a_header(make_client):
    client = make_client(FakeEngine(script="ok"))
    response = await client.http.post("/v1/completions", json={"prompt": "x", "tfs": 0.9, "top_a": 0.2, "max_tokens": 2})
    assert response.status_code == 200
    assert response.headers["x-homeport-ignored-parameters"] == "tfs, top_a"
    stream = await client.http.post(CHAT, json={"messages": USER, "guidance_scale": 1.5, "stream": True})
    assert stream.headers["x-homeport-ignored-parameters"] == "guidance_scale"


async def test_bans_become_minus_infinity_biases(make_client):
    engine = FakeEngine(script="ok")
    client = make_client(engine)
    await client.http.post("/v1/completions", json={
        "prompt": "x", "custom_token_bans": "10, 11", "ban_eos_token": True, "logit_bias": {"12": -100, "13": 2.5},
    })
    bias = last_sampling(engine).logit_bias
    assert bias[10] == bias[11] == bias[12] == bias[EOS_ID] == -math.inf and bias[13] == 2.5
    await client.http.post("/v1/completions", json={"prompt": "x", "ignore_eos": True})
    assert last_sampling(engine).logit_bias == {EOS_ID: -math.inf}


async def test_a_banned_token_never_appears(make_client):
    client = make_client(FakeEngine(script="banana"))
    a = ord("a") + 3
    body = (await client.http.post("/v1/completions", json={"prompt": "x", "logit_bias": {str(a): -100}})).json()
    assert body["choices"][0]["text"] == "bnn"


async def test_preset_values_apply_and_request_values_win(make_client, tmp_path):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "precise.yaml").write_text("temperature: 0.1\ntop_k: 7\nmin-p: 0.2\nprompt: injected\n")
    engine = FakeEngine(script="ok")
    client = make_client(engine)
    await client.http.post("/v1/completions", json={"prompt": "x", "preset": "precise", "top_k": 3})
    s = last_sampling(engine)
    assert (s.temperature, s.top_k, s.min_p) == (0.1, 3, 0.2)
    assert engine.detokenize(engine.requests[-1].prompt_tokens) == "x"  # a preset cannot change the prompt
    for name in ("nope", "../../etc/passwd"):
        response = await client.http.post("/v1/completions", json={"prompt": "x", "preset": name})
        assert response.status_code == 400 and response.json()["error"]["param"] == "preset"


async def test_grammar_and_response_formats_reach_the_engine(make_client):
    engine = FakeEngine(script="{}")
    client = make_client(engine)
    await client.http.post("/v1/completions", json={"prompt": "x", "grammar_string": 'root ::= "a"'})
    assert last_sampling(engine).grammar == Grammar(kind="gbnf", source='root ::= "a"')
    await client.http.post(CHAT, json={"messages": USER, "response_format": {"type": "json_object"}})
    assert last_sampling(engine).grammar == Grammar(kind="json")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": True}}
    await client.http.post(CHAT, json={"messages": USER, "response_format": fmt})
    assert last_sampling(engine).grammar.kind == "json_schema"
    await client.http.post("/v1/completions", json={"prompt": "x", "response_format": {"type": "text"}})
    assert last_sampling(engine).grammar is None


@pytest.mark.parametrize(
    "extra,param",
    [
        ({"grammar_string": "this is not gbnf"}, "grammar_string"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "wat"}}}},
         "response_format.json_schema.schema"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
    ],
)
async def test_invalid_grammar_or_schema_is_400_naming_it(client, spec, extra, param):
    response = await client.http.post(CHAT, json={"messages": USER, **extra})
    assert response.status_code == 400
    spec.validate("ErrorResponse", response.json())
    assert response.json()["error"]["param"] == param


async def test_chat_logprobs_shape(make_client, spec):
    client = make_client(FakeEngine(script="abc"))
    body = (await client.http.post(CHAT, json={"messages": USER, "logprobs": True, "top_logprobs": 2})).json()
    spec.validate("CreateChatCompletionResponse", body)
    content = body["choices"][0]["logprobs"]["content"]
    assert "".join(entry["token"] for entry in content) == "abc"
    for entry in content:
        assert entry["logprob"] <= 0 and bytes(entry["bytes"]).decode() == entry["token"]
        assert len(entry["top_logprobs"]) == 2 and entry["top_logprobs"][0]["token"] == entry["token"]


async def test_chat_logprobs_stream(make_client, spec):
    client = make_client(FakeEngine(script="abc"))
    payload = {"messages": USER, "logprobs": True, "top_logprobs": 1, "stream": True}
    chunks, done = parse_sse((await client.http.post(CHAT, json=payload)).text)
    assert done
    tokens = []
    for chunk in chunks:
        spec.validate("CreateChatCompletionStreamResponse", chunk)
        lp = chunk["choices"][0]["logprobs"]
        if lp:
            tokens += [entry["token"] for entry in lp["content"]]
    assert "".join(tokens) == "abc"


async def test_top_logprobs_limits(client):
    assert (await client.http.post(CHAT, json={"messages": USER, "logprobs": True, "top_logprobs": 21})).status_code == 400
    assert (await client.http.post(CHAT, json={"messages": USER, "top_logprobs": 2})).status_code == 400


async def test_completion_logprobs_legacy_shape_and_echo(make_client, spec):
    client = make_client(FakeEngine(script="de"))
    body = (await client.http.post("/v1/completions", json={"prompt": "abc", "logprobs": 2, "echo": True})).json()
    spec.validate("CreateCompletionResponse", body)
    choice = body["choices"][0]
    assert choice["text"] == "abcde"
    lp = choice["logprobs"]
    assert lp["tokens"] == ["a", "b", "c", "d", "e"]  # BOS is not part of the text
    assert all(v <= 0 for v in lp["token_logprobs"])  # every text token follows BOS: none is null
    assert all(len(t) <= 2 for t in lp["top_logprobs"])
    assert lp["text_offset"] == [0, 1, 2, 3, 4]


async def test_completion_logprobs_and_echo_stream(make_client, spec):
    client = make_client(FakeEngine(script="de"))
    payload = {"prompt": "abc", "logprobs": 1, "echo": True, "stream": True}
    chunks, done = parse_sse((await client.http.post("/v1/completions", json=payload)).text)
    assert done
    for chunk in chunks:
        spec.validate("CreateCompletionChunk", chunk)
    assert chunks[0]["choices"][0]["text"] == "abc"
    assert "".join(c["choices"][0]["text"] for c in chunks) == "abcde"
    offsets = [o for c in chunks if c["choices"][0]["logprobs"] for o in c["choices"][0]["logprobs"]["text_offset"]]
    assert offsets == [0, 1, 2, 3, 4]


async def test_echo_without_logprobs(make_client):
    client = make_client(FakeEngine(script="!"))
    body = (await client.http.post("/v1/completions", json={"prompt": "Hey", "echo": True})).json()
    assert body["choices"][0]["text"] == "Hey!" and body["choices"][0]["logprobs"] is None


async def test_n_choices_with_their_own_seeds(make_client, spec):
    engine = FakeEngine()
    client = make_client(engine)
    body = (await client.http.post(CHAT, json={"messages": USER, "n": 3, "temperature": 1, "seed": 10, "max_tokens": 20})).json()
    spec.validate("CreateChatCompletionResponse", body)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert len({c["message"]["content"] for c in body["choices"]}) == 3
    assert sorted(r.sampling.seed for r in engine.requests) == [10, 11, 12]
    assert body["usage"]["completion_tokens"] == 60


async def test_n_choices_stream_each_with_role_and_finish(make_client, spec):
    client = make_client(FakeEngine(script="xy"))
    chunks, done = parse_sse((await client.http.post(CHAT, json={"messages": USER, "n": 2, "stream": True})).text)
    assert done
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
        assert mine[0]["delta"]["role"] == "assistant"
        assert "".join(c["delta"].get("content", "") for c in mine) == "xy"
        assert [c["finish_reason"] for c in mine].count("stop") == 1


async def test_several_prompts_times_n_are_indexed_prompt_by_prompt(make_client):
    client = make_client(FakeEngine(script="z"))
    body = (await client.http.post("/v1/completions", json={"prompt": ["a", "b"], "n": 2})).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]


async def test_best_of_returns_n_and_validates(make_client):
    client = make_client(FakeEngine())
    body = (await client.http.post("/v1/completions", json={"prompt": "x", "best_of": 3, "n": 2, "max_tokens": 5})).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["usage"]["completion_tokens"] == 15  # all candidates count
    assert (await client.http.post("/v1/completions", json={"prompt": "x", "best_of": 1, "n": 2})).status_code == 400
    bad = await client.http.post("/v1/completions", json={"prompt": "x", "best_of": 2, "stream": True})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "best_of"


async def test_suffix_needs_fim_tokens(make_client):
    plain = make_client(FakeEngine())
    response = await plain.http.post("/v1/completions", json={"prompt": "def f(", "suffix": "\n    return x"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "suffix"
    engine = FakeEngine(script="x", fim=True)
    fim = make_client(engine)
    assert (await fim.http.post("/v1/completions", json={"prompt": "ab", "suffix": "cd"})).status_code == 200
    assert engine.requests[-1].prompt_tokens == [1, 0, 100, 101, 0, 102, 103, 0]


async def test_truncation_length_keeps_the_end_of_the_prompt(make_client):
    engine = FakeEngine(script="k")
    client = make_client(engine)
    payload = {"prompt": "0123456789" * 3, "truncation_length": 20, "max_tokens": 5}
    assert (await client.http.post("/v1/completions", json=payload)).status_code == 200
    tokens = engine.requests[-1].prompt_tokens
    assert len(tokens) == 15 and tokens[0] == 1 and engine.detokenize(tokens).endswith("56789")


async def test_auto_max_new_tokens_fills_the_context(make_client):
    client = make_client(FakeEngine(context_length=64))
    body = (await client.http.post("/v1/completions", json={"prompt": "x", "auto_max_new_tokens": True})).json()
    assert body["usage"]["total_tokens"] == 64


async def test_skip_special_tokens_false_reaches_the_engine(make_client):
    engine = FakeEngine(script="ok")
    client = make_client(engine)
    await client.http.post("/v1/completions", json={"prompt": "x", "skip_special_tokens": False})
    assert engine.requests[-1].render_special is True


async def test_add_bos_token_false(make_client):
    engine = FakeEngine(script="ok")
    client = make_client(engine)
    await client.http.post("/v1/completions", json={"prompt": "ab", "add_bos_token": False})
    assert engine.requests[-1].prompt_tokens == [100, 101]


async def test_logits_endpoint(client):
    raw = (await client.http.post("/v1/internal/logits", json={"prompt": "Hi", "top_logits": 5})).json()
    assert list(raw) == ["a", "b", "c", "d", "e"] and sum(raw.values()) <= 1
    after = (await client.http.post("/v1/internal/logits", json={"prompt": "Hi", "use_samplers": True, "top_k": 3})).json()
    assert len(after) <= 5
