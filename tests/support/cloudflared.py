"""A stand-in `cloudflared`: records its argv and pid, prints a quick-tunnel URL the way the real
one does (a box on stderr), then runs until SIGTERM, or runs the `rest` it is given instead."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

QUICK_URL = "https://random-words-here.trycloudflare.com"

_SCRIPT = """#!{python}
import json, os, signal, sys, time
with open({record!r} + ".tmp", "w") as f:
    json.dump({{"argv": sys.argv[1:], "pid": os.getpid()}}, f)
os.replace({record!r} + ".tmp", {record!r})  # whole or absent, for whoever reads it
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
for line in (
    "INF Requesting new quick Tunnel on trycloudflare.com...",
    "INF +--------------------------------------------------------------------------------------------+",
    "INF |  Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):  |",
    "INF |  {url}  |",
):
    print("2026-01-01T00:00:00Z " + line, file=sys.stderr, flush=True)
{rest}
"""


@dataclass
class StandIn:
    path: Path
    record: Path

    def argv(self) -> list[str]:
        return json.loads(self.record.read_text())["argv"]

    def pid(self) -> int:
        return json.loads(self.record.read_text())["pid"]

    def started(self) -> bool:
        return self.record.exists()

    def alive(self) -> bool:
        try:
            os.kill(self.pid(), 0)
        except ProcessLookupError:
            return False
        return True


def make_stand_in(directory: Path, rest: str = "while True: time.sleep(1)") -> StandIn:
    directory.mkdir(parents=True, exist_ok=True)
    record = directory / "cloudflared-run.json"
    path = directory / "cloudflared"
    path.write_text(_SCRIPT.format(python=sys.executable, record=str(record), url=QUICK_URL, rest=rest))
    path.chmod(0o755)
    return StandIn(path, record)
