"""Generated images kept for `response_format: url`: in memory, each for an hour, served by
GET /v1/images/files/{id} (with the API's auth). Bounded: the oldest go first past the cap."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
KEEP_SECONDS = 3600
MAX_BYTES = 512 * 1024 * 1024


class ImageFiles:
    def __init__(self, keep_seconds: float = KEEP_SECONDS, max_bytes: int = MAX_BYTES) -> None:
        self.keep_seconds, self.max_bytes = keep_seconds, max_bytes
        self._files: OrderedDict[str, tuple[float, bytes, str]] = OrderedDict()
        self._bytes = 0

    def put(self, data: bytes, output_format: str) -> str:
        self._expire()
        file_id = f"img_{secrets.token_hex(12)}.{'jpg' if output_format == 'jpeg' else output_format}"
        self._files[file_id] = (time.monotonic() + self.keep_seconds, data, MEDIA_TYPES[output_format])
        self._bytes += len(data)
        while self._bytes > self.max_bytes and len(self._files) > 1:
            _, (_, old, _) = self._files.popitem(last=False)
            self._bytes -= len(old)
        return file_id

    def get(self, file_id: str) -> tuple[bytes, str] | None:
        self._expire()
        found = self._files.get(file_id)
        return (found[1], found[2]) if found else None

    def _expire(self) -> None:
        now = time.monotonic()
        while self._files:
            file_id, (deadline, data, _) = next(iter(self._files.items()))
            if deadline > now:
                break
            del self._files[file_id]
            self._bytes -= len(data)
