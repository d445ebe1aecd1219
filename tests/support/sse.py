"""Reading SSE bodies the way a strict client would."""

from __future__ import annotations

import json


def parse_sse(body: str) -> tuple[list[dict], bool]:
    """The JSON payloads of a stream's data frames, and whether it ended with [DONE] last."""
    payloads: list[dict] = []
    done = False
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        assert not done, "a frame came after [DONE]"
        lines = [line for line in block.split("\n") if not line.startswith(":")]
        assert all(line.startswith("data: ") for line in lines), f"not an SSE data frame: {block!r}"
        data = "\n".join(line[len("data: "):] for line in lines)
        if data == "[DONE]":
            done = True
        else:
            payloads.append(json.loads(data))
    return payloads, done
