"""The ingress: the ASGI app `homeport serve --ray-address` listens with. It answers /health itself
and forwards every other request, body untouched, to a replica through the deployment handle
(the router picks which), streaming the answer back with `X-Homeport-Replica` added.

Failures: a replica lost before the first byte of its answer is retried on another (the request
has had no visible effect yet); one lost mid-stream ends the stream with an error event and
`[DONE]`, as any stream failure does; no replica within the wait is a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from starlette.types import Receive, Scope, Send

from homeport.api.drain import END, Drain, DrainMiddleware, StreamHandle, current_drain, server_shutdown_error
from homeport.api.errors import INTERNAL_ERROR, error_response
from homeport.cluster.broadcast import combine, concerns_every_replica
from homeport.cluster.forwarding import ForwardedRequest, ResponseStart
from homeport.cluster.prefix import routing_fields, stored_home
from homeport.cluster.stream_end import StreamEnd
from homeport.errors import HomeportError, ServiceUnavailableError

log = logging.getLogger("homeport")

REPLICA_HEADER = b"x-homeport-replica"
RETRIES = 3  # attempts per request at a replica that dies before answering
READY_WAIT_S = 5.0  # /health/ready: how long to wait for some replica to answer


def _ray_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(a replica was lost: retry elsewhere, the queue at the router is full: 503 busy)."""
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError

    return (RayActorError, ReplicaUnavailableError), (BackPressureError,)


BUSY = ServiceUnavailableError("The server is busy: every replica's slots and the queue are full. Retry shortly.",
                               code="server_busy", headers={"Retry-After": "1"})


class ClusterIngress:
    """`deploy`: a blocking call that deploys the replicas and returns their deployment handle
    (anything with `.options(stream=True).handle.remote(request)` yielding ResponseStart, bytes...).
    It runs in a thread once the server is up; requests wait for it, /health/ready at most 5 s."""

    def __init__(
        self,
        deploy: Callable[[], Any],
        retryable: tuple[type[BaseException], ...] | None = None,
        busy: tuple[type[BaseException], ...] = (),
        aliases: dict[str, str] | None = None,
        replicas: Callable[[], list[str]] | None = None,
    ) -> None:
        self._deploy = deploy
        self._replicas = replicas  # the live replicas' ids (blocking): calls for every replica reach each
        self.aliases = aliases or {}
        self.handle: Any = None
        self._deployed = asyncio.Event()
        if retryable is None:
            retryable, busy = _ray_errors()
        self.retryable, self.busy = retryable, busy
        # server.DrainingServer reads these, as on homeport's own app; a failed deploy ends the server.
        self.state = SimpleNamespace(drain=Drain(), startup_load=None)
        self._app = DrainMiddleware(self._serve, drain=self.state.drain)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.state.startup_load = asyncio.create_task(self.start())
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    if self.state.startup_load is not None:
                        self.state.startup_load.cancel()
                    return
        await self._app(scope, receive, send)

    async def start(self) -> None:
        """Deploy (in a thread: Ray's calls block) and open the way to the replicas."""
        handle = await asyncio.to_thread(self._deploy)
        self.handle = handle.options(stream=True)
        self._deployed.set()
        log.info("replicas deployed")

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/health":  # liveness: this process answers; readiness asks a replica
            await _json(send, 200, b'{"status":"ok"}')
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client left while sending
        model, key = routing_fields(scope["path"], body)
        request = ForwardedRequest(
            method=scope["method"], path=scope["path"], query=scope.get("query_string", b""),
            headers=list(scope.get("headers", [])), body=body, client=scope.get("client"),
            prompt_key=key, model=self.aliases.get(model, model) if model else None,
            pin=stored_home(scope["path"], body),
        )
        wait = READY_WAIT_S if scope["path"] == "/health/ready" else None
        every = self._replicas is not None and concerns_every_replica(request.method, request.path)
        if every and await self._to_every_replica(request, send):
            return
        await self._forward(scope, request, receive, send, wait)

    async def _to_every_replica(self, request: ForwardedRequest, send: Send) -> bool:
        """One copy of the request to each live replica, one combined answer (broadcast.py); false
        when there is no replica list to go by (the request is then forwarded as any other)."""
        await self._deployed.wait()
        ids = await asyncio.to_thread(self._replicas)
        # Plain bodies to combine (a compressed /metrics could not be merged); the client gets it plain.
        headers = [(k, v) for k, v in request.headers if k.lower() != b"accept-encoding"]
        request = dataclasses.replace(request, headers=headers)

        async def ask(replica: str) -> ResponseStart | None:
            try:
                stream = self.handle.handle.remote(dataclasses.replace(request, pin=replica))
                start = await anext(stream)
                body = start.body + b"".join([chunk async for chunk in stream]) if start.more else start.body
            except Exception as exc:  # noqa: BLE001 - a replica lost meanwhile: the others answer
                log.warning("replica %s did not answer a call for every replica: %s", replica, type(exc).__name__)
                return None
            return dataclasses.replace(start, body=body, more=False)

        answers = [answer for answer in await asyncio.gather(*map(ask, ids)) if answer is not None]
        if not answers:
            return False
        answer = combine(request.path, answers)
        headers = [*answer.headers, (REPLICA_HEADER, answer.replica.encode())]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body, "more_body": False})
        return True

    async def _forward(
        self, scope: Scope, request: ForwardedRequest, receive: Receive, send: Send, wait: float | None
    ) -> None:
        watch = _DisconnectWatch(receive)
        try:
            await self._answer(scope, request, send, wait, watch)
        finally:
            watch.task.cancel()

    async def _answer(
        self, scope: Scope, request: ForwardedRequest, send: Send, wait: float | None, watch: _DisconnectWatch
    ) -> None:
        try:
            await asyncio.wait_for(self._deployed.wait(), wait)
        except TimeoutError:
            pass
        error: HomeportError = ServiceUnavailableError(
            "No model replica can serve this request now.", code="no_replica", headers={"Retry-After": "5"})
        for attempt in range(RETRIES if self._deployed.is_set() else 0):
            stream = watch.stream = self.handle.handle.remote(request)
            try:
                start = await asyncio.wait_for(stream.__anext__(), wait)
            except self.retryable:
                if watch.gone:
                    return
                log.warning("replica lost before answering; retrying (attempt %d)", attempt + 1)
                continue
            except self.busy:
                error = BUSY
                break
            except (TimeoutError, StopAsyncIteration):
                stream.cancel()
                break
            except Exception as exc:  # noqa: BLE001 - the client left (a cancelled call), or the replica's code failed
                if watch.gone:
                    return
                log.error("replica call failed: %s", type(exc).__name__)
                error = INTERNAL_ERROR
                break
            await self._relay(start, stream, send, watch, scope["path"])
            return
        await error_response(error)(scope, _no_receive, send)

    async def _relay(self, start: ResponseStart, stream: Any, send: Send, watch: _DisconnectWatch, path: str) -> None:
        headers = [*start.headers, (REPLICA_HEADER, start.replica.encode())]
        await send({"type": "http.response.start", "status": start.status, "headers": headers})
        await send({"type": "http.response.body", "body": start.body, "more_body": start.more})
        if not start.more:
            return
        sse = any(k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in start.headers)
        end = StreamEnd(path)
        # At the shutdown deadline the drain cancels the relay while it awaits the next chunk (as
        # in api/streaming.py); the replica's call is cancelled and the client told why.
        handle = StreamHandle(current_drain() if sse else None)  # (no drain: never cut)
        last: bytes = b""
        try:
            chunks = aiter(stream)
            while (chunk := await handle.next(chunks)) is not END:
                end.saw(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except asyncio.CancelledError:
            if not handle.took_back_cancel():
                raise
        except Exception as exc:  # noqa: BLE001 - the replica died mid-answer (or the client left: a cancel)
            if watch.gone:
                return
            log.warning("replica %s lost mid-stream: %s", start.replica, type(exc).__name__)
            if sse:
                last = end.frame(ServiceUnavailableError("The model replica serving this stream stopped.",
                                                         code="replica_lost"))
        finally:
            handle.close()
        if handle.cut:
            stream.cancel()  # the replica's generation stops, as on a disconnect
            last = end.frame(server_shutdown_error())
        with contextlib.suppress(Exception):
            if last:
                await send({"type": "http.response.body", "body": last, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class _DisconnectWatch:
    """Waits for the client to leave and then cancels the Serve call in flight: Serve cancels the
    replica's generator, whose app sees the disconnect, so a queued or running generation stops."""

    def __init__(self, receive: Receive) -> None:
        self.stream: Any = None
        self.gone = False
        self.task = asyncio.create_task(self._run(receive))

    async def _run(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self.stream is not None:
            self.stream.cancel()


async def _no_receive() -> dict:
    return {"type": "http.disconnect"}


async def _read_body(receive: Receive) -> bytes | None:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _json(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
