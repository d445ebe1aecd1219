"""`--public-api` over a stand-in cloudflared: finding it, its arguments, the URL it prints, stopping it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from homeport.errors import StartupError
from homeport.settings import Settings
from homeport.tunnel import Tunnel, find_cloudflared, tunnel_command
from support.cloudflared import QUICK_URL, make_stand_in

WAIT_S = 60


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def test_missing_cloudflared_is_a_clear_start_up_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StartupError) as caught:
        find_cloudflared(Settings(public_api=True))
    message = str(caught.value)
    assert "not installed" in message and "never downloads" in message


def test_a_given_cloudflared_path_must_exist(tmp_path):
    with pytest.raises(StartupError, match="not found at"):
        find_cloudflared(Settings(public_api=True, cloudflared=tmp_path / "nope"))


def test_cloudflared_is_found_on_path(monkeypatch, tmp_path):
    stand_in = make_stand_in(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert find_cloudflared(Settings(public_api=True)) == stand_in.path


def test_tunnel_commands():
    exe = Path("/usr/bin/cloudflared")
    assert tunnel_command(exe, "127.0.0.1:5000", tls=False, name=None) == [
        str(exe), "tunnel", "--no-autoupdate", "--url", "http://127.0.0.1:5000",
    ]
    assert tunnel_command(exe, "[::1]:5000", tls=True, name="home") == [
        str(exe), "tunnel", "--no-autoupdate", "run", "--url", "https://[::1]:5000", "--no-tls-verify", "home",
    ]


def test_a_quick_tunnel_announces_its_url_and_stops_on_sigterm(tmp_path, caplog):
    stand_in = make_stand_in(tmp_path)
    caplog.set_level(logging.INFO, logger="homeport")
    tunnel = Tunnel.start(Settings(public_api=True), stand_in.path, "127.0.0.1:43125")
    try:
        wait_until(lambda: tunnel.public_url is not None, "the public URL")
        assert tunnel.public_url == QUICK_URL
        assert stand_in.argv() == ["tunnel", "--no-autoupdate", "--url", "http://127.0.0.1:43125"]
    finally:
        tunnel.stop()
    assert tunnel.process.returncode == 0  # it exited on SIGTERM, not by SIGKILL
    assert not stand_in.alive()
    announced = [r.getMessage() for r in caplog.records if r.name == "homeport.announce"]
    assert announced == [f"public URL: {QUICK_URL}"]
    # The rest of cloudflared's output stays out of the log.
    assert not any("Requesting new quick Tunnel" in r.getMessage() for r in caplog.records)


def test_a_cloudflared_that_exits_early_is_logged_with_its_last_lines(tmp_path, caplog):
    stand_in = make_stand_in(tmp_path, rest='print("ERR failed to connect", file=sys.stderr); sys.exit(3)')
    caplog.set_level(logging.INFO, logger="homeport")
    tunnel = Tunnel.start(Settings(public_api=True), stand_in.path, "127.0.0.1:5000")
    wait_until(lambda: any("exited with status 3" in r.getMessage() for r in caplog.records), "the exit to be logged")
    (record,) = [r for r in caplog.records if "exited" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert "still served locally" in record.getMessage() and "ERR failed to connect" in record.getMessage()
    tunnel.stop()


def test_a_stand_in_that_ignores_sigterm_is_killed(tmp_path, monkeypatch):
    monkeypatch.setattr("homeport.tunnel._STOP_WAIT_S", 0.5)
    rest = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('deaf', flush=True)\nwhile True: time.sleep(1)"
    tunnel = Tunnel.start(Settings(public_api=True), make_stand_in(tmp_path, rest).path, "127.0.0.1:5000")
    wait_until(lambda: "deaf" in tunnel._tail, "SIGTERM to be ignored")
    tunnel.stop()
    assert tunnel.process.returncode == -9


def test_public_api_without_cloudflared_exits_1_with_one_line(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}
    env = {k: v for k, v in env.items() if not k.startswith("OPENEDAI_")}
    result = subprocess.run(
        [sys.executable, "-m", "homeport", "serve", "--public-api", "--user-data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("homeport: error: --public-api needs cloudflared")
