"""How far a model load has got, reported by the backend that loads it and read by the model
manager (`/v1/internal/model/info` shows it; the log gets a line at each quarter, written from the event
loop while the load runs).

The manager sets `CURRENT` before it runs a backend's blocking `load` in a worker thread
(`asyncio.to_thread` carries context variables into the thread), so a backend that can tell its
progress (llama.cpp calls back while it reads tensors) reports it without any new argument.
A backend that cannot just never calls `report`; its load shows as started, with no fraction.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger("homeport")


@dataclass
class LoadProgress:
    model_id: str
    kind: str
    started: float = field(default_factory=time.monotonic)
    fraction: float | None = None  # 0..1 once the backend reports one
    _logged_quarter: int = 0

    def report(self, fraction: float) -> None:
        """Called from the loading thread (often: llama.cpp calls once per tensor). Not logged
        here: llama.cpp points the process's stderr at /dev/null while it loads quietly."""
        self.fraction = min(1.0, max(0.0, float(fraction)))

    def log_quarters(self) -> None:
        """A log line for each quarter reached since the last call (the manager calls it from
        the event loop while the load runs, and once after)."""
        quarter = int((self.fraction or 0.0) * 4)
        if quarter > self._logged_quarter:
            self._logged_quarter = quarter
            log.info("loading model %s: %d%%", self.model_id, quarter * 25)

    async def watch(self, interval: float = 0.5) -> None:
        """Logs the quarters as they are reached, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.log_quarters()

    def as_dict(self) -> dict:
        return {"model": self.model_id, "kind": self.kind, "progress": self.fraction,
                "seconds": round(time.monotonic() - self.started, 1)}


CURRENT: contextvars.ContextVar[LoadProgress | None] = contextvars.ContextVar("homeport_load_progress", default=None)


def report(fraction: float) -> None:
    """The load running in this thread got this far (no-op outside a managed load)."""
    progress = CURRENT.get()
    if progress is not None:
        progress.report(fraction)
