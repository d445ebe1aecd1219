"""Generations that one engine admission takes together: the engine thread is held until all of
them are queued, so tests of the scheduler's step-by-step choices do not depend on timing."""

from __future__ import annotations

import asyncio
import threading


async def admit_together(engine, tasks: list[asyncio.Future]) -> None:
    """`tasks`: generations on `engine`, created (asyncio.ensure_future) but not yet run, i.e.
    with no await between their creation and this call. Returns once the engine has taken them."""
    gate = threading.Event()
    held = engine._scheduler.call_in_thread(gate.wait)  # queued before any of the tasks can submit
    while len(engine._scheduler._live) < len(tasks):
        await asyncio.sleep(0.01)
    gate.set()
    await asyncio.wrap_future(held)
