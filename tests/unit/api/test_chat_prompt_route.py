"""POST /v1/internal/chat-prompt through the app: the route, the service, and error envelopes."""

from __future__ import annotations

import pytest

from homeport.engines.fake import FakeEngine


@pytest.fixture
async def http(make_client):
    return make_client(FakeEngine(model_id="qwen2.5-test", context_length=4096)).http


MESSAGES = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]


async def test_returns_the_prompt(http):
    response = await http.post("/v1/internal/chat-prompt", json={"messages": MESSAGES})
    assert response.status_code == 200
    assert response.json() == {
        "prompt": "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    }


@pytest.mark.parametrize("keys", [("name1", "name2"), ("user_name", "bot_name")])
async def test_chat_mode_names_in_either_spelling(http, keys):
    body = {"messages": MESSAGES, "mode": "chat", keys[0]: "Ann", keys[1]: "Bo"}
    prompt = (await http.post("/v1/internal/chat-prompt", json=body)).json()["prompt"]
    assert prompt.endswith("Ann: Hi\nBo:") and "Be kind." not in prompt


async def test_tools_reach_the_template(http):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    prompt = (await http.post("/v1/internal/chat-prompt", json={"messages": MESSAGES, "tools": tools})).json()["prompt"]
    assert '"name": "lookup"' in prompt


@pytest.mark.parametrize(
    ("field", "value", "listed"),
    [("instruction_template", "Nope", "chatml"), ("character", "Nobody", "Example")],
)
async def test_unknown_names_are_400_envelopes(http, field, value, listed):
    response = await http.post("/v1/internal/chat-prompt", json={"messages": MESSAGES, "mode": "chat", field: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == field and listed in error["message"]


async def test_bad_mode_is_a_400(http):
    response = await http.post("/v1/internal/chat-prompt", json={"messages": MESSAGES, "mode": "story"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "mode"
