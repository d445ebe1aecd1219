"""`homeport serve --ray-address ADDR`: keep Ray offline, connect (or start a private one-node
cluster for `local`), deploy the model replicas, and serve the ingress with homeport's own
listeners, drain and signals (server.py). The replicas are deployed while the ingress already
answers: /health is live at once, /health/ready is 503 until a replica serves the default model.
Every other node of the cluster gets an ingress of its own (node_ingress.py) unless --no-node-ingress."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

from homeport.cluster import privacy
from homeport.errors import StartupError
from homeport.server import DrainingServer
from homeport.settings import Settings

log = logging.getLogger("homeport")

APP_NAME = "homeport"
DEPLOYMENT_NAME = "models"
NAMESPACE = "homeport"
_PATH_FIELDS = ("model_dir", "user_data_dir", "state_db")


def absolute(path: str | Path | None) -> str | None:
    """A path as another process on the cluster must see it (its working directory is not ours)."""
    return str(Path(path).expanduser().resolve()) if path is not None else None


def ingress_config(app: Any, host: str, port: int, ssl_certfile: str | None, ssl_keyfile: str | None) -> Any:
    """uvicorn's config for an ingress (the driver's and each node's): no access log, homeport's logging."""
    import uvicorn

    from homeport.server import _UVICORN_GRACE_S

    return uvicorn.Config(app, host=host, port=port, access_log=False, log_config=None, log_level="warning",
                          ssl_keyfile=ssl_keyfile, ssl_certfile=ssl_certfile, timeout_graceful_shutdown=_UVICORN_GRACE_S)


def replica_settings(settings: Settings) -> dict[str, Any]:
    """The Settings a replica builds its app from: the ingress's, with paths made absolute (a Ray
    worker's working directory is not ours) and the ingress-only fields cleared."""
    values = settings.model_dump()
    for name in _PATH_FIELDS:
        values[name] = absolute(values.get(name))
    model = values.get("model")
    if model and Path(model).expanduser().is_file():
        values["model"] = absolute(model)
    for name in ("ray_address", "ssl_keyfile", "ssl_certfile", "public_api", "public_api_id", "cloudflared"):
        values.pop(name, None)
    return values


def deployment_options(settings: Settings) -> dict[str, Any]:
    """Serve's options for the replicas. `max_ongoing_requests` is the engine's slot count: Serve's
    default of 5 would hold streams back, a larger one would hide a replica's queue from the router."""
    from ray.serve.config import RequestRouterConfig

    from homeport.cluster.router import ROUTER_PATH

    slots = int(getattr(settings, "parallel", 8) or 8)
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": slots,
        "max_queued_requests": max(settings.max_queue, 1),  # Serve's least is 1 (0 means "none" here)
        "ray_actor_options": {"num_cpus": settings.replica_cpus},
        "graceful_shutdown_timeout_s": settings.shutdown_timeout,
        "health_check_period_s": 5,
        "logging_config": {"enable_access_log": False},  # Serve logs no arguments; no access lines either
        # Routing stats (each replica's loaded models) every 2 s instead of Serve's 10.
        "request_router_config": RequestRouterConfig(request_router_class=ROUTER_PATH,
                                                     request_routing_stats_period_s=2),
    }
    if settings.min_replicas is not None or settings.max_replicas is not None:
        low = settings.min_replicas if settings.min_replicas is not None else 1
        options["autoscaling_config"] = {
            "min_replicas": low,
            "initial_replicas": max(low, 1),
            "max_replicas": settings.max_replicas if settings.max_replicas is not None else max(low, settings.replicas),
            "target_ongoing_requests": settings.target_ongoing_requests,
            "upscale_delay_s": settings.autoscale_upscale_delay,
            "downscale_delay_s": settings.autoscale_downscale_delay,
        }
    else:
        options["num_replicas"] = settings.replicas
    return options


def connect(settings: Settings) -> None:
    """ray.init on the cluster (`local`: a private one-node cluster on 127.0.0.1)."""
    address = settings.ray_address
    privacy.apply([address] if address and address != "local" else [])
    try:
        import ray
    except ImportError:
        raise StartupError("--ray-address needs Ray: pip install 'homeport[ray]'") from None
    common = {"namespace": NAMESPACE, "log_to_driver": settings.debug, "logging_level": logging.WARNING}
    try:
        if address == "local":
            os.environ.setdefault(privacy.TOKEN_VARIABLE, privacy.new_token())  # never written to ~/.ray
            ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", **common)
        else:
            _reachable(address)
            ray.init(address=address, **common)
    except Exception as exc:  # noqa: BLE001 - Ray's errors: connection refused, a wrong or missing token, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(f"cannot join the Ray cluster at {address}: {reason}") from None


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on a head nobody answers at (ray.init would retry for minutes). `auto` and
    Ray Client addresses (`ray://...`) are left to Ray."""
    if address == "auto" or "://" in address:
        return
    if address.startswith("["):  # [::1]:6379
        host, _, rest = address[1:].partition("]")
        port = rest.lstrip(":")
    elif address.count(":") == 1:
        host, port = address.split(":")
    else:
        host, port = address, ""
    try:
        with socket.create_connection((host, int(port or 6379)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise StartupError(f"cannot reach the Ray cluster's head at {address}: {reason}") from None


def deploy(settings: Settings) -> Any:
    """Deploy (or update) the replicas; returns their handle once at least one serves."""
    from ray import serve

    from homeport.cluster.replica import ModelReplica

    serve.start(proxy_location="Disabled")  # homeport's ingress is the only HTTP entry
    app = serve.deployment(ModelReplica, **deployment_options(settings)).bind(replica_settings(settings))
    return serve.run(app, name=APP_NAME, route_prefix=None)


def attach(timeout: float = 600.0) -> Any:
    """The handle of the replicas another `homeport serve --ray-address` deployed (`--ingress-only`),
    waiting for them while they are still being deployed."""
    import time

    from ray import serve
    from ray.serve.exceptions import RayServeException

    deadline = time.monotonic() + timeout
    while True:
        try:
            return serve.get_deployment_handle(DEPLOYMENT_NAME, app_name=APP_NAME, _record_telemetry=False)
        except (RayServeException, KeyError, ValueError):
            if time.monotonic() > deadline:
                raise StartupError("no homeport replicas on this Ray cluster: start `homeport serve --ray-address` "
                                   "without --ingress-only first") from None
            time.sleep(1)


def serve_cluster(settings: Settings) -> int:
    from homeport.cluster.broadcast import ray_replicas
    from homeport.cluster.ingress import ClusterIngress
    from homeport.registry.library import resolve_model
    from homeport.server import _url_host, bind_listeners

    if settings.public_api:
        raise StartupError("--public-api does not work with --ray-address yet: run cloudflared to the ingress's port")
    location = resolve_model(settings)  # a missing model fails here, before any cluster work
    listeners = bind_listeners(settings.bind_hosts, settings.api_port)
    connect(settings)
    import ray
    from ray import serve

    ingress = ClusterIngress(attach if settings.ingress_only else lambda: deploy(settings),
                             aliases=settings.model_aliases, replicas=ray_replicas(APP_NAME, DEPLOYMENT_NAME))
    port = listeners[0].getsockname()[1]
    scheme = "https" if settings.ssl_certfile else "http"
    urls = [f"{scheme}://{_url_host(sock)}:{port}/v1" for sock in listeners]
    log.info("serving %s on %s through the Ray cluster at %s", location.id, ", ".join(urls), settings.ray_address)
    for url in urls:
        logging.getLogger("homeport.announce").info("listening on %s", url)
    config = ingress_config(ingress, settings.bind_hosts[0], port, absolute(settings.ssl_certfile),
                            absolute(settings.ssl_keyfile))
    nodes = None
    try:
        nodes = _node_ingresses(settings, port)
        server = _ClusterServer(config, ingress.state.drain, settings.shutdown_timeout, nodes)
        server.run(sockets=listeners)
    finally:
        if nodes is not None:
            nodes.close(settings.shutdown_timeout)  # before the replicas go: their streams drain first
        try:
            if not settings.ingress_only:
                serve.delete(APP_NAME)  # the replicas live as long as the process that deployed them
        except Exception as exc:  # noqa: BLE001 - the cluster may be gone already
            log.warning("could not remove the replicas: %s", type(exc).__name__)
        ray.shutdown()
    if server.startup_error is not None:
        raise StartupError(server.startup_error)
    return 0 if server.started else 1


def _node_ingresses(settings: Settings, port: int) -> Any:
    """An ingress on every other node (cluster/node_ingress.py), unless this is one of those
    (--ingress-only) or they are turned off (--no-node-ingress); None then."""
    if settings.ingress_only or not settings.node_ingress:
        return None
    from homeport.cluster.node_ingress import NodeIngresses

    options = {"ssl_certfile": absolute(settings.ssl_certfile), "ssl_keyfile": absolute(settings.ssl_keyfile),
               "model_aliases": dict(settings.model_aliases), "shutdown_timeout": settings.shutdown_timeout,
               "debug": settings.debug}
    nodes = NodeIngresses(settings.bind_hosts, port, options)
    nodes.start()
    return nodes


class _ClusterServer(DrainingServer):
    """The driver's server: when its drain starts, every node's ingress starts draining too."""

    def __init__(self, config: Any, drain: Any, timeout: float, nodes: Any) -> None:
        super().__init__(config, drain, timeout)
        self.nodes = nodes

    async def on_tick(self, counter: int) -> bool:
        if self.nodes is not None and self.drain.draining:
            self.nodes.begin_close(self.timeout)
            self.nodes = None
        return await super().on_tick(counter)
