"""Serve's autoscaler on a real two-node Ray cluster (issue #18): `homeport serve --ray-address ...
--min-replicas 1 --max-replicas 2 --target-ongoing-requests 1` starts with one replica, sustained
load brings a second one that serves too, and once the load stops it goes again.

The cluster is integration/ray_cluster.py's (loopback only, in a network namespace where one can be
made), without strace and without the worker's node ingress: this module checks scaling only
(test_cluster.py checks the rest). Short autoscaling delays (--autoscale-upscale-delay,
--autoscale-downscale-delay; Serve's defaults are 30 s and 600 s) keep it to a few minutes.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

pytest.importorskip("ray", reason="the cluster tests need the ray extra (make install-test installs it)")

from integration.ray_cluster import Cluster, ray_cluster, stream_chat

SCALE_S = 150  # Serve's metrics reach its controller every 10 s; a new replica loads the model first


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    flags = ["--min-replicas", "1", "--max-replicas", "2", "--target-ongoing-requests", "1",
             "--autoscale-upscale-delay", "2", "--autoscale-downscale-delay", "5", "--no-node-ingress"]
    with ray_cluster(flags, trace=False) as running:
        yield running


def _story(client) -> dict:
    # A different first word each time: the prefix-affinity router holds no favourite for any.
    return stream_chat(client, f"{uuid.uuid4().hex[:8]}: tell a long story about a ship.", max_tokens=160)


def test_load_adds_a_second_replica_that_serves_and_it_goes_once_the_load_stops(cluster):
    assert len(cluster.replica_pids()) == 1, cluster.processes()  # min_replicas: one to start with
    client = cluster.openai()
    stop, served = threading.Event(), []

    def load() -> None:
        while not stop.is_set():
            served.append(_story(client))

    # 4 streams against a target of 1 per replica (2 slots each): Serve wants 4, max_replicas caps it at 2.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        streams = [pool.submit(load) for _ in range(4)]
        deadline = time.monotonic() + SCALE_S
        try:
            while len(pids := cluster.replica_pids()) < 2 or len({r["replica"] for r in served} - {None}) < 2:
                assert len(pids) <= 2, cluster.processes()  # max_replicas: never a third
                assert time.monotonic() < deadline, (pids, {r["replica"] for r in served})
                assert not any(s.done() for s in streams), [s.exception() for s in streams if s.done()]
                time.sleep(1)
        finally:
            stop.set()
        for s in streams:
            s.result(timeout=300)
    assert all(r["replica"] and r["error"] is None and r["finish"] in ("stop", "length") for r in served), served

    # No load: after the downscale delay Serve removes one replica, and the other serves on.
    deadline = time.monotonic() + SCALE_S
    while len(cluster.replica_pids()) > 1:
        assert time.monotonic() < deadline, cluster.replica_pids()
        time.sleep(1)
    after = [stream_chat(client, f"Say hello number {i}.") for i in range(3)]
    assert all(r["error"] is None and r["finish"] in ("stop", "length") for r in after), after
    assert len({r["replica"] for r in after}) == 1, after
    assert len(cluster.replica_pids()) == 1  # min_replicas: the last one stays
