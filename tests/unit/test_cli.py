"""The command line: flag parsing, one-line errors and exit codes, TLS checks, handing off to serve."""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import homeport
from homeport.cli import main
from homeport.errors import StartupError
from homeport.settings import Settings


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Settings]:
    """Replace homeport.server with a fake that records the Settings it is given."""
    monkeypatch.chdir(tmp_path)  # no stray user_data/settings.yaml
    for variable in ("OPENEDAI_PORT", "OPENEDAI_CERT_PATH", "OPENEDAI_KEY_PATH", "OPENEDAI_DEBUG"):
        monkeypatch.delenv(variable, raising=False)
    calls: list[Settings] = []

    def serve(settings: Settings) -> int:
        calls.append(settings)
        return 0

    monkeypatch.setitem(sys.modules, "homeport.server", types.SimpleNamespace(serve=serve))
    return calls


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("homeport: error: ")
    return lines[0]


def test_flags_reach_serve(served: list[Settings]) -> None:
    status = main(
        [
            "serve",
            "--api-port", "5001",
            "--listen",
            "--api-key", "k",
            "--gpu-layers", "-1",
            "--ctx-size", "8192",
            "--cors-origins", "http://a,http://b",
            "--model", "tiny.gguf",
            "--debug",
        ]
    )  # fmt: skip
    assert status == 0
    (settings,) = served
    assert settings.api_port == 5001
    assert settings.bind_host == "0.0.0.0"
    assert settings.api_key == "k" and settings.effective_admin_key == "k"
    assert settings.n_gpu_layers == -1
    assert settings.ctx_size == 8192
    assert settings.cors_origins == ("http://a", "http://b")
    assert settings.model == "tiny.gguf"
    assert settings.debug is True


def test_serve_is_the_default_command(served: list[Settings]) -> None:
    assert main(["--api-port", "5002"]) == 0
    assert main([]) == 0
    assert [s.api_port for s in served] == [5002, 5000]
    assert served[1] == Settings()


def test_only_given_flags_override_the_settings_file(served: list[Settings], tmp_path: Path) -> None:
    file = tmp_path / "s.yaml"
    file.write_text("api_port: 6000\nthreads: 4\nlisten: true\n", encoding="utf-8")
    assert main(["--settings", str(file), "--threads", "8"]) == 0
    (settings,) = served
    assert (settings.api_port, settings.threads, settings.listen) == (6000, 8, True)


def test_env_overrides_flags(served: list[Settings], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENEDAI_PORT", "5999")
    assert main(["--api-port", "5001"]) == 0
    assert served[0].api_port == 5999


def test_bad_flag_value(served: list[Settings], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--api-port", "abc"]) == 2
    assert "--api-port" in one_error_line(capsys)
    assert served == []


def test_out_of_range_flag_is_a_usage_error(
    served: list[Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--parallel", "0"]) == 2
    assert "--parallel" in one_error_line(capsys)


def test_unknown_flag(served: list[Settings], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--no-such-flag"]) == 2
    assert "--no-such-flag" in one_error_line(capsys)


def test_abbreviated_flag_is_refused(served: list[Settings], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--api-p", "5001"]) == 2
    one_error_line(capsys)


def test_env_garbage_exits_1(
    served: list[Settings], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENEDAI_PORT", "abc")
    assert main([]) == 1
    assert one_error_line(capsys) == (
        "homeport: error: invalid value for api_port from OPENEDAI_PORT: 'abc' is not an integer"
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"homeport {homeport.__version__}"


def test_help_does_not_import_the_server(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "homeport.server", raising=False)
    assert main(["serve", "--help"]) == 0
    assert "--api-port" in capsys.readouterr().out
    assert "homeport.server" not in sys.modules


def test_startup_error_from_serve(
    served: list[Settings], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def serve(settings: Settings) -> int:
        raise StartupError("model not found: nope.gguf")

    monkeypatch.setitem(sys.modules, "homeport.server", types.SimpleNamespace(serve=serve))
    assert main(["--model", "nope.gguf"]) == 1
    assert one_error_line(capsys) == "homeport: error: model not found: nope.gguf"


def test_keyboard_interrupt_is_quiet(
    served: list[Settings], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def serve(settings: Settings) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "homeport.server", types.SimpleNamespace(serve=serve))
    assert main([]) == 130
    assert capsys.readouterr().err == ""


def test_missing_cert(
    served: list[Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "key.pem"
    key.write_text("x", encoding="utf-8")
    missing = tmp_path / "missing.pem"
    assert main(["--ssl-certfile", str(missing), "--ssl-keyfile", str(key)]) == 1
    assert str(missing) in one_error_line(capsys)
    assert served == []


def test_only_one_tls_file(served: list[Settings], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--ssl-certfile", "c.pem"]) == 2
    assert "ssl_keyfile" in one_error_line(capsys)


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl binary is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_real_self_signed_cert_passes(
    served: list[Settings], self_signed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = self_signed
    assert main(["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]) == 0
    assert capsys.readouterr().err == ""
    (settings,) = served
    assert (settings.ssl_certfile, settings.ssl_keyfile) == (cert, key)


def test_garbage_cert(
    served: list[Settings],
    self_signed: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, key = self_signed
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n", encoding="utf-8")
    assert main(["--ssl-certfile", str(garbage), "--ssl-keyfile", str(key)]) == 1
    assert str(garbage) in one_error_line(capsys)
    assert served == []


def test_garbage_key(
    served: list[Settings],
    self_signed: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cert, _ = self_signed
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n", encoding="utf-8")
    assert main(["--ssl-certfile", str(cert), "--ssl-keyfile", str(garbage)]) == 1
    assert str(garbage) in one_error_line(capsys)


def test_encrypted_key_does_not_prompt(
    served: list[Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl binary is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "enc.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-days", "1", "-subj", "/CN=localhost",
         "-passout", "pass:secret", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    assert main(["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]) == 1
    assert "encrypted" in one_error_line(capsys)
