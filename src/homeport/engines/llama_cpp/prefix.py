"""Where a prompt's prefill pieces end, how much of it a slot's cache holds, and how many cells
the slots hold together: the pure rules behind the scheduler's prefix cache (see `scheduler`)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIN_PIECE = 16  # tokens: the shortest prefill piece a turn end may cut off


_BLOCKS = itertools.count()


@dataclass(eq=False)
class Slot:
    """A sequence of the KV cache: the tokens its cells hold, in order, and which cells those are.
    Cells taken from another slot (`take`: llama_memory_seq_cp) are the same cells there, so
    `held_cells` counts them once. `runs`: [block, length] pairs in order, a block being cells one
    slot wrote one after another; a run always covers its block from the block's start.
    A slot may be `stored`: its cells' contents copied to host memory and the cells freed, its
    tokens kept for matching; it then holds no runs."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    last_used: int = 0
    runs: list[list[int]] = field(default_factory=list)
    writing: int | None = None  # the block the next tokens extend (None: a new one)
    stored: Any = None  # llama_state_seq_get_data's bytes of its cells, when they left the cache
    stored_pos_min: int = -1  # the lowest position those cells held (a sliding-window cache drops old ones)

    def extend(self, tokens: Sequence[int]) -> None:
        self.tokens.extend(tokens)
        if self.writing is None or not self.runs or self.runs[-1][0] != self.writing:
            self.writing = next(_BLOCKS)
            self.runs.append([self.writing, 0])
        self.runs[-1][1] += len(tokens)

    def truncate(self, n: int, *, exclusive: bool = False) -> None:
        """Keeps the first `n` tokens. `exclusive`: no other slot holds the block being written,
        so new tokens may go on extending it (else cells another slot still holds past `n` would
        be counted as the new ones). A stored copy is dropped."""
        self.stored = None
        del self.tokens[n:]
        kept, total = [], 0
        for block, length in self.runs:
            if total >= n:
                break
            kept.append([block, min(length, n - total)])
            total += length
        self.runs = kept
        if not exclusive:
            self.writing = None

    def take(self, source: Slot, n: int) -> None:
        """Holds the first `n` of `source`'s cells instead of its own."""
        self.tokens[:] = source.tokens[:n]
        self.runs = [list(run) for run in source.runs]
        self.truncate(n)

    def clear(self) -> None:
        self.truncate(0)

    def store(self, data: Any, pos_min: int) -> None:
        """Its cells' contents are now `data`, outside the cache, which holds none of them."""
        self.runs, self.writing = [], None
        self.stored, self.stored_pos_min = data, pos_min

    def holds(self, block: int) -> bool:
        return any(run[0] == block for run in self.runs)


def held_cells(slots: Iterable[Slot]) -> int:
    """The cells the slots hold, each counted once however many slots share it."""
    extent: dict[int, int] = {}
    for slot in slots:
        for block, length in slot.runs:
            extent[block] = max(extent.get(block, 0), length)
    return sum(extent.values())


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
    function of the prompt so far). `ends` is ascending."""
    before = bisect.bisect_left(ends, usable)
    return max((usable // chunk) * chunk, ends[before - 1] if before else 0)


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
