"""`user_data/CMD_FLAGS.txt`: flags written once in a file, read as the reference API reads it.

Its lines that are not empty and do not start with `#` (a trailing `\\` continuation stripped)
are joined and split like a shell would, and go before the real command line, so flags typed
on the command line win.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from homeport.errors import StartupError

FILE_NAME = "CMD_FLAGS.txt"


class CmdFlagsError(StartupError):
    """The file cannot be split into arguments (a usage error, as a bad flag is)."""


def cmd_flags_file(args: Sequence[str]) -> Path:
    """`<--user-data-dir>/CMD_FLAGS.txt` from the real command line, else `user_data/CMD_FLAGS.txt`."""
    user_data = "user_data"
    for index, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--user-data-dir" and index + 1 < len(args):
            user_data = args[index + 1]
        elif arg.startswith("--user-data-dir="):
            user_data = arg.partition("=")[2]
    return Path(user_data).expanduser() / FILE_NAME


def read_cmd_flags(path: Path) -> list[str]:
    """The file's arguments; [] when there is no file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise StartupError(f"cannot read {path}: {reason}") from None
    kept = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        stripped = stripped.rstrip("\\").strip()
        if stripped:
            kept.append(stripped)
    try:
        return shlex.split(" ".join(kept))
    except ValueError as exc:  # e.g. an unclosed quote
        raise CmdFlagsError(f"cannot read the flags in {path}: {exc}") from None
