"""`homeport serve`: load the model, build the app, run uvicorn."""

from __future__ import annotations

import logging
import os
import socket
import sys

from homeport.errors import HomeportError, StartupError
from homeport.settings import Settings


def configure_logging(debug: bool) -> None:
    """Operational messages only. No access log; prompts and outputs only under OPENEDAI_DEBUG."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("homeport")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    logging.getLogger("homeport.debug").setLevel(logging.INFO if debug else logging.WARNING)


def serve(settings: Settings) -> int:
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may reach a model hub, ever
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars from model loading in the log
    configure_logging(settings.debug)
    log = logging.getLogger("homeport")

    import uvicorn

    from homeport.app import create_app
    from homeport.model_loading import LibraryLoader, load_engine
    from homeport.model_paths import resolve_model

    location = resolve_model(settings)
    # Bind before the slow model load, so a taken port fails at once and clearly.
    listener = bind_listener(settings.bind_host, settings.api_port)
    log.info("loading %s", location.path)
    try:
        engine = load_engine(location, settings, {})
    except HomeportError as exc:  # e.g. a model format no engine serves yet
        raise StartupError(exc.message) from None
    app = create_app(settings, engine, entry=location, loader=LibraryLoader(settings))
    scheme = "https" if settings.ssl_certfile else "http"
    log.info(
        "serving %s (context %d) on %s://%s:%d/v1",
        engine.info.model_id, engine.info.context_length, scheme, settings.bind_host, settings.api_port,
    )
    config = uvicorn.Config(
        app,
        host=settings.bind_host,
        port=settings.api_port,
        access_log=False,
        log_config=None,
        log_level="warning",
        ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        ssl_certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[listener])
    return 0 if server.started else 1


def bind_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    listener.set_inheritable(True)
    return listener
