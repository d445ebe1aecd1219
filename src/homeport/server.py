"""`homeport serve`: bind, build the app, run uvicorn (the model loads meanwhile), drain on SIGTERM / Ctrl-C."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

import uvicorn

from homeport.errors import HomeportError, StartupError
from homeport.settings import Settings

if TYPE_CHECKING:
    from homeport.api.drain import Drain

# uvicorn's own limit once our drain is over: cut requests end within milliseconds.
_UVICORN_GRACE_S = 5


def configure_logging(debug: bool) -> None:
    """Operational messages only. No access log; prompts and outputs only under OPENEDAI_DEBUG."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("homeport")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    logging.getLogger("homeport.debug").setLevel(logging.INFO if debug else logging.WARNING)
    # Lines meant for people and scripts alike (`homeport: listening on ...`), in the log as one line.
    plain = logging.StreamHandler(sys.stderr)
    plain.setFormatter(logging.Formatter("homeport: %(message)s"))
    announce = logging.getLogger("homeport.announce")
    announce.handlers[:] = [plain]
    announce.propagate = False


def serve(settings: Settings) -> int:
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may reach a model hub, ever
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars from model loading in the log
    configure_logging(settings.debug)
    log = logging.getLogger("homeport")
    if settings.ray_address is not None:  # the model replicas run on a Ray Serve cluster
        from homeport.cluster.launch import serve_cluster

        return serve_cluster(settings)

    from homeport.app import create_app
    from homeport.registry.loading import LibraryLoader
    from homeport.registry.library import ModelLibrary, packaged_models, resolve_model
    from homeport.tunnel import Tunnel, find_cloudflared

    cloudflared = find_cloudflared(settings) if settings.public_api else None
    location = resolve_model(settings)
    # Bind before the slow model load, so a taken port fails at once and clearly.
    listeners = bind_listeners(settings.bind_hosts, settings.api_port)
    port = listeners[0].getsockname()[1]
    library = ModelLibrary(settings.model_dir, extra=packaged_models())  # the packaged models are on offer too
    # The default model loads once the server answers: /health is live at once, /health/ready
    # (and every request for the model) waits for the load; a load that fails ends the process.
    app = create_app(settings, None, entry=location, loader=LibraryLoader(settings), model_library=library)
    scheme = "https" if settings.ssl_certfile else "http"
    urls = [f"{scheme}://{_url_host(sock)}:{port}/v1" for sock in listeners]
    log.info("serving %s on %s", location.id, ", ".join(urls))
    announce = logging.getLogger("homeport.announce")
    for url in urls:
        announce.info("listening on %s", url)
    config = uvicorn.Config(
        app,
        host=settings.bind_hosts[0],
        port=port,
        access_log=False,
        log_config=None,
        log_level="warning",
        ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        ssl_certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        timeout_graceful_shutdown=_UVICORN_GRACE_S,
    )
    server = DrainingServer(config, app.state.drain, settings.shutdown_timeout)
    tunnel = Tunnel.start(settings, cloudflared, _origin(listeners)) if cloudflared is not None else None
    if tunnel is not None:
        server.on_force_exit.append(tunnel.process.kill)
    try:
        server.run(sockets=listeners)
    finally:
        if tunnel is not None:  # only now: requests through the tunnel drained with the rest
            tunnel.stop()
    if server.startup_error is not None:
        raise StartupError(server.startup_error)
    return 0 if server.started else 1


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain first: the first SIGTERM / Ctrl-C runs `Drain.run` (new
    requests 503, running ones get `timeout` seconds, the rest are cut) and only then lets uvicorn
    close the listeners, connections and lifespan (models unload); exit status 0. A second one
    exits at once with status 1."""

    def __init__(self, config: uvicorn.Config, drain: Drain, timeout: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.timeout = timeout
        self.on_force_exit: list[Callable[[], None]] = []  # e.g. kill the tunnel
        self._signalled = False
        self._drain_task: asyncio.Task | None = None
        self.startup_error: str | None = None  # why the start-up model could not load

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in `_captured_signals`: uvicorn would raise it again after serving, and
        # SIGTERM's default action would turn a clean shutdown into death by signal.
        if not self.started:  # still starting: nothing to drain
            self.should_exit = True
        elif self._signalled:
            self.force_exit_now()
        self._signalled = True

    def force_exit_now(self) -> NoReturn:
        """The second signal: exit at once. uvicorn's own forced exit cancels every task and
        logs a traceback for each; nothing is left to save, so skip all that."""
        for callback in self.on_force_exit:
            callback()
        os.write(2, b"homeport: forced exit: running requests were dropped\n")  # no logging in a signal handler
        os._exit(1)

    async def on_tick(self, counter: int) -> bool:
        # Signal handlers must not touch the loop; the 0.1 s tick starts the drain instead.
        if self._signalled and self.started and self._drain_task is None and not self.should_exit:
            self._drain_task = asyncio.create_task(self.drain.run(self.timeout))
        if self._drain_task is not None and self._drain_task.done():
            self.should_exit = True
        self._check_startup_load()
        return await super().on_tick(counter)

    def _check_startup_load(self) -> None:
        load = getattr(getattr(self.config.app, "state", None), "startup_load", None)
        if self.startup_error is None and load is not None and load.done() and not load.cancelled():
            exc = load.exception()
            if exc is not None:  # e.g. a corrupt file: nothing to serve, so stop (exit status 1)
                self.startup_error = exc.message if isinstance(exc, HomeportError) else str(exc) or type(exc).__name__
                self.should_exit = True


def bind_listeners(hosts: tuple[str, ...], port: int) -> list[socket.socket]:
    """One listening socket per address, all on one port; port 0 picks a free one on the first
    address and reuses it for the others (retried if another address has it taken)."""
    if not hosts:
        raise StartupError(
            "no address to listen on: enable IPv6 or IPv4 (--api-disable-ipv4 without --api-enable-ipv6)"
        )
    for _ in range(5 if port == 0 and len(hosts) > 1 else 1):
        listeners: list[socket.socket] = []
        chosen = port
        try:
            for host in hosts:
                listeners.append(bind_listener(host, chosen, retry_taken=port == 0))
                chosen = listeners[0].getsockname()[1]
        except _PortTaken:
            for sock in listeners:
                sock.close()
            continue
        return listeners
    raise StartupError(f"cannot find one free port for all of {', '.join(hosts)}")


class _PortTaken(Exception):
    pass


def bind_listener(host: str, port: int, *, retry_taken: bool = False) -> socket.socket:
    host = host.strip("[]")  # `--listen-host [::1]` is how URLs write it
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host}: {exc.strerror or exc}") from None
    where = f"[{host}]" if ":" in host else host
    try:
        listener = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:  # e.g. IPv6 switched off in the kernel
        raise StartupError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        if family == socket.AF_INET6:
            # IPv6 only, so [::] and 0.0.0.0 (or [::1] and 127.0.0.1) can share the port.
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        listener.bind(address)
    except OSError as exc:
        listener.close()
        if retry_taken and exc.errno == errno.EADDRINUSE:
            raise _PortTaken from None
        raise StartupError(f"cannot listen on {where}:{port}: {exc.strerror or exc}") from None
    listener.set_inheritable(True)
    return listener


def _origin(listeners: list[socket.socket]) -> str:
    """host:port for cloudflared to reach us by: a loopback address where one is bound."""
    def reachable(sock: socket.socket) -> str:
        host = sock.getsockname()[0]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        return f"[{host}]" if ":" in host else host

    hosts = [reachable(sock) for sock in listeners]
    preferred = [host for host in ("127.0.0.1", "[::1]") if host in hosts]
    return f"{(preferred or hosts)[0]}:{listeners[0].getsockname()[1]}"


def _url_host(sock: socket.socket) -> str:
    host = sock.getsockname()[0]
    return f"[{host}]" if sock.family == socket.AF_INET6 else host
