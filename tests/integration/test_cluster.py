"""homeport on a real two-node Ray Serve cluster (issue #18), all on loopback.

Two Ray nodes, 127.0.0.2 (the head) and 127.0.0.3, and `homeport serve --ray-address ... --replicas 2`
on the default model run inside a network namespace with nothing but `lo` (`unshare -n`), every
one under `strace -f` (socket, connect, sendto, sendmmsg); `homeport serve` places an ingress of its
own on the worker too (cluster/node_ingress.py). The test process outside reaches an
ingress through a Unix socket (those cross network namespaces) that a small forwarder inside relays
to TCP. Where a network namespace cannot be made (or with HOMEPORT_TEST_NO_NETNS=1), the same
cluster runs on the host's loopback and the strace check still proves that nothing connects or
sends off loopback. One cluster for the whole module; every process it started is killed by
process id at the end (found by its session, and by the namespace).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

pytest.importorskip("ray", reason="the cluster tests need the ray extra (make install-test installs it)")

from homeport.cluster.privacy import new_token, ray_environment
from support.server import free_port

HEAD, WORKER = "127.0.0.2", "127.0.0.3"
RAY = str(Path(sys.executable).with_name("ray"))
READY_S = 300  # two Ray nodes and two replicas loading the model, on 2 busy cores
# A prompt word no log may ever contain.
SECRET = "zanzibar-" + uuid.uuid4().hex[:8]

FORWARDER = r"""
import asyncio, sys
path, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()
async def handle(reader, writer):
    try:
        up_reader, up_writer = await asyncio.open_connection(host, port)
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
async def main():
    server = await asyncio.start_unix_server(handle, path)
    print("forwarding", flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


@dataclass
class Cluster:
    tmp: Path
    sessions: set[int]
    netns_id: str | None
    base_url: str
    uds: str | None
    netns: bool
    holder_pid: int | None
    serve: subprocess.Popen  # strace (or nsenter) around `homeport serve`: it exits with its status
    traces: list[Path] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    gcs_port: int = 0
    api_port: int = 0
    # (name, command) → the process, inside the namespace (traced); (host, port) → (base URL, UDS)
    launch: Callable[[str, list[str]], tuple[subprocess.Popen, Path]] | None = None
    reach: Callable[[str, int], tuple[str, str | None]] | None = None

    def http(self, timeout: float = 120) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=self.uds) if self.uds else None
        return httpx.Client(base_url=self.base_url, transport=transport, timeout=timeout)

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key="unused", max_retries=0,
                             http_client=self.http())

    def processes(self) -> list[tuple[int, str]]:
        return _ours(self.sessions, self.netns_id)

    def replica_pids(self) -> list[int]:
        return [pid for pid, cmd in self.processes() if "ServeReplica:homeport:models" in cmd]


def _ours(sessions: set[int], netns: str | None) -> list[tuple[int, str]]:
    """(pid, command line) of every process the fixture started: each command runs in a session of
    its own and Ray's processes stay in it; inside the namespace, everything there counts too."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            mine = os.getsid(pid) in sessions or (netns is not None and os.readlink(entry / "ns/net") == netns)
            if mine and pid != os.getpid():
                found.append((pid, (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")))
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _namespace() -> subprocess.Popen | None:
    """A process holding a network namespace with only `lo`, up; None where none can be made
    (or under HOMEPORT_TEST_NO_NETNS=1, to try the fallback)."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None or os.environ.get("HOMEPORT_TEST_NO_NETNS"):
        return None
    holder = subprocess.Popen(["unshare", "-n", "--", "sh", "-c", "ip link set lo up && echo up && exec sleep 7200"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if holder.stdout.readline().strip() != "up":
        holder.kill()
        holder.wait()
        return None
    return holder


def _wait_for_text(path: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[-3:]} exited with {process.returncode}:\n{path.read_text()[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {text!r}:\n{path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    tmp = Path(tempfile.mkdtemp(prefix="hpray-", dir="/tmp"))  # Ray's socket paths must stay short
    holder = _namespace()
    netns = holder is not None
    netns_id = os.readlink(f"/proc/{holder.pid}/ns/net") if holder else None
    sessions: set[int] = set()
    enter = ["nsenter", f"--net=/proc/{holder.pid}/ns/net", "--"] if netns else []
    strace = shutil.which("strace")
    if strace and subprocess.run([strace, "-f", "-qq", "-o", "/dev/null", "true"], check=False).returncode != 0:
        strace = None  # no ptrace here (a locked-down container): the loopback test fails and says so
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENEDAI_")}
    env.update(ray_environment([HEAD, WORKER], new_token()))
    gcs_port = 6379 if netns else free_port()
    api_port = 8000 if netns else free_port()
    processes: list[subprocess.Popen] = []
    traces: list[Path] = []
    logs: list[Path] = []

    def start(name: str, command: list[str]) -> tuple[subprocess.Popen, Path]:
        log = tmp / f"{name}.log"
        traced = command
        if strace:
            trace = tmp / f"{name}.trace"
            traces.append(trace)
            # -ff: one file per process (trace.PID), so no call is split by another thread's.
            traced = [strace, "-ff", "-qq", "--seccomp-bpf", "-e", "trace=socket,connect,sendto,sendmmsg",
                      "-o", str(trace), *command]
        logs.append(log)
        process = subprocess.Popen([*enter, *traced], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                                   cwd=tmp, start_new_session=True)
        processes.append(process)
        sessions.add(process.pid)
        return process, log

    node = ["--num-cpus", "1", "--object-store-memory", str(100 * 2**20), "--disable-usage-stats", "--block"]
    try:
        head, head_log = start("head", [RAY, "start", "--head", "--node-ip-address", HEAD, "--port", str(gcs_port),
                                        "--include-dashboard=false", "--temp-dir", str(tmp / "ray"), *node])
        _wait_for_text(head_log, "Ray runtime started", head, READY_S)
        worker, worker_log = start("worker", [RAY, "start", "--address", f"{HEAD}:{gcs_port}",
                                              "--node-ip-address", WORKER, *node])
        _wait_for_text(worker_log, "Ray runtime started", worker, READY_S)
        serve, serve_log = start("serve", [
            sys.executable, "-m", "homeport", "serve", "--ray-address", f"{HEAD}:{gcs_port}", "--replicas", "2",
            "--threads", "1", "--parallel", "2", "--listen-host", HEAD, "--api-port", str(api_port),
            "--user-data-dir", str(tmp / "user_data"),
        ])

        def reach(host: str, port: int) -> tuple[str, str | None]:
            """How the test reaches an ingress: in the namespace, through a Unix socket forwarder."""
            if not netns:
                return f"http://{host}:{port}", None
            uds = str(tmp / f"ingress-{host}-{port}.sock")
            forwarder = subprocess.Popen([*enter, sys.executable, "-c", FORWARDER, uds, host, str(port)],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
                                         start_new_session=True)
            processes.append(forwarder)
            sessions.add(forwarder.pid)
            assert forwarder.stdout.readline().strip() == "forwarding"
            return f"http://{host}:{port}", uds

        base_url, uds = reach(HEAD, api_port)
        running = Cluster(tmp, sessions, netns_id, base_url, uds, netns, holder.pid if holder else None,
                          serve, traces, logs, gcs_port, api_port, start, reach)
        deadline = time.monotonic() + READY_S
        with running.http(timeout=10) as http:
            while True:
                if serve.poll() is not None:
                    raise RuntimeError(f"homeport serve exited with {serve.returncode}:\n{serve_log.read_text()[-3000:]}")
                try:
                    if http.get("/health/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster did not get ready:\n{serve_log.read_text()[-3000:]}")
                time.sleep(1)
        yield running
    finally:
        # homeport serve first, gently: it removes its replicas; then everything left, by pid.
        for pid in [pid for pid, cmd in _ours(sessions, netns_id) if " -m homeport serve " in cmd and "strace" not in cmd]:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
        for pid, _ in _ours(sessions, netns_id):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for process in processes:
            process.kill()
            process.wait()
        if holder is not None:
            holder.kill()
            holder.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _stream(client: openai.OpenAI, prompt: str, max_tokens: int = 8) -> dict:
    """One streamed chat: the replica header, the text, how it ended."""
    raw = client.chat.completions.with_raw_response.create(
        model="any", messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, stream=True)
    result = {"replica": raw.headers.get("x-homeport-replica"), "text": "", "finish": None, "error": None, "chunks": 0}
    try:
        for chunk in raw.parse():
            result["chunks"] += 1
            if chunk.choices:
                result["text"] += chunk.choices[0].delta.content or ""
                result["finish"] = chunk.choices[0].finish_reason or result["finish"]
    except openai.APIError as exc:  # the error event of a stream cut mid-way
        result["error"] = exc
    return result


def test_sixteen_concurrent_streams_all_succeed_on_both_replicas(cluster):
    client = cluster.openai()
    prompts = [f"Name a colour, number {i}." for i in range(16)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda p: _stream(client, p), prompts))
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
    names = {_stream(cluster.openai(), f"Name a fruit, number {i}.")["replica"] for i in range(6)}
    with cluster.http() as http:
        metrics = http.get("/metrics")
        stopped = http.post("/v1/internal/stop-generation", json={})
    assert stopped.status_code == 200 and len(stopped.headers["x-homeport-replica"].split(",")) == 2
    replicas = set(stopped.headers["x-homeport-replica"].split(","))
    assert names <= replicas  # the replicas that served are the ones asked
    assert metrics.status_code == 200
    labelled = {m.group(1) for m in re.finditer(r'homeport_generation_tokens_total\{replica="([^"]+)"', metrics.text)}
    assert labelled == replicas, metrics.text[:2000]


def _wait_ready(ingress: Cluster, process: subprocess.Popen, log: Path) -> None:
    """Until `ingress` answers /health/ready with 200 (`process` must keep running meanwhile)."""
    deadline = time.monotonic() + READY_S
    with ingress.http(timeout=10) as http:
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if http.get("/health/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)


def test_the_worker_node_serves_the_api_too_through_the_ingress_ray_placed_there(cluster):
    """Nothing was started on the worker by hand: `homeport serve` placed an ingress on it
    (cluster/node_ingress.py) at the same port, serving the same replicas; none on its own node."""
    base_url, uds = cluster.reach(WORKER, cluster.api_port)
    worker = dataclasses.replace(cluster, base_url=base_url, uds=uds)
    serve_log = cluster.tmp / "serve.log"
    _wait_ready(worker, cluster.serve, serve_log)
    results = [_stream(worker.openai(), f"Say hello number {i}.") for i in range(4)]
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
    result = _stream(cluster.openai(), f"Repeat after me: {SECRET}", max_tokens=4)
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
        futures = [pool.submit(_stream, client, f"Tell a long story about ship {i}.", 160) for i in range(8)]
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
    _wait_ready(other, second, second_log)
    results = [_stream(other.openai(), f"Say hello number {i}.") for i in range(3)]
    assert all(r["replica"] and r["error"] is None and r["chunks"] for r in results), results
    pids = [pid for pid, cmd in cluster.processes() if "--ingress-only" in cmd and "strace" not in cmd]
    assert len(pids) == 1, cluster.processes()
    os.kill(pids[0], signal.SIGTERM)
    assert second.wait(timeout=90) == 0
    assert len(cluster.replica_pids()) == 2  # not removed: they are the first ingress's
    assert _stream(cluster.openai(), "Still there?")["error"] is None


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
