"""Whisper base assembled from its two wheels: size and checksum verified, written atomically,
a damaged or partial cache file detected and rebuilt."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from homeport.engines.speech import packaged
from homeport.engines.speech.errors import SpeechModelError
from homeport.engines.speech.packaged import WHISPER_BASE_SHA256, WHISPER_BASE_SIZE, whisper_base_dir

pytestmark = pytest.mark.skipif(not packaged.whisper_base_available(), reason="the speech extra is not installed")


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech-cache")
    return root, whisper_base_dir(root)


def test_assembled_model_is_complete(cache):
    root, folder = cache
    assert folder == root / "whisper-base"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    model = folder / "model.bin"
    assert model.stat().st_size == WHISPER_BASE_SIZE
    assert _sha256(model) == WHISPER_BASE_SHA256
    assert not list(folder.glob("*.part"))


def test_verified_once(cache, monkeypatch):
    root, folder = cache
    mtime = (folder / "model.bin").stat().st_mtime_ns
    monkeypatch.setattr(packaged, "_sha256", lambda path: pytest.fail("hashed again"))
    assert whisper_base_dir(root) == folder
    assert (folder / "model.bin").stat().st_mtime_ns == mtime


def test_env_variable_names_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOMEPORT_SPEECH_CACHE", str(tmp_path / "env-cache"))
    assert packaged.speech_cache_root() == tmp_path / "env-cache"
    monkeypatch.delenv("HOMEPORT_SPEECH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert packaged.speech_cache_root() == tmp_path / "xdg" / "homeport"


@pytest.mark.parametrize("damage", ["partial", "same size, other bytes", "missing", "bad stamp"])
def test_damaged_cache_is_rebuilt(tmp_path, damage):
    folder = whisper_base_dir(tmp_path)
    model = folder / "model.bin"
    if damage == "partial":
        with open(model, "r+b") as f:
            f.truncate(WHISPER_BASE_SIZE // 3)
    elif damage == "same size, other bytes":
        with open(model, "r+b") as f:
            f.seek(WHISPER_BASE_SIZE // 2)
            f.write(b"\0" * 4096)
        os.utime(model, ns=(time.time_ns(), time.time_ns() + 10**9))  # a write moves the time on
    elif damage == "missing":
        model.unlink()
    else:
        (folder / ".model.bin.verified").write_text(json.dumps({"size": 1}))
    (folder / "tokenizer.json").write_text("{}")
    assert whisper_base_dir(tmp_path) == folder
    assert model.stat().st_size == WHISPER_BASE_SIZE
    assert _sha256(model) == WHISPER_BASE_SHA256
    assert (folder / "tokenizer.json").stat().st_size > 1000


def test_stale_temporary_from_a_crash_is_removed(tmp_path):
    folder = tmp_path / "whisper-base"
    folder.mkdir()
    leftover = folder / "model.bin.abc123.part"
    leftover.write_bytes(b"half a model")
    os.utime(leftover, (time.time() - 7200, time.time() - 7200))
    whisper_base_dir(tmp_path)
    assert not leftover.exists()


def test_damaged_packages_are_an_error_and_leave_no_model(tmp_path, monkeypatch):
    bad_part = tmp_path / "model.bin.part2"
    bad_part.write_bytes(b"not the second half")
    real = packaged._sources

    def sources():
        parts, data = real()
        return [parts[0], bad_part], data

    monkeypatch.setattr(packaged, "_sources", sources)
    with pytest.raises(SpeechModelError, match="damaged"):
        whisper_base_dir(tmp_path / "cache")
    folder = tmp_path / "cache" / "whisper-base"
    assert not (folder / "model.bin").exists() and not list(folder.glob("*.part"))


def test_unwritable_cache_is_a_speech_model_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(SpeechModelError, match="could not prepare"):
        whisper_base_dir(blocker)
