"""A real two-node Ray cluster on loopback running `homeport serve --ray-address` (issue #18), for
the cluster integration tests (test_cluster.py, test_cluster_autoscale.py).

Two Ray nodes, 127.0.0.2 (the head) and 127.0.0.3, and `homeport serve --ray-address ...` on the
default model (with the caller's extra flags) run inside a network namespace with nothing but `lo`
(`unshare -n`), each under `strace -f` (socket, connect, sendto, sendmmsg) unless `trace=False`.
The test process outside reaches an ingress through a Unix socket (those cross network namespaces)
that a small forwarder inside relays to TCP. Where a network namespace cannot be made (or with
HOMEPORT_TEST_NO_NETNS=1), the same cluster runs on the host's loopback. Every process it started
is killed by process id at the end (found by its session, and by the namespace). Use one at a time:
a module-scoped fixture each, which pytest ends before the next module's starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai

from homeport.cluster.privacy import new_token, ray_environment
from support.server import free_port

HEAD, WORKER = "127.0.0.2", "127.0.0.3"
RAY = str(Path(sys.executable).with_name("ray"))
READY_S = 300  # two Ray nodes and the replicas loading the model, on 2 busy cores

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
    """(pid, command line) of every process the cluster started: each command runs in a session of
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


@contextlib.contextmanager
def ray_cluster(serve_args: Sequence[str], *, trace: bool = True) -> Iterator[Cluster]:
    """The two nodes and `homeport serve --ray-address HEAD:PORT --threads 1 --parallel 2
    --listen-host HEAD ... *serve_args`, once /health/ready answers 200; everything is killed after."""
    tmp = Path(tempfile.mkdtemp(prefix="hpray-", dir="/tmp"))  # Ray's socket paths must stay short
    holder = _namespace()
    netns = holder is not None
    netns_id = os.readlink(f"/proc/{holder.pid}/ns/net") if holder else None
    sessions: set[int] = set()
    enter = ["nsenter", f"--net=/proc/{holder.pid}/ns/net", "--"] if netns else []
    strace = shutil.which("strace") if trace else None
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
            sys.executable, "-m", "homeport", "serve", "--ray-address", f"{HEAD}:{gcs_port}",
            "--threads", "1", "--parallel", "2", "--listen-host", HEAD, "--api-port", str(api_port),
            "--user-data-dir", str(tmp / "user_data"), *serve_args,
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
        try:
            wait_ready(running, serve, serve_log)
        except AssertionError as exc:
            raise RuntimeError(f"the cluster did not get ready: {exc}") from None
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


def wait_ready(ingress: Cluster, process: subprocess.Popen, log: Path) -> None:
    """Until `ingress` answers /health/ready with 200 (`process` must keep running meanwhile)."""
    deadline = time.monotonic() + READY_S
    with ingress.http(timeout=10) as http:
        while True:
            assert process.poll() is None, f"exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            try:
                if http.get("/health/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)


def stream_chat(client: openai.OpenAI, prompt: str, max_tokens: int = 8) -> dict:
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
