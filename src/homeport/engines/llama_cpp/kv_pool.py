"""The scheduler's KV pool: admission against the cells left, eviction of idle caches, pausing.

With one unified cache (the default) all sequences draw their cells from one pool of
`kv_cells`, which may be smaller than `parallel` full contexts (one context's worth by default, as
llama-server's `-c` with `-kvu`). Cells shared by several slots count once (`prefix.held_cells`).
A request joins only while the running ones' cells and growth leave room for its prompt; when
their growth runs the pool dry, idle slots' cached prefixes go first (least recently used first),
then the newest request is paused: its cells are given up, and when there is room again it
re-reads its prompt and what it had generated, and goes on (vLLM's preemption by recomputation).
Its client only sees a delay.

`KVPool` is mixed into `scheduler.Scheduler` and works on its slots (`_slots`, `_free`), its cache
(`_memory`, `_cells`: None for separate streams, where none of this applies) and its sharing rules
(`_may_share`, `_unstarted`, `_chunk`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import llama_cpp

from homeport.engines.llama_cpp.prefix import held_cells

if TYPE_CHECKING:
    from homeport.engines.llama_cpp.scheduler import Job

log = logging.getLogger(__name__)


class KVPool:
    def has_room(self, running: list[Job], job: Job) -> bool:
        if len(running) >= self.parallel:
            return False
        if self._cells is None or not running:
            return True  # alone, a request always fits: the pool holds at least one context
        # The running ones' cells (shared ones once) and what they will add, less what those yet
        # to read their prompts will take from the ones ahead; the same for the new prompt.
        committed = held_cells(seq.slot for seq in running)
        for i, seq in enumerate(running):
            held = len(seq.slot.tokens)
            committed += seq.footprint() - max(held, self._sharable(seq, running[:i]) if self._unstarted(seq) else 0)
        return committed + len(job.request.prompt_tokens) + 1 - self._sharable(job, running) <= self._cells

    def _sharable(self, seq: Job, ahead: list[Job]) -> int:
        """How much of its prompt a request can expect to take from `ahead`'s (to a chunk boundary:
        a turn end may give more)."""
        if not self._may_share(seq):
            return 0
        shared = max((seq.shares(other) for other in ahead), default=0)
        return (min(shared, len(seq.request.prompt_tokens) - 1) // self._chunk) * self._chunk

    def _free_cells(self) -> int:
        return self._cells - held_cells(self._slots)

    def _evict_idle(self, need: int) -> bool:
        """Frees idle slots' cached prefixes, least recently used first, until `need` cells are
        free; whether they are (cells a running slot shares stay)."""
        free = self._free_cells()
        for slot in sorted(self._free, key=lambda s: s.last_used):
            if free >= need:
                break
            if slot.tokens:
                llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
                slot.clear()
                free = self._free_cells()
        return free >= need

    def _pause(self, seq: Job) -> None:
        """Gives up the sequence's cells; it re-reads its prompt and output when there is room."""
        slot = seq.slot
        if seq.decoding:  # (one paused mid-re-read keeps the list it was re-reading)
            seq.resume = slot.tokens[len(seq.request.prompt_tokens):]
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        slot.clear()
        seq.prefilled = seq.cached = 0
        seq.paused = True
        if self._drafter is not None:
            self._drafter.forget(seq)
        self.counters.paused += 1
        log.info("%s: KV cache full, a request paused for the others", self.name)

    def _room_to_decode(self, running: list[Job], drafts: dict[Job, list[int]]) -> None:
        """Makes room for this step's decode tokens, pausing the newest requests if it must."""
        if self._cells is None:
            return
        need = sum(1 + len(drafts.get(seq, ())) for seq in running if seq.decoding)
        while not self._evict_idle(need):
            victim = next((seq for seq in reversed(running[1:]) if seq.slot.tokens), None)
            if victim is None:
                return  # cannot happen: the oldest request alone fits in the pool
            if victim.decoding:
                need -= 1 + len(drafts.pop(victim, ()))
            self._pause(victim)

    def _room_for(self, running: list[Job], seq: Job, cells: int) -> bool:
        """Whether `cells` more fit for a prefilling sequence, after freeing idle caches and then
        the cells of newer prefilling requests (the older request goes first)."""
        if self._cells is None or self._evict_idle(cells):
            return True
        for newer in reversed(running[running.index(seq) + 1:]):
            if not newer.decoding and newer.slot.tokens:
                self._pause(newer)
                if self._free_cells() >= cells:
                    return True
        return False
