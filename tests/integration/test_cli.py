"""`homeport serve` start-up failures: one clear line on stderr, non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "homeport", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args,status,needle",
    [
        (("serve", "--model", "/nonexistent/model.gguf"), 1, "model not found"),
        (("serve", "--api-port", "not-a-port"), 2, "--api-port"),
        (("serve", "--ssl-certfile", "/nonexistent.pem", "--ssl-keyfile", "/nonexistent.key"), 1, "nonexistent"),
        (("serve", "--bogus-flag"), 2, "--bogus-flag"),
    ],
)
def test_startup_errors_are_one_line(args, status, needle):
    result = run_cli(*args)
    assert result.returncode == status
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("homeport: error:") and needle in lines[0]
    assert "Traceback" not in result.stderr


def test_a_corrupt_model_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    result = run_cli("serve", "--model", str(bad))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("homeport: error:")
    assert "Traceback" not in result.stderr


def test_a_taken_port_is_a_clear_error(server):
    port = server.base_url.rsplit(":", 1)[1]
    result = run_cli("serve", "--api-port", port)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("homeport: error:")
