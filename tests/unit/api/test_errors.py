"""Every bad input gets OpenAI's error envelope with the right 4xx, and the server keeps serving."""

import openai
import pytest

from homeport.engines.fake import FakeEngine

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Hi"}]


def assert_error(response, status, spec, *, code=None, param=None, type_="invalid_request_error"):
    assert response.status_code == status, response.text
    body = response.json()
    spec.validate("ErrorResponse", body)
    assert set(body) == {"error"}
    assert body["error"]["type"] == type_
    if code is not None:
        assert body["error"]["code"] == code
    if param is not None:
        assert body["error"]["param"] == param
    return body["error"]


@pytest.mark.parametrize(
    "payload,param",
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0]"),
        ({"messages": USER, "temperature": 6}, "temperature"),
        ({"messages": USER, "top_p": -0.1}, "top_p"),
        ({"messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"messages": USER, "max_tokens": "many"}, "max_tokens"),
        ({"messages": USER, "logit_bias": {"abc": 1}}, "logit_bias"),
        ({"messages": USER, "presence_penalty": 5}, "presence_penalty"),
    ],
)
async def test_invalid_chat_requests_are_400_never_422(client, spec, payload, param):
    error = assert_error(await client.http.post(CHAT, json=payload), 400, spec, param=param)
    assert error["message"]


async def test_unparseable_json_is_400(client, spec):
    response = await client.http.post(CHAT, content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 400, spec, code="invalid_json")


async def test_unknown_fields_are_accepted(client):
    payload = {"messages": USER, "service_tier": "auto", "some_future_field": {"a": 1}, "max_tokens": 2}
    assert (await client.http.post(CHAT, json=payload)).status_code == 200


async def test_tool_choice_without_tools_is_400(client, spec):
    response = await client.http.post(CHAT, json={"messages": USER, "tool_choice": "required"})
    assert_error(response, 400, spec, param="tool_choice")


async def test_image_content_is_400_on_a_text_model(client, spec):
    content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    response = await client.http.post(CHAT, json={"messages": [{"role": "user", "content": content}]})
    error = assert_error(response, 400, spec, param="messages[0].content[0].image_url")
    assert "does not accept images" in error["message"]


@pytest.mark.parametrize("stream", [False, True])
async def test_prompt_longer_than_context_is_400_before_any_stream(make_client, spec, stream):
    client = make_client(FakeEngine(context_length=64))
    response = await client.http.post("/v1/completions", json={"prompt": "x" * 100, "stream": stream})
    assert not response.headers["content-type"].startswith("text/event-stream")
    error = assert_error(response, 400, spec, code="context_length_exceeded", param="prompt")
    assert "64" in error["message"]


async def test_prompt_plus_max_tokens_over_context_is_400(make_client, spec):
    client = make_client(FakeEngine(context_length=64))
    response = await client.http.post("/v1/completions", json={"prompt": "x" * 10, "max_tokens": 60})
    assert_error(response, 400, spec, code="context_length_exceeded")


async def test_chat_without_max_tokens_uses_the_rest_of_the_context(make_client):
    client = make_client(FakeEngine(context_length=400))
    body = (await client.http.post(CHAT, json={"messages": USER})).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["total_tokens"] == 400


@pytest.mark.parametrize("bad", [[10**9], [[1, 2], [10**7]]])
async def test_token_ids_outside_the_vocabulary_are_400(client, spec, bad):
    assert_error(await client.http.post("/v1/completions", json={"prompt": bad}), 400, spec, param="prompt")


async def test_logit_bias_outside_the_vocabulary_is_400(client, spec):
    response = await client.http.post(CHAT, json={"messages": USER, "logit_bias": {"999999": 5}})
    assert_error(response, 400, spec, param="logit_bias")


async def test_unknown_route_and_method_use_the_envelope(client, spec):
    assert_error(await client.http.post("/v1/nope", json={}), 404, spec, code="not_found")
    assert_error(await client.http.get("/v1/chat/completions"), 405, spec)


async def test_api_key_is_required_when_set(make_client, spec):
    client = make_client(api_key="s3cret")
    assert_error(await client.http.get("/v1/models"), 401, spec, code="invalid_api_key")
    wrong = await client.http.get("/v1/models", headers={"Authorization": "Bearer nope"})
    error = assert_error(wrong, 401, spec, code="invalid_api_key")
    assert "nope" not in error["message"]
    ok = await client.http.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert (await client.http.get("/health")).status_code == 200  # liveness stays public
    with pytest.raises(openai.AuthenticationError):
        await client.openai(api_key="wrong").models.list()
    assert (await client.openai(api_key="s3cret").models.list()).data


async def test_internal_error_is_500_without_internals_and_server_keeps_serving(make_client, spec):
    client = make_client(FakeEngine(script="ok"))

    def explode(request):
        raise ZeroDivisionError("secret internal detail")

    original = client.engine.generate
    client.engine.generate = explode
    response = await client.http.post(CHAT, json={"messages": USER})
    error = assert_error(response, 500, spec, type_="server_error")
    assert "secret" not in error["message"] and "ZeroDivision" not in error["message"]
    client.engine.generate = original
    assert (await client.http.post(CHAT, json={"messages": USER})).status_code == 200


async def test_an_internal_error_on_messages_is_anthropics_api_error(make_client):
    client = make_client(FakeEngine(script="ok"))

    def explode(request):
        raise ZeroDivisionError("secret internal detail")

    client.engine.generate = explode
    body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    response = await client.http.post("/v1/messages", json=body)
    assert response.status_code == 500
    assert response.json() == {
        "type": "error", "error": {"type": "api_error", "message": "The server had an error while processing your request."}
    }


async def test_template_raise_exception_is_a_400(make_client, spec):
    template = "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}x"
    client = make_client(FakeEngine(chat_template=template))
    response = await client.http.post(CHAT, json={"messages": [{"role": "assistant", "content": "hi"}]})
    error = assert_error(response, 400, spec)
    assert "first message must be from the user" in error["message"]


async def test_past_the_bounded_queue_is_503_with_retry_after(make_client, spec):
    engine = FakeEngine()
    client = make_client(engine, max_queue=4)
    engine.queued = 4
    response = await client.http.post(CHAT, json={"messages": USER, "stream": True})
    assert response.headers.get("retry-after") == "1"
    assert not response.headers["content-type"].startswith("text/event-stream")
    assert_error(response, 503, spec, code="server_busy", type_="server_error")
    engine.queued = 3
    assert (await client.http.post(CHAT, json={"messages": USER, "max_tokens": 2})).status_code == 200
