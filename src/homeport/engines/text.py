"""Byte-to-text helpers shared by engines."""

from __future__ import annotations

import codecs


class IncrementalUtf8:
    """Turns token byte pieces into text, holding back an incomplete UTF-8 sequence until the
    token that completes it arrives (a character split across tokens never shows as U+FFFD)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        """Whatever is still held back, decoded with replacement (end of the generation)."""
        return self._decoder.decode(b"", final=True)
