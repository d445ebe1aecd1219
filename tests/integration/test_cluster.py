"""homeport on a real two-node Ray Serve cluster (issue #18), all on loopback.

The cluster (integration/ray_cluster.py): two Ray nodes, 127.0.0.2 (the head) and 127.0.0.3, and
`homeport serve --ray-address ... --replicas 2` on the default model, inside a network namespace
with nothing but `lo` (`unshare -n`), every one under `strace -f` (socket, connect, sendto,
sendmmsg); `homeport serve` places an ingress of its own on the worker too (cluster/node_ingress.py).
Where no network namespace can be made, the strace check still proves that nothing connects or
sends off loopback. One cluster for the whole module; every process it started is killed by
process id at the end.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

pytest.importorskip("ray", reason="the cluster tests need the ray extra (make install-test installs it)")

from integration.ray_cluster import HEAD, WORKER, Cluster, ray_cluster, stream_chat, wait_ready
from support.server import free_port

# A prompt word no log may ever contain.
SECRET = "zanzibar-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with ray_cluster(["--replicas", "2"]) as running:
        yield running


def test_sixteen_concurrent_streams_all_succeed_on_both_replicas(cluster):
    client = cluster.openai()
    prompts = [f"Name a colour, number {i}." for i in range(16)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda p: stream_chat(client, p), prompts))
    assert all(r["error"] is None and r["finish"] in ("stop", "length") for r in results), results
    replicas = {r["replica"] for r in results}
    assert None not in replicas
    assert len(replicas) == 2, replicas


def _history(place: str) -> list[dict]:
    """About 1,000 tokens of chat history about `place` (different from every other test's)."""
    # The place comes first: the two conversations share no prefix beyond the chat template's.
    history = [{"role": "system", "content": f"{place} notes, answered briefly: " + "the tide turns at dawn. " * 115}]
    for turn in range(8):
        history += [{"role": "user", "content": f"What happened on day {turn} at {place}?"},
                    {"role": "assistant", "content": f"On day {turn} three boats came in and one left."}]
    return [*history, {"role": "user", "content": "And on the last day?"}]


def test_a_long_history_sticks_to_one_replica_and_hits_its_prefix_cache(cluster):
    # Two conversations, interleaved 4 times each: were the router not choosing by prefix, both
    # sticking to one replica each by chance would happen once in 64 runs, and the caches would miss.
    histories = {"harbour": _history("Harbour"), "lighthouse": _history("Lighthouse")}
    seen: dict[str, list] = {name: [] for name in histories}
    with cluster.http() as http:
        for _ in range(4):
            for name, history in histories.items():
                response = http.post("/v1/chat/completions", json={"model": "any", "messages": history, "max_tokens": 4})
                assert response.status_code == 200, response.text
                usage = response.json()["usage"]
                seen[name].append((response.headers["x-homeport-replica"], usage["prompt_tokens"],
                                   usage["prompt_tokens_details"]["cached_tokens"]))
    for runs in seen.values():
        assert runs[0][1] >= 900, seen
        assert len({replica for replica, _, _ in runs}) == 1, seen
        assert all(cached > prompt / 2 for _, prompt, cached in runs[1:]), seen  # reuse is in whole chunks


def test_a_stored_response_is_served_by_the_replica_that_holds_it(cluster):
    """Each replica keeps its own store: retrieve, input items, a follow-up turn and delete of a
    stored response all reach the replica that created it (its id names it)."""
    with cluster.http() as http:
        created = http.post("/v1/responses", json={"model": "any", "input": "Say hi.", "max_output_tokens": 4})
        assert created.status_code == 200, created.text
        home, response_id = created.headers["x-homeport-replica"], created.json()["id"]
        calls = [http.get(f"/v1/responses/{response_id}") for _ in range(4)]
        calls.append(http.get(f"/v1/responses/{response_id}/input_items"))
        calls.append(http.post("/v1/responses", json={
            "model": "any", "input": "Again.", "previous_response_id": response_id, "max_output_tokens": 4}))
        calls.append(http.delete(f"/v1/responses/{response_id}"))
    for call in calls:
        assert call.status_code == 200, call.text
        assert call.headers["x-homeport-replica"] == home
    assert calls[0].json()["id"] == response_id


def test_health_and_models_come_from_the_cluster(cluster):
    with cluster.http() as http:
        live, ready, models = http.get("/health"), http.get("/health/ready"), http.get("/v1/models")
    assert live.status_code == 200 and "x-homeport-replica" not in live.headers  # the ingress answers itself
    assert ready.status_code == 200 and ready.headers["x-homeport-replica"]
    assert "SmolLM2-135M-Instruct.Q4_1" in [m["id"] for m in models.json()["data"]]


def test_metrics_and_admin_calls_reach_every_replica(cluster):
    """Calls that concern every replica go to each (cluster/broadcast.py): /metrics is both replicas'
    samples labelled by replica, stop-generation reaches both."""
    names = {stream_chat(cluster.openai(), f"Name a fruit, number {i}.")["replica"] for i in range(6)}
    with cluster.http() as http:
        metrics = http.get("/metrics")
        stopped = http.post("/v1/internal/stop-generation", json={})
    assert stopped.status_code == 200 and len(stopped.headers["x-homeport-replica"].split(",")) == 2
    replicas = set(stopped.headers["x-homeport-replica"].split(","))
    assert names <= replicas  # the replicas that served are the ones asked
    assert metrics.status_code == 200
    labelled = {m.group(1) for m in re.finditer(r'homeport_generation_tokens_total\{replica="([^"]+)"', metrics.text)}
    assert labelled == replicas, metrics.text[:2000]


def test_the_worker_node_serves_the_api_too_through_the_ingress_ray_placed_there(cluster):
    """Nothing was started on the worker by hand: `homeport serve` placed an ingress on it
    (cluster/node_ingress.py) at the same port, serving the same replicas; none on its own node."""
    base_url, uds = cluster.reach(WORKER, cluster.api_port)
    worker = dataclasses.replace(cluster, base_url=base_url, uds=uds)
    serve_log = cluster.tmp / "serve.log"
    wait_ready(worker, cluster.serve, serve_log)
    results = [stream_chat(worker.openai(), f"Say hello number {i}.") for i in range(4)]
    assert all(r["replica"] and r["error"] is None and r["chunks"] and r["finish"] in ("stop", "length")
               for r in results), results
    with worker.http() as http:
        live = http.get("/health")
    assert live.status_code == 200 and "x-homeport-replica" not in live.headers  # it answers itself
    announced = f"ingress on node {WORKER}: http://{WORKER}:{cluster.api_port}/v1"
    deadline = time.monotonic() + 60  # logged at the driver's next look at the nodes (every 10 s)
    while announced not in serve_log.read_text(errors="replace"):
        assert time.monotonic() < deadline, serve_log.read_text()[-3000:]
        time.sleep(1)
    ingresses = [pid for pid, cmd in cluster.processes() if "NodeIngress" in cmd]
    assert len(ingresses) == 1, cluster.processes()  # the worker's; the driver's node has the driver


def test_no_prompt_text_in_any_log(cluster):
    result = stream_chat(cluster.openai(), f"Repeat after me: {SECRET}", max_tokens=4)
    assert result["error"] is None
    time.sleep(1)  # Ray's log monitor copies workers' output into files
    files = [*cluster.logs, *(p for p in (cluster.tmp / "ray").rglob("*") if p.is_file())]
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert files and not leaked, leaked


def test_kill_9_of_a_replica_under_load(cluster):
    client = cluster.openai()
    with cluster.http() as http:
        before = {http.get("/health/ready").headers["x-homeport-replica"] for _ in range(6)}
    pids = cluster.replica_pids()
    assert len(pids) == 2, pids
    # 2 replicas x 2 slots run 4 streams; 4 more wait at the ingress's router.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(stream_chat, client, f"Tell a long story about ship {i}.", 160) for i in range(8)]
        time.sleep(3)  # the first streams are under way
        os.kill(pids[0], signal.SIGKILL)
        results = [f.result(timeout=300) for f in futures]
    for r in results:
        if r["error"] is not None:  # only a stream that had started may fail, and with an error event
            assert r["chunks"] > 0 and r["replica"], r
            assert "replica" in str(r["error"]).lower(), r
        else:
            assert r["finish"] in ("stop", "length"), r
    assert sum(r["error"] is not None for r in results) <= 2, results  # at most its 2 slots' streams
    # Serve replaces the replica (on the node whose CPU it freed); it serves within a bounded time.
    deadline = time.monotonic() + 180
    with cluster.http() as http:
        while True:
            names = {http.get("/health/ready").headers.get("x-homeport-replica") for _ in range(4)}
            if names - before:
                break
            assert time.monotonic() < deadline, f"no replacement replica serves: {names} vs {before}"
            time.sleep(2)


_ADDRESS = re.compile(r'sin_addr=inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')
_CALL = re.compile(r"^(\d+)\s+(socket|connect|sendto|sendmmsg)\((.*)\) = (-?\d+)")


def _loopback(address: str) -> bool:
    return address == "::1" or address.startswith(("127.", "::ffff:127."))


def off_loopback(lines: list[str]) -> tuple[list[str], list[str], int]:
    """(offending calls, route probes, loopback connects) in strace lines of socket, connect, sendto
    and sendmmsg. Offending: a stream connect, or a datagram sent, to an address off loopback. A
    datagram socket connected off loopback that never sends is a route probe (the kernel picks a
    source address, no packet leaves): Ray's C++ core does one to 8.8.8.8:53 to learn its own IP
    when no namespace hides the route."""
    kinds: dict[tuple[str, str], str] = {}  # (pid, fd) -> SOCK_STREAM / SOCK_DGRAM
    probes: dict[tuple[str, str], str] = {}
    offending, loopback = [], 0
    for line in lines:
        call = _CALL.match(line)
        if call is None:
            continue
        pid, name, args, result = call.groups()
        fd = args.split(",", 1)[0]
        if name == "socket":
            kinds[(pid, result)] = "SOCK_DGRAM" if "SOCK_DGRAM" in args else "SOCK_STREAM"
            probes.pop((pid, result), None)
            continue
        addresses = [a or b for a, b in _ADDRESS.findall(args)]
        if name == "connect":
            for address in addresses:
                if _loopback(address):
                    loopback += 1
                elif kinds.get((pid, fd)) == "SOCK_DGRAM":
                    probes[(pid, fd)] = line
                else:
                    offending.append(line)
        elif probes.pop((pid, fd), None) is not None or any(not _loopback(a) for a in addresses):
            offending.append(line)  # a datagram actually sent off loopback
    return offending, list(probes.values()), loopback


def test_the_loopback_check_catches_what_it_should():
    lines = [
        '1    socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC, IPPROTO_TCP) = 5',  # strace pads short pids
        '1 connect(5, {sa_family=AF_INET, sin_port=htons(6379), sin_addr=inet_addr("127.0.0.2")}, 16) = 0',
        '1 socket(AF_INET, SOCK_DGRAM|SOCK_CLOEXEC, IPPROTO_IP) = 6',
        '1 connect(6, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("8.8.8.8")}, 16) = 0',
        '2 socket(AF_INET, SOCK_STREAM, IPPROTO_TCP) = 7',
        '2 connect(7, {sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("192.0.2.9")}, 16) = -1 ENETUNREACH',
        '3 socket(AF_INET, SOCK_DGRAM, IPPROTO_IP) = 8',
        '3 connect(8, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.0.0.53")}, 16) = 0',
        '3 sendto(8, "query", 5, MSG_NOSIGNAL, NULL, 0) = 5',
    ]
    offending, probes, loopback = off_loopback(lines)
    assert loopback == 1 and probes == [lines[3]]
    assert offending == [lines[5], lines[8]]


def test_no_process_connects_anywhere_but_loopback(cluster):
    """Late: by now every path above (nodes joining, replicas starting, requests, a replacement) ran."""
    if not cluster.traces:
        pytest.fail("strace is missing or cannot trace here: apt-get install strace (make install-test does)")
    if cluster.netns:  # the namespace really has no way out
        route = subprocess.run(["nsenter", f"--net=/proc/{cluster.holder_pid}/ns/net", "ip", "route", "get", "192.0.2.1"],
                               capture_output=True, text=True, check=False)
        assert route.returncode != 0, route.stdout
    lines = [f"{path.suffix[1:]} {line}" for trace in cluster.traces for path in trace.parent.glob(trace.name + ".*")
             for line in path.read_text(errors="replace").splitlines()]
    offending, probes, loopback = off_loopback(lines)
    assert loopback > 10, lines[:40]  # the cluster's own traffic was traced
    assert offending == [], offending[:20]
    if cluster.netns:
        assert probes == []  # inside the namespace there is no route to probe


def test_a_second_ingress_on_the_other_node_serves_the_same_replicas(cluster):
    """`--ingress-only` on the worker's address (another port: the worker's own node ingress has
    --api-port): the replicas the first ingress deployed answer it; stopping it leaves them serving."""
    port = cluster.api_port + 1 if cluster.netns else free_port()
    command = [sys.executable, "-m", "homeport", "serve", "--ray-address", f"{HEAD}:{cluster.gcs_port}",
               "--ingress-only", "--listen-host", WORKER, "--api-port", str(port),
               "--user-data-dir", str(cluster.tmp / "user_data_2")]
    second, second_log = cluster.launch("ingress-2", command)
    base_url, uds = cluster.reach(WORKER, port)
    other = dataclasses.replace(cluster, base_url=base_url, uds=uds)
    wait_ready(other, second, second_log)
    results = [stream_chat(other.openai(), f"Say hello number {i}.") for i in range(3)]
    assert all(r["replica"] and r["error"] is None and r["chunks"] for r in results), results
    pids = [pid for pid, cmd in cluster.processes() if "--ingress-only" in cmd and "strace" not in cmd]
    assert len(pids) == 1, cluster.processes()
    os.kill(pids[0], signal.SIGTERM)
    assert second.wait(timeout=90) == 0
    assert len(cluster.replica_pids()) == 2  # not removed: they are the first ingress's
    assert stream_chat(cluster.openai(), "Still there?")["error"] is None


def test_sigterm_drains_the_ingress_and_removes_its_replicas(cluster):
    """Last of all: it ends the ingress (the fixture then kills what is left, by pid)."""
    serve = [pid for pid, cmd in cluster.processes() if " -m homeport serve " in cmd and "strace" not in cmd]
    assert len(serve) == 1, cluster.processes()
    os.kill(serve[0], signal.SIGTERM)
    assert cluster.serve.wait(timeout=90) == 0
    deadline = time.monotonic() + 90
    while cluster.replica_pids() or any("NodeIngress" in cmd for _, cmd in cluster.processes()):
        assert time.monotonic() < deadline, f"replicas or node ingresses outlived their ingress: {cluster.processes()}"
        time.sleep(1)
