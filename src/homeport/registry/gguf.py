"""Reads a few metadata values from a GGUF header without llama.cpp (for the library scan)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

# GGUF value types → struct format (fixed-size ones)
_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# Architectures that are encoders: embedding models, never chat models.
EMBEDDING_ARCHITECTURES = frozenset({
    "bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert", "neo-bert",
    "t5encoder", "eurobert",
})


def read_metadata(path: Path, *, max_keys: int = 64) -> dict[str, Any]:
    """The header's scalar values up to the tokenizer's (arrays skipped); {} for an unreadable file."""
    try:
        with path.open("rb") as file:
            return _read(file, max_keys)
    except (OSError, struct.error, ValueError, UnicodeDecodeError):
        return {}


def _read(file: BinaryIO, max_keys: int) -> dict[str, Any]:
    if file.read(4) != b"GGUF":
        return {}
    version, = struct.unpack("<I", file.read(4))
    if version < 2:
        return {}
    _tensors, count = struct.unpack("<QQ", file.read(16))
    values: dict[str, Any] = {}
    for _ in range(min(count, max_keys)):
        key = _string(file)
        if key.startswith("tokenizer."):
            break  # the big arrays start here; everything wanted comes before
        kind, = struct.unpack("<I", file.read(4))
        value = _value(file, kind)
        if value is not _SKIPPED:
            values[key] = value
    return values


_SKIPPED = object()


def _string(file: BinaryIO) -> str:
    length, = struct.unpack("<Q", file.read(8))
    if length > 1 << 20:
        raise ValueError("implausible string length")
    return file.read(length).decode("utf-8")


def _value(file: BinaryIO, kind: int) -> Any:
    if kind in _FIXED:
        fmt = "<" + _FIXED[kind]
        return struct.unpack(fmt, file.read(struct.calcsize(fmt)))[0]
    if kind == _STRING:
        return _string(file)
    if kind == _ARRAY:
        item, length = struct.unpack("<IQ", file.read(12))
        if item in _FIXED:
            file.seek(length * struct.calcsize("<" + _FIXED[item]), 1)
        else:
            for _ in range(length):
                _value(file, item)
        return _SKIPPED
    raise ValueError(f"unknown GGUF value type {kind}")


def is_embedding_gguf(path: Path) -> bool:
    """An encoder architecture, or a pooling type set (e.g. a Qwen3 embedding model)."""
    metadata = read_metadata(path)
    architecture = metadata.get("general.architecture")
    if architecture is None:
        return False
    if architecture in EMBEDDING_ARCHITECTURES:
        return True
    pooling = metadata.get(f"{architecture}.pooling_type")
    return isinstance(pooling, int) and pooling > 0


def is_projector(path: Path) -> bool:
    """A vision projector: not a model to serve on its own."""
    if path.name.lower().startswith("mmproj"):
        return True
    return read_metadata(path).get("general.architecture") == "clip"
