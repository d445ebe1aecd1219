"""One HTTP request carried from the ingress to a replica and run there against homeport's own
ASGI app, its response coming back as a stream of items. No Ray here: the replica's method wraps
`run_asgi`, and unit tests drive it with a plain app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message


@dataclass(frozen=True)
class ForwardedRequest:
    """What the ingress received. The router reads `prompt_key` and `model` (the body stays opaque to it)."""

    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    client: tuple[str, int] | None = None
    prompt_key: str | None = field(default=None, repr=False)
    model: str | None = None  # the model the body names, aliases applied: the router prefers replicas with it loaded
    pin: str | None = None  # the replica that holds the stored response the request names: only it can answer

    def __repr__(self) -> str:  # never the body or the prompt, should Ray or a log print it
        return f"ForwardedRequest({self.method} {self.path}, {len(self.body)} bytes)"


@dataclass(frozen=True)
class ResponseStart:
    """The first item of a replica's answer: status, headers and the first piece of the body
    together, so that a replica lost before it counts as "nothing sent yet" and can be retried."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    more: bool  # false: `body` is the whole body
    replica: str


async def run_asgi(app: ASGIApp, request: ForwardedRequest, replica: str) -> AsyncIterator[ResponseStart | bytes]:
    """Run `request` against `app`; yield a ResponseStart, then the body's further chunks. Closing
    the iterator early (the client went away, Serve cancelled) tells the app the client
    disconnected, as uvicorn would, so its generation stops."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode("latin-1", "replace"),
        "query_string": request.query,
        "root_path": "",
        "headers": request.headers,
        "client": request.client,
        "server": ("127.0.0.1", 0),
        "state": {},
    }
    messages: asyncio.Queue[Message | None] = asyncio.Queue()
    disconnected = asyncio.Event()
    body_given = False

    async def receive() -> Message:
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        await messages.put(message)

    task = asyncio.create_task(app(scope, receive, send))
    task.add_done_callback(lambda _: messages.put_nowait(None))
    try:
        start: Message | None = None
        first: list[bytes] = []
        while True:
            message = await messages.get()
            if message is None:  # the app returned (or raised) without finishing the body
                break
            if message["type"] == "http.response.start":
                start = message
                continue
            if message["type"] != "http.response.body" or start is None:
                continue
            chunk, more = message.get("body", b""), message.get("more_body", False)
            if first is not None:
                first.append(chunk)
                if chunk or not more:
                    yield ResponseStart(start["status"], list(start.get("headers", [])), b"".join(first), more, replica)
                    first = None  # type: ignore[assignment]
            elif chunk or not more:
                yield chunk
            if not more:
                break
        if start is None or first is not None:
            await task  # re-raises what the app raised
            raise RuntimeError("the app ended without a response")
    finally:
        disconnected.set()
        if not task.done():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=5)
