"""`--public-api`: a Cloudflare tunnel to the local server through a `cloudflared` the user installed.

The reference API downloads cloudflared at run time (flask_cloudflared); homeport is offline and
never downloads anything, so a missing executable is a start-up error. cloudflared's output is
read in a thread only to find the public URL; the rest stays out of the log unless it fails,
since it is noisy and says nothing about homeport.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from homeport.errors import StartupError
from homeport.settings import Settings

log = logging.getLogger("homeport.tunnel")
announce = logging.getLogger("homeport.announce")  # `homeport: ...` lines (see server.py)

# api.trycloudflare.com is the service cloudflared asks for a quick tunnel, named in its errors.
_QUICK_URL = re.compile(r"https://(?!api\.)[a-z0-9-]+(?:\.[a-z0-9-]+)*\.trycloudflare\.com")
_NAMED_UP = "Registered tunnel connection"
_TAIL_LINES = 15
_STOP_WAIT_S = 5.0


def find_cloudflared(settings: Settings) -> Path:
    """The executable to run: --cloudflared, else `cloudflared` on PATH; StartupError if none."""
    if settings.cloudflared is not None:
        path = settings.cloudflared
        if not path.is_file():
            raise StartupError(f"--public-api: cloudflared not found at {path}; homeport never downloads it")
        return path
    found = shutil.which("cloudflared")
    if found is None:
        raise StartupError(
            "--public-api needs cloudflared, which is not installed (not on PATH); install it from "
            "Cloudflare or pass --cloudflared PATH (homeport never downloads it)"
        )
    return Path(found)


def tunnel_command(executable: Path, origin: str, *, tls: bool, name: str | None) -> list[str]:
    """cloudflared's arguments for a quick tunnel, or a named one set up with `cloudflared tunnel
    create`; `origin` is host:port of our own listener."""
    origin = f"{'https' if tls else 'http'}://{origin}"
    # The origin is our own listener; its certificate is made out to a name, not to 127.0.0.1.
    origin_flags = ["--url", origin, *(["--no-tls-verify"] if tls else [])]
    if name:
        return [str(executable), "tunnel", "--no-autoupdate", "run", *origin_flags, name]
    return [str(executable), "tunnel", "--no-autoupdate", *origin_flags]


class Tunnel:
    """A running cloudflared; `stop()` ends it (SIGTERM, then SIGKILL after a few seconds)."""

    def __init__(self, command: list[str], *, name: str | None = None) -> None:
        self.name = name
        self.public_url: str | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._stopping = False
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                # Its own session: a Ctrl-C in the terminal reaches homeport only, which keeps the
                # tunnel up while running requests drain, then stops it.
                start_new_session=True,
                preexec_fn=_parent_death_signal(),
            )
        except OSError as exc:
            raise StartupError(f"--public-api: cannot run {command[0]}: {exc.strerror or exc}") from None
        self._reader = threading.Thread(target=self._read, name="cloudflared-output", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, settings: Settings, executable: Path, origin: str) -> Tunnel:
        command = tunnel_command(executable, origin, tls=settings.ssl_certfile is not None, name=settings.public_api_id)
        kind = f"named tunnel {settings.public_api_id}" if settings.public_api_id else "a quick tunnel"
        log.info("starting cloudflared (%s) to %s", kind, origin)
        return cls(command, name=settings.public_api_id)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._tail.append(line.rstrip())
            if self.public_url is None:
                self._notice(line)
        status = self.process.wait()
        if not self._stopping:
            tail = "\n".join(f"  {line}" for line in self._tail if line)
            log.error(
                "cloudflared exited with status %d; the API is still served locally. Its last output:\n%s",
                status, tail or "  (none)",
            )

    def _notice(self, line: str) -> None:
        if self.name is None:
            match = _QUICK_URL.search(line)
            if match:
                self.public_url = match.group(0)
                announce.info("public URL: %s", self.public_url)
        elif _NAMED_UP in line:
            self.public_url = self.name
            announce.info("public API: named tunnel %s is running (hostnames: your Cloudflare setup)", self.name)

    def stop(self) -> None:
        self._stopping = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=_STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=_STOP_WAIT_S)


def _parent_death_signal():
    """prctl(PR_SET_PDEATHSIG, SIGTERM) as a preexec_fn, resolved here in the parent: the child
    only makes the call (no imports after fork). None where unavailable."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    # If homeport is killed outright, the tunnel goes with it instead of outliving the server.
    return lambda: prctl(1, int(signal.SIGTERM))
