"""A loopback HTTP server for the remote-image tests: images, redirects, errors and slow answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from support.png import CHECKS, GRADIENT

SLOW_SECONDS = 3.0  # how long /slow and /drip take; the tests' read timeout is far below it


class ImageServer:
    def __init__(self, httpd: ThreadingHTTPServer, stop: threading.Event) -> None:
        self.httpd = httpd
        self.stop = stop
        self.hosts: list[str] = []  # the Host header of each request, in order
        self.paths: list[str] = []

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@contextmanager
def image_server() -> Iterator[ImageServer]:
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # bodies end when the connection closes: no length needed

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            server.hosts.append(self.headers.get("Host", ""))
            server.paths.append(self.path)
            path = self.path.split("?")[0]
            if path == "/cat.png":
                self._send(200, GRADIENT, {"Content-Type": "image/png", "Content-Length": str(len(GRADIENT))})
            elif path == "/checks.png":
                self._send(200, CHECKS, {"Content-Type": "image/png"})
            elif path.startswith("/hop/"):  # /hop/3 redirects to /hop/2 … /hop/0 redirects to the image
                left = int(path.rsplit("/", 1)[1])
                self._send(302 if left % 2 else 307, headers={"Location": f"/hop/{left - 1}" if left else "/cat.png"})
            elif path == "/to":  # redirects wherever ?url= says
                self._send(302, headers={"Location": self.path.split("url=", 1)[1]})
            elif path == "/missing":
                self._send(404, b"not found")
            elif path == "/page":
                self._send(200, b"<html><body>not an image</body></html>", {"Content-Type": "text/html"})
            elif path == "/big":  # no Content-Length: the cap must stop the stream itself
                self._send(200, GRADIENT + bytes(4096))
            elif path == "/big-declared":
                self._send(200, GRADIENT, {"Content-Length": str(50 * 1024 * 1024)})
            elif path == "/slow":  # no answer at all for a while
                stop.wait(SLOW_SECONDS)
                self._send(200, GRADIENT)
            elif path == "/drip":  # headers at once, then a byte at a time: each read is quick
                self.send_response(200)
                self.end_headers()
                deadline = time.monotonic() + SLOW_SECONDS
                for byte in GRADIENT:
                    if stop.wait(0.05) or time.monotonic() > deadline:
                        break
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:
                        break
            else:
                self._send(404)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server = ImageServer(httpd, stop)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()
