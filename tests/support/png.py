"""Small PNG images written by hand (pillow is not a dependency)."""

from __future__ import annotations

import base64
import struct
import zlib


def png(width: int, height: int, pixel) -> bytes:
    """An 8-bit RGB PNG; pixel(x, y) gives (r, g, b)."""
    rows = b"".join(b"\0" + bytes(c for x in range(width) for c in pixel(x, y)) for y in range(height))

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def data_url(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


GRADIENT = png(32, 32, lambda x, y: (x * 8, y * 8, 128))
CHECKS = png(48, 20, lambda x, y: (255, 255, 255) if (x // 4 + y // 4) % 2 else (0, 40, 200))
