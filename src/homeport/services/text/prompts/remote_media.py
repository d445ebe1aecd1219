"""Images by http(s) URL: fetched only when homeport is started with `--allow-remote-media`.

Each hop's host goes through `media_policy`'s guard, and the connection goes to the addresses it
checked: no second DNS lookup between check and connect that a rebinding DNS server could answer
differently (the Host header and TLS SNI still name the URL's host). Redirects are followed by
hand for the same reason. The body is capped, the whole fetch has a deadline, and what comes back
must look like an image; every failure is a 400 naming the part. Blocking: call it off the event
loop (images are loaded in a worker thread).
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from functools import cache
from urllib.parse import urljoin

from homeport.errors import InvalidRequestError
from homeport.services.text.prompts.media_policy import MediaPolicy, Target, checked_addresses, parse_target

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_BMP_HEADERS = (12, 40, 52, 56, 64, 108, 124)  # the DIB header sizes BMP versions use

# How a checked request is sent: (target, addresses to try in order, connect timeout) -> a connection
# whose request has gone out. Tests inject one to drive the redirect logic without a network.
Opener = Callable[[Target, Sequence[str], float], http.client.HTTPConnection]


def fetch_image(url: str, param: str, policy: MediaPolicy, *, max_bytes: int, opener: Opener | None = None) -> bytes:
    """The image at `url` (http or https), every hop checked against `policy`. Raises InvalidRequestError."""
    deadline = time.monotonic() + policy.read_timeout
    for _ in range(MAX_REDIRECTS + 1):
        target = parse_target(url, param)
        addresses = checked_addresses(target, policy, param)
        log.debug("fetching image %s from %s", url, addresses[0])
        try:
            body, location = _get(opener or _open, target, addresses, policy, deadline, max_bytes, param)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reason = _reason(exc, deadline)
            raise InvalidRequestError(f"the image could not be fetched: {reason}", param=param) from None
        if location is not None:
            url = urljoin(url, location)
            continue
        if not looks_like_image(body):
            raise InvalidRequestError("the image URL did not return an image (PNG, JPEG, GIF, WebP, BMP)", param=param)
        return body
    raise InvalidRequestError(f"the image URL redirected more than {MAX_REDIRECTS} times", param=param)


def _get(opener: Opener, target: Target, addresses: Sequence[str], policy: MediaPolicy, deadline: float,
         max_bytes: int, param: str) -> tuple[bytes, str | None]:
    """One hop: the body, or a redirect's Location."""
    conn = opener(target, addresses, min(policy.connect_timeout, _remaining(deadline)))
    try:
        with _Watchdog(conn, deadline):
            response = conn.getresponse()
            status = response.status
            if status in _REDIRECTS:
                location = (response.getheader("Location") or "").strip()
                if not location:
                    raise InvalidRequestError(f"the image URL redirected (HTTP {status}) to nowhere", param=param)
                return b"", location
            if not 200 <= status < 300:
                raise InvalidRequestError(f"fetching the image failed: the server answered HTTP {status}", param=param)
            return _read_capped(conn, response, max_bytes, deadline, param), None
    finally:
        conn.close()


def looks_like_image(data: bytes) -> bool:
    """By magic bytes (pillow is not a dependency): PNG, JPEG, GIF, WebP, BMP. The engine decodes for real."""
    if data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")):
        return True
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    # BMP: "BM", then a DIB header of a known size (so text that starts with "BM" is not taken).
    return data[:2] == b"BM" and len(data) >= 26 and int.from_bytes(data[14:18], "little") in _BMP_HEADERS


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out")
    return remaining


def _read_capped(conn, response, max_bytes: int, deadline: float, param: str) -> bytes:
    too_large = InvalidRequestError(f"the image is larger than {max_bytes // (1024 * 1024)} MB", param=param)
    length = response.getheader("Content-Length")
    if length and length.strip().isdigit() and int(length) > max_bytes:
        raise too_large
    chunks, size = [], 0
    while True:
        _set_timeout(conn, _remaining(deadline))
        chunk = response.read1(64 * 1024)  # one read at most: a slow drip cannot outlast the deadline
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    if time.monotonic() >= deadline:  # the watchdog cut the connection: the body may be short
        raise TimeoutError("timed out")
    return b"".join(chunks)


def _reason(exc: BaseException, deadline: float) -> str:
    if isinstance(exc, TimeoutError) or time.monotonic() >= deadline:
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "the server's TLS certificate could not be verified"
    if isinstance(exc, ssl.SSLError):
        return "TLS error"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return "the server's answer was not valid HTTP" if isinstance(exc, http.client.HTTPException) else "bad URL"


def _set_timeout(conn, seconds: float) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


class _Watchdog:
    """Shuts the connection's socket down at the deadline, whatever read is blocked on it (a
    server dripping a byte at a time would otherwise keep each single read within its timeout)."""

    def __init__(self, conn, deadline: float) -> None:
        self._conn = conn
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        sock = getattr(self._conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> _Watchdog:
        _set_timeout(self._conn, max(0.001, self._timer.interval))
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()


def _connect(addresses: Sequence[str], port: int, timeout: float) -> socket.socket:
    error: OSError = OSError("no address to connect to")
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            error = exc
    raise error


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to checked addresses; the Host header still names the URL's host."""

    def __init__(self, target: Target, addresses: Sequence[str], timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._addresses = tuple(addresses)

    def connect(self) -> None:
        self.sock = _connect(self._addresses, self.port, self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """As _PinnedHTTP, over TLS: SNI and certificate checks use the URL's host."""

    def __init__(self, target: Target, addresses: Sequence[str], timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=_tls())
        self._addresses = tuple(addresses)

    def connect(self) -> None:
        sock = _connect(self._addresses, self.port, self.timeout)
        self.sock = _tls().wrap_socket(sock, server_hostname=self.host)


@cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()  # loads the system CAs: once, on first use


def _open(target: Target, addresses: Sequence[str], timeout: float) -> http.client.HTTPConnection:
    cls = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    conn = cls(target, addresses, timeout)
    # identity encoding (http.client's default): no decompression, so the cap counts what arrives.
    conn.request("GET", target.path, headers={"User-Agent": "homeport", "Accept": "image/*", "Connection": "close"})
    return conn
