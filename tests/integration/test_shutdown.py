"""SIGTERM on a real server with a stream in flight: the drain, the deadline, exit status 0."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from support.server import RunningServer, start_server
from support.sse import parse_sse

WAIT_S = 300  # generous (the test machine is shared): only a hang fails


class StreamInFlight:
    """A completions stream read in a thread; `started` is set at its first frame."""

    def __init__(self, server: RunningServer, max_tokens: int) -> None:
        self.server = server
        self.payload = {"prompt": "Once upon a time", "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
        self.started = threading.Event()
        self.body = ""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.started.wait(WAIT_S), "the stream never started"

    def _read(self) -> None:
        with self.server.http() as client, client.stream("POST", "/v1/completions", json=self.payload) as response:
            for text in response.iter_text():
                self.body += text
                self.started.set()

    def finish(self) -> tuple[list[dict], bool]:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the stream never ended"
        return parse_sse(self.body)


def exit_status(server: RunningServer) -> int:
    return server.process.wait(timeout=WAIT_S)


def test_a_stream_running_past_the_deadline_ends_with_an_error_frame_and_the_server_exits_0(tmp_path):
    server = start_server(tmp_path, "--shutdown-timeout", "3")
    try:
        stream = StreamInFlight(server, max_tokens=6000)  # far longer than 3 s on a CPU
        with server.http() as client:  # a keep-alive connection, open before the signal
            assert client.get("/v1/models").status_code == 200
            server.process.send_signal(signal.SIGTERM)
            # The drain keeps the port and answers 503 until the deadline; before the signal
            # lands, requests are still served.
            deadline = time.monotonic() + WAIT_S
            while (response := client.get("/v1/models")).status_code == 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "shutting_down"
        assert response.headers["retry-after"]
        payloads, done = stream.finish()
        assert done, "no [DONE] after the error frame"
        assert payloads[-1]["error"]["code"] == "server_shutdown"
        assert all("error" not in p for p in payloads[:-1]) and len(payloads) > 1
        assert exit_status(server) == 0
        log = server.log_path.read_text()
        assert "cutting 1 request(s)" in log and "Traceback" not in log
        with pytest.raises(httpx.ConnectError):  # and the port is closed now
            httpx.get(f"{server.base_url}/health", timeout=5)
    finally:
        if server.process.poll() is None:
            server.process.kill()


def test_a_stream_that_finishes_within_the_timeout_ends_normally(tmp_path):
    server = start_server(tmp_path, "--shutdown-timeout", str(WAIT_S))
    try:
        stream = StreamInFlight(server, max_tokens=100)
        server.process.send_signal(signal.SIGTERM)
        payloads, done = stream.finish()
        assert done
        assert all("error" not in p for p in payloads)
        assert payloads[-1]["choices"][0]["finish_reason"] == "length"
        assert exit_status(server) == 0
        log = server.log_path.read_text()
        assert "1 running request(s) get up to" in log  # it really was in flight at the signal
        assert "cutting" not in log and "Traceback" not in log
    finally:
        if server.process.poll() is None:
            server.process.kill()
