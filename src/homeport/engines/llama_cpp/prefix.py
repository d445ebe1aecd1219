"""Where a prompt's prefill pieces end, and how much of it a slot's cache holds: the pure rules
behind the scheduler's prefix cache (see `scheduler`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

MIN_PIECE = 16  # tokens: the shortest prefill piece a turn end may cut off


@dataclass(eq=False)
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # what this slot's KV cells hold, in order
    last_used: int = 0


def turn_ends(prompt: Sequence[int], eog_ids: np.ndarray, chunk: int) -> list[int]:
    """Where the prompt's end-of-turn tokens sit: its prefill pieces end before each one that is
    at least MIN_PIECE tokens after the previous boundary (a prompt full of them must not become a
    prefill of one-token steps). A function of the prompt alone, as batch invariance needs."""
    if len(eog_ids) == 0 or len(prompt) < 2:
        return []
    ends, last = [], 0
    for p in np.flatnonzero(np.isin(np.asarray(prompt), eog_ids)).tolist():
        last = max(last, (p // chunk) * chunk)
        if p - last >= MIN_PIECE:
            ends.append(p)
            last = p
    return ends


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if len(differ) else n


def piece_boundary(usable: int, chunk: int, ends: Sequence[int]) -> int:
    """The last piece boundary at or before `usable` tokens: a multiple of `chunk`, or a turn end
    of the prompt (`ends`) before it. A turn end counts only where the cache holds that
    end-of-turn token too: then its own prefill ended a piece there as well (the pieces are a
    function of the prompt so far)."""
    return max([(usable // chunk) * chunk, *(end for end in ends if end < usable)])


def choose_slot(free: Sequence[Slot], shared: dict[int, int]) -> Slot:
    """The free slot whose cache shares the longest prefix with the prompt (`shared`, by slot id;
    among equals, the least recently used) when that reuses at least half of what it holds; else
    the least recently used slot. Taking a slot for a short shared opening (a system prompt) would
    wipe another conversation's long cache for a few tokens' gain (llama-server's slot similarity,
    0.5); the scheduler then takes the opening from that slot's cells instead."""
    best = max(free, key=lambda s: (shared[id(s)], -s.last_used))
    if 2 * shared[id(best)] < len(best.tokens):
        best = min(free, key=lambda s: (s.last_used, -shared[id(s)]))
    return best
