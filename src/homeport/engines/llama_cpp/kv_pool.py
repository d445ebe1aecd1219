"""The scheduler's KV pool: admission against the cells left, eviction of idle caches, pausing.

With one unified cache (the default) all sequences draw their cells from one pool of
`kv_cells`, which may be smaller than `parallel` full contexts (one context's worth by default, as
llama-server's `-c` with `-kvu`). Cells shared by several slots count once (`prefix.held_cells`).
A request joins only while the running ones' cells and growth leave room for its prompt; when
their growth runs the pool dry, idle slots' cached prefixes go first (least recently used first),
then the newest request is paused: its cells are given up, and when there is room again it
re-reads its prompt and what it had generated, and goes on (vLLM's preemption by recomputation).
Its client only sees a delay.

Idle caches in host memory: every decode step's attention scans all the cells in use up to the
highest one, masked or not, so in the unified cache another conversation's cached prefix slows
every running request (SmolLM2 on a CPU: +10-16 % per token with 1,000 idle cells, +25 % with
4,000; docs/benchmarks.md). When a request is admitted, the idle slots' cells (and what its own
slot keeps for it) are copied out
(`llama_state_seq_get_data`, up to `store_bytes` in all, least recently used dropped first) and
freed; a request that reuses them gets them back by a copy (`_restore`), not a re-read, placed
in order in the lowest free cells.

`KVPool` is mixed into `scheduler.Scheduler` and works on its slots (`_slots`, `_free`), its cache
(`_memory`, `_cells`: None for separate streams, where none of this applies) and its sharing rules
(`_may_share`, `_unstarted`, `_chunk`).
"""

from __future__ import annotations

import ctypes
import logging
from typing import TYPE_CHECKING

import llama_cpp

from homeport.engines.llama_cpp.prefix import held_cells

if TYPE_CHECKING:
    from homeport.engines.llama_cpp.prefix import Slot
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
            if slot.runs:  # (a stored slot holds no cells)
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

    def _store_idle(self, chosen: Slot, source: Slot) -> None:
        """At a request's admission, moves the cells of the idle slots and of its `chosen` slot
        out of the cache (cells a running slot shares stay in it for that one; a slot holding only
        such cells stays as it is; the stored copy of `source`, which the request reuses, is kept).
        What the request then takes back (`_restore`) and its prompt go to the lowest freed cells,
        in the order of their positions: the attention sums a sequence's cells in cache order, so
        this keeps a cache hit's output that of a fresh run."""
        if self._cells is None or not self._store_bytes:
            return
        running_slots = [s for s in self._slots if s not in self._free and s is not chosen]
        base = held_cells(running_slots)
        for slot in [*self._free, chosen]:
            if not slot.runs or held_cells([*running_slots, slot]) == base:
                continue
            size = llama_cpp.llama_state_seq_get_size(self._ctx.ctx, slot.seq_id)
            if not self._fit_store(size, source):
                continue  # it stays in the cache (and is evicted first when the pool runs dry)
            data = (ctypes.c_uint8 * size)()
            if llama_cpp.llama_state_seq_get_data(self._ctx.ctx, data, size, slot.seq_id) != size:
                continue
            pos_min = llama_cpp.llama_memory_seq_pos_min(self._memory, slot.seq_id)
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            slot.store(data, pos_min)
            self.counters.caches_stored += 1

    def _fit_store(self, size: int, keep: Slot) -> bool:
        """Drops stored caches but `keep`'s, least recently used first, until `size` more bytes
        fit; whether they do."""
        if size > self._store_bytes:
            return False
        stored = sorted((s for s in self._slots if s.stored is not None and s is not keep), key=lambda s: s.last_used)
        total = sum(len(s.stored) for s in self._slots if s.stored is not None)
        for slot in stored:
            if total + size <= self._store_bytes:
                break
            total -= len(slot.stored)
            slot.clear()
        return total + size <= self._store_bytes

    def _restore(self, slot: Slot, source: Slot, reuse: int) -> int:
        """Puts `source`'s stored cells back into the cache as `slot`'s and keeps the first `reuse`
        of them; how many it kept (0: they did not fit, and the prompt is read afresh)."""
        data, tokens = source.stored, source.tokens[:reuse]
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        slot.clear()  # (source's copy too, when it is this slot: its cells are live again)
        if not reuse or not llama_cpp.llama_state_seq_set_data(self._ctx.ctx, data, len(data), slot.seq_id):
            return 0
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, reuse, -1)
        slot.extend(tokens)
        self.counters.caches_restored += 1
        return reuse
