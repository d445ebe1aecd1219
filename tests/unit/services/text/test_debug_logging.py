"""Prompt and output text reach the log only when debug output was asked for."""

import logging

import pytest

from homeport.engines.fake import FakeEngine

MARKER = "violet-harbor-93"


@pytest.mark.parametrize("debug", [False, True])
async def test_prompts_logged_only_in_debug(make_client, caplog, debug):
    caplog.set_level(logging.DEBUG)
    client = make_client(FakeEngine(script=f"out {MARKER}"), debug=debug)
    await client.http.post("/v1/completions", json={"prompt": f"in {MARKER}", "max_tokens": 50})
    await client.http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": MARKER}]})
    assert (MARKER in caplog.text) is debug
