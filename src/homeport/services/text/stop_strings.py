"""Stop strings cut the output where they begin, even when they arrive split across tokens."""

from __future__ import annotations

from collections.abc import Iterable


class StopMatcher:
    """Feed text as it is generated; get back what is safe to emit.

    Text that could be the beginning of a stop string is held back until the next push shows
    whether it is one; nothing of a stop string ever leaks out.
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(dict.fromkeys(s for s in stops if s))
        self._held = ""
        self.matched: str | None = None  # the stop string that was reached

    def push(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string was reached)."""
        buffer = self._held + text
        if not self._stops:
            return buffer, False
        hits = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._held = ""
            at = min(hits)
            self.matched = next(s for s in self._stops if buffer.find(s) == at)
            return buffer[:at], True
        hold = max((self._partial_suffix(buffer, stop) for stop in self._stops), default=0)
        cut = len(buffer) - hold
        self._held = buffer[cut:]
        return buffer[:cut], False

    def flush(self) -> str:
        """At the end of generation, held-back text was no stop string after all."""
        held, self._held = self._held, ""
        return held

    @staticmethod
    def _partial_suffix(buffer: str, stop: str) -> int:
        """Length of the longest end of `buffer` that is a proper beginning of `stop`. Runs per
        token per stop string: only the places in the tail where `stop`'s first character occurs
        are tried (usually none), not every length."""
        first = stop[0]
        at = buffer.find(first, max(0, len(buffer) - len(stop) + 1))
        while at != -1:
            if stop.startswith(buffer[at:]):
                return len(buffer) - at
            at = buffer.find(first, at + 1)
        return 0
