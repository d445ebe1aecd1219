"""Where a prompt's prefill pieces end, and how much of it a slot's cache holds: the pure rules
behind the scheduler's prefix cache (see `scheduler`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_PIECE = 16  # tokens: the shortest prefill piece a turn end may cut off


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
