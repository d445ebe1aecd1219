"""`--public-api --api-port 0` on a real server, with a stand-in cloudflared: the real port reaches
the tunnel, the public URL is printed, the Host check is off, and the tunnel ends with the server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx

from support.cloudflared import QUICK_URL, make_stand_in

WAIT_S = 300  # generous (the test machine is shared): only a hang fails


def wait_for(condition, what: str, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert process.poll() is None, f"server exited with {process.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}:\n{log.read_text()}"
        time.sleep(0.1)


def test_a_quick_tunnel_gets_the_real_port_and_ends_with_the_server(tmp_path):
    stand_in = make_stand_in(tmp_path / "bin")
    log = tmp_path / "server.log"
    command = [
        sys.executable, "-m", "homeport", "serve", "--api-port", "0", "--user-data-dir", str(tmp_path),
        "--public-api", "--cloudflared", str(stand_in.path),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENEDAI_")}
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: "homeport: public URL:" in log.read_text(), "the public URL", process, log)
        lines = log.read_text().splitlines()
        (listening,) = [line for line in lines if line.startswith("homeport: listening on ")]
        port = int(re.fullmatch(r"homeport: listening on http://127\.0\.0\.1:(\d+)/v1", listening).group(1))
        assert port != 0
        assert f"homeport: public URL: {QUICK_URL}" in lines
        assert stand_in.argv() == ["tunnel", "--no-autoupdate", "--url", f"http://127.0.0.1:{port}"]
        assert not any("Requesting new quick Tunnel" in line for line in lines)  # cloudflared's chatter stays out

        # Through the tunnel requests carry the public name as Host: the check must be off.
        public_host = QUICK_URL.removeprefix("https://")
        response = httpx.get(f"http://127.0.0.1:{port}/health", headers={"Host": public_host}, timeout=60)
        assert response.status_code == 200

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT_S) == 0
        deadline = time.monotonic() + WAIT_S
        while stand_in.alive():
            assert time.monotonic() < deadline, "cloudflared outlived homeport"
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.kill()
