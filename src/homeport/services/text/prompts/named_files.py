"""User files picked by name from a folder (characters, instruction templates): lookup and listing.

Names come from requests, so only plain file names are accepted: a name with a path separator
or one that starts with a dot is simply not found, never resolved outside the folder.
"""

from __future__ import annotations

import re
from pathlib import Path

_SAFE_NAME = re.compile(r"^[\w][\w .+-]*$")


def find(directory: Path, name: str, suffixes: tuple[str, ...]) -> Path | None:
    """The file `<directory>/<name><suffix>` for the first suffix that exists, or None."""
    if not _SAFE_NAME.match(name):
        return None
    for suffix in suffixes:
        candidate = directory / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def names(directory: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Every name `find` can reach in the folder, sorted; empty when the folder is missing."""
    if not directory.is_dir():
        return []
    found = {p.stem for p in directory.iterdir() if p.suffix in suffixes and p.is_file()}
    return sorted(name for name in found if _SAFE_NAME.match(name))
