"""user_data/CMD_FLAGS.txt prepended to the command line, and the reference's --extensions."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from homeport.cli import main
from homeport.cmd_flags import read_cmd_flags
from homeport.settings import Settings


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Settings]:
    """Run from an empty directory, with homeport.server replaced by a recorder of its Settings."""
    monkeypatch.chdir(tmp_path)
    for variable in ("OPENEDAI_PORT", "OPENEDAI_CERT_PATH", "OPENEDAI_KEY_PATH", "OPENEDAI_DEBUG"):
        monkeypatch.delenv(variable, raising=False)
    calls: list[Settings] = []
    monkeypatch.setitem(sys.modules, "homeport.server", types.SimpleNamespace(serve=lambda s: calls.append(s) or 0))
    return calls


def write_flags(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "CMD_FLAGS.txt"
    path.write_text(text)
    return path


def test_the_file_is_read_as_the_reference_reads_it(tmp_path):
    text = "# a comment --listen\n\n--api-port 5001 \\\n  --model 'my model.gguf'\n   # --debug\n--api\n"
    path = write_flags(tmp_path, text)
    assert read_cmd_flags(path) == ["--api-port", "5001", "--model", "my model.gguf", "--api"]


def test_no_file_adds_nothing(tmp_path):
    assert read_cmd_flags(tmp_path / "CMD_FLAGS.txt") == []


def test_flags_from_user_data_reach_serve_and_the_command_line_wins(served, tmp_path):
    write_flags(tmp_path / "user_data", "--api-port 5001 --api-key from-file --listen\n")
    assert main(["--api-port", "6000"]) == 0
    (settings,) = served
    assert (settings.api_port, settings.api_key, settings.listen) == (6000, "from-file", True)


def test_the_user_data_dir_given_on_the_command_line_is_where_the_file_is_read(served, tmp_path):
    write_flags(tmp_path / "user_data", "--api-port 5001\n")
    write_flags(tmp_path / "elsewhere", "--api-port 5002\n")
    assert main(["serve", "--user-data-dir", str(tmp_path / "elsewhere")]) == 0
    assert main([f"--user-data-dir={tmp_path / 'elsewhere'}"]) == 0
    assert [s.api_port for s in served] == [5002, 5002]


def test_a_bad_flag_in_the_file_names_the_file(served, tmp_path, capsys):
    path = write_flags(tmp_path / "user_data", "--loader llama.cpp\n")
    assert main([]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("homeport: error:") and "--loader" in line
    assert str(Path("user_data") / "CMD_FLAGS.txt") in line
    assert not served and path.exists()


def test_an_unclosed_quote_is_a_usage_error(served, tmp_path, capsys):
    write_flags(tmp_path / "user_data", "--model 'oops\n")
    assert main([]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("homeport: error:") and "CMD_FLAGS.txt" in line


def test_version_ignores_the_file(served, tmp_path, capsys):
    write_flags(tmp_path / "user_data", "--bogus\n")
    assert main(["--version"]) == 0
    assert not served


def test_extensions_openai_is_accepted_quietly(served, capsys):
    assert main(["--api", "--extensions", "openai"]) == 0
    assert capsys.readouterr().err == ""
    assert len(served) == 1


def test_other_extensions_are_ignored_with_one_warning(served, tmp_path, capsys):
    write_flags(tmp_path / "user_data", "--listen --api --extensions openai gallery superbooga\n")
    assert main([]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("homeport: warning: ignoring --extensions gallery superbooga:")
    assert served[0].listen
