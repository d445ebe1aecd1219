"""No prompt or completion text in the server's output unless OPENEDAI_DEBUG asks for it."""

from __future__ import annotations

MARKER = "zebra-mango-4711"


def test_prompts_and_outputs_never_reach_the_log(server, client):
    client.completions.create(model="m", prompt=f"The password is {MARKER}. Repeat: {MARKER}", max_tokens=12, temperature=0)
    list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": MARKER}], max_tokens=8, stream=True))
    with server.http() as http:
        http.post("/v1/completions", json={"prompt": MARKER, "temperature": 9})  # an error about this request
        http.post("/v1/internal/encode", json={"text": MARKER})
    log = server.log_path.read_text()
    assert MARKER not in log
    assert "POST /v1" not in log  # no access log either
