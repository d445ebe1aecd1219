"""An ingress on every node of the cluster, placed by Ray: `homeport serve --ray-address` (unless
--ingress-only or --no-node-ingress) runs, on each other alive node, what `--ingress-only` runs by
hand: a ClusterIngress attached to the replicas, under uvicorn, at the same --api-port.

Each one is a Ray actor (NodeIngress) pinned to its node, reserving no CPU (the nodes' CPUs are the
replicas'), named `homeport-ingress-<node id>` in homeport's namespace and not detached: it dies
with the `homeport serve` that started it. It binds the driver's wildcard addresses (--listen:
0.0.0.0 and/or ::), the driver's loopback ones on a node off loopback, or else the node's own
Ray address, with the same TLS files (their paths must exist on every node). The API key needs nothing here: the replicas check it, as behind any ingress.
NodeIngresses (a thread in the driver) starts one on every node that has none, nodes joining later
included, and retries a node whose port was taken at a slower pace.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homeport.errors import StartupError

log = logging.getLogger("homeport")

PERIOD_S = 10.0  # how often the driver looks for nodes without an ingress
RETRY_S = (60.0, 600.0)  # a node whose ingress failed: first retry after, and at most between, retries
START_WAIT_S = 300.0  # an ingress not serving by then (its worker never started) counts as failed
_WILDCARDS = frozenset({"0.0.0.0", "::"})


def node_hosts(bind_hosts: tuple[str, ...], node_ip: str) -> list[str]:
    """Where a node's ingress listens: the driver's wildcard addresses as they are (they mean
    "every address of this machine" on any machine); the driver's loopback addresses as they are
    when the node is reached off loopback (the API was asked for on this machine only: each node
    then serves its own local clients, and nothing is opened to the network); else the node's own
    Ray address."""
    wildcards = [host for host in bind_hosts if host.strip("[]") in _WILDCARDS]
    if wildcards:
        return wildcards
    if all(_loopback(host) for host in bind_hosts) and not _loopback(node_ip):
        return list(bind_hosts)
    return [node_ip]


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def actor_name(node_id: str) -> str:
    return f"homeport-ingress-{node_id[:12]}"


class NodeIngress:
    """One node's ingress (a Ray actor). Binding happens here, so a taken port is known at once;
    `ready` reports it, or the URLs once uvicorn serves."""

    def __init__(self, node_ip: str, hosts: list[str], port: int, options: dict[str, Any]) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"

        from homeport.cluster.broadcast import ray_replicas
        from homeport.cluster.ingress import ClusterIngress
        from homeport.cluster.launch import APP_NAME, DEPLOYMENT_NAME, attach, ingress_config
        from homeport.server import DrainingServer, _url_host, bind_listeners, configure_logging

        configure_logging(bool(options.get("debug")))
        self.error: str | None = None
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self._draining = False
        cert, key = options.get("ssl_certfile"), options.get("ssl_keyfile")
        try:
            for label, path in (("certificate", cert), ("key", key)):
                if path is not None and not Path(path).is_file():
                    raise StartupError(f"TLS {label} file not found on this node: {path}")
            listeners = bind_listeners(tuple(hosts), port)
        except StartupError as exc:
            self.error = str(exc)
            return
        ingress = ClusterIngress(attach, aliases=options.get("model_aliases") or {},
                                 replicas=ray_replicas(APP_NAME, DEPLOYMENT_NAME))
        config = ingress_config(ingress, hosts[0], port, cert, key)
        try:
            config.load()  # TLS files that are there but unusable fail here, not on the first handshake
        except Exception as exc:  # noqa: BLE001 - ssl.SSLError, OSError: reported through `ready`
            self.error = f"cannot serve TLS with {cert} and {key}: {type(exc).__name__}"
            for sock in listeners:
                sock.close()
            return
        scheme = "https" if cert else "http"
        where = f"[{node_ip}]" if ":" in node_ip else node_ip
        # A wildcard's URL names the node's address: that is where clients reach it.
        hosts_seen = [where if sock.getsockname()[0] in _WILDCARDS else _url_host(sock) for sock in listeners]
        self.urls = [f"{scheme}://{host}:{port}/v1" for host in dict.fromkeys(hosts_seen)]
        # A thread of its own: uvicorn runs its loop there; the actor's methods stay callable.
        self.server = DrainingServer(config, ingress.state.drain, float(options.get("shutdown_timeout", 30.0)))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": listeners},
                                       name="homeport-node-ingress", daemon=True)
        self.thread.start()

    def ready(self) -> list[str] | None:
        """The URLs once uvicorn serves; None while it is still starting; a StartupError saying
        why when it cannot serve (the port taken, TLS files missing, the server ended)."""
        if self.error is not None:
            raise StartupError(self.error)
        if not self.thread.is_alive():
            raise StartupError(self.server.startup_error or "the node's ingress stopped")
        return self.urls if self.server.started else None

    def drain(self) -> None:
        """What SIGTERM does to an ingress: new requests 503, running ones get the shutdown
        timeout, then the server ends. Returns when it has."""
        if self.thread is None or not self.thread.is_alive():
            return
        if not self._draining:  # a second call would force the exit, as a second signal does
            self._draining = True
            self.server.handle_exit(signal.SIGTERM, None)
        self.thread.join()


@dataclass
class _Entry:
    actor: Any
    ref: Any  # the last ready() call, answered by the next round
    since: float
    serving: bool = False


class NodeIngresses:
    """The driver's side: a daemon thread that keeps one NodeIngress on every alive node but its
    own, and asks each every round whether it still serves (one that stopped is replaced)."""

    def __init__(self, bind_hosts: tuple[str, ...], port: int, options: dict[str, Any]) -> None:
        self.bind_hosts, self.port, self.options = bind_hosts, port, options
        self.entries: dict[str, _Entry] = {}  # node id -> its ingress
        self._retry: dict[str, tuple[float, float]] = {}  # node id -> (not before, next pause)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="homeport-node-ingresses", daemon=True)
        self._own_node = ""
        self._closer: threading.Thread | None = None

    def start(self) -> None:
        import ray

        self._own_node = ray.get_runtime_context().get_node_id()
        self._thread.start()

    def begin_close(self, timeout: float) -> None:
        """Start draining every node's ingress, in a thread (safe from the event loop): they get
        the same time as the driver's, from the same moment."""
        with self._lock:
            if self._closer is None:
                self._stop.set()
                self._closer = threading.Thread(target=self._close, args=(timeout,), name="homeport-node-drain",
                                                daemon=True)
                self._closer.start()

    def close(self, timeout: float) -> None:
        """Drain every node's ingress (together, at most `timeout` + a margin), then kill them."""
        self.begin_close(timeout)
        if self._closer is not None:
            self._closer.join()

    def _close(self, timeout: float) -> None:
        import ray

        if self._thread.is_alive():
            self._thread.join(timeout=30)
        with self._lock:
            actors = [entry.actor for entry in self.entries.values()]
            self.entries.clear()
        if actors:
            drains = [actor.drain.remote() for actor in actors]
            ray.wait(drains, num_returns=len(drains), timeout=timeout + 10)
        for actor in actors:
            _kill(actor)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._round()
            except Exception as exc:  # noqa: BLE001 - e.g. the head briefly unreachable: next round
                log.warning("could not check the nodes' ingresses: %s", type(exc).__name__)
            self._stop.wait(PERIOD_S)

    def _round(self) -> None:
        import ray

        nodes = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()
                 if node.get("Alive") and node["NodeID"] != self._own_node}
        with self._lock:
            for node_id in [n for n in self.entries if n not in nodes]:
                del self.entries[node_id]  # the node left; its actor went with it
            for node_id, address in nodes.items():
                if node_id in self.entries or self._stop.is_set():
                    continue
                if time.monotonic() < self._retry.get(node_id, (0.0, 0.0))[0]:
                    continue
                actor = self._create(node_id, address)
                if actor is not None:
                    self.entries[node_id] = _Entry(actor, actor.ready.remote(), time.monotonic())
            entries = dict(self.entries)
        for node_id, entry in entries.items():
            self._check(node_id, nodes[node_id], entry)

    def _create(self, node_id: str, address: str) -> Any:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from homeport.cluster.launch import NAMESPACE

        try:
            return _actor_class().options(
                name=actor_name(node_id), namespace=NAMESPACE, num_cpus=0, max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(address, node_hosts(self.bind_hosts, address), self.port, self.options)
        except ValueError as exc:  # e.g. the name is taken: an ingress of an earlier run, still going away
            self._failed(node_id, address, str(exc).splitlines()[0] if str(exc) else "its name is taken")
            return None

    def _check(self, node_id: str, address: str, entry: _Entry) -> None:
        import ray

        done, _ = ray.wait([entry.ref], timeout=0)
        if not done:
            if not entry.serving and time.monotonic() - entry.since > START_WAIT_S:
                self._drop(node_id, address, entry, f"not serving after {START_WAIT_S:.0f} s")
            return
        try:
            urls = ray.get(entry.ref)
        except Exception as exc:  # noqa: BLE001 - a RayTaskError around the StartupError, or the actor died
            cause = getattr(exc, "cause", None)
            self._drop(node_id, address, entry, str(cause) if isinstance(cause, StartupError) else type(exc).__name__)
            return
        if urls is not None and not entry.serving:
            entry.serving = True
            self._retry.pop(node_id, None)
            for url in urls:
                log.info("ingress on node %s: %s", address, url)
        if not self._stop.is_set():
            entry.ref = entry.actor.ready.remote()

    def _drop(self, node_id: str, address: str, entry: _Entry, reason: str) -> None:
        with self._lock:
            if self.entries.get(node_id) is entry:
                del self.entries[node_id]
        _kill(entry.actor)  # frees its name for the retry
        self._failed(node_id, address, reason)

    def _failed(self, node_id: str, address: str, reason: str) -> None:
        pause = self._retry.get(node_id, (0.0, RETRY_S[0]))[1]
        self._retry[node_id] = (time.monotonic() + pause, min(pause * 2, RETRY_S[1]))
        log.warning("no ingress on node %s: %s; retrying in %.0f s", address, reason, pause)


@functools.cache
def _actor_class() -> Any:
    import ray

    return ray.remote(NodeIngress)


def _kill(actor: Any) -> None:
    import ray

    try:
        ray.kill(actor)
    except Exception:  # noqa: BLE001,S110 - its node or the cluster is gone already
        pass
