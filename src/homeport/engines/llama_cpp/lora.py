"""LoRA adapters on a llama.cpp context.

Only the engine thread touches a `LoraSet` (through `Scheduler.call_in_thread`), and only while
no generation is running: adapters change the weights every cached KV cell was computed with.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import llama_cpp

from homeport.errors import EngineError, EngineInputError

log = logging.getLogger(__name__)

Adapters = tuple[tuple[Path, float], ...]  # (adapter file, scale), in the order applied


class LoraSet:
    """The adapters applied to one context. An adapter stays loaded while it is applied, so
    changing only the scales, or adding one more, reads no file again."""

    def __init__(self, model: llama_cpp.llama_model_p, ctx: llama_cpp.llama_context_p) -> None:
        self._model = model
        self._ctx = ctx
        self._loaded: dict[Path, llama_cpp.llama_adapter_lora_p] = {}
        self.applied: Adapters = ()  # replaced whole, so the event loop may read it at any time

    def apply(self, adapters: Sequence[tuple[Path, float]]) -> bool:
        """Makes `adapters` the applied set; returns whether anything changed. On an error the
        previous set stays applied."""
        adapters = tuple(adapters)
        if adapters == self.applied:
            return False
        fresh = []
        try:
            for path, _ in adapters:
                if path not in self._loaded:
                    self._loaded[path] = _load(self._model, path)
                    fresh.append(path)
            self._set(adapters)
        except BaseException:
            for path in fresh:
                llama_cpp.llama_adapter_lora_free(self._loaded.pop(path))
            raise
        self.applied = adapters
        wanted = {path for path, _ in adapters}
        for path in [p for p in self._loaded if p not in wanted]:
            llama_cpp.llama_adapter_lora_free(self._loaded.pop(path))
        return True

    def close(self) -> None:
        """Detaches and frees every adapter; call before the context and the model are freed
        (freeing the model would free them too, and a second free would crash)."""
        if self.applied:
            self._set(())
            self.applied = ()
        for handle in self._loaded.values():
            llama_cpp.llama_adapter_lora_free(handle)
        self._loaded.clear()

    def _set(self, adapters: Adapters) -> None:
        n = len(adapters)
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * n)(*(self._loaded[path] for path, _ in adapters))
        scales = (ctypes.c_float * n)(*(scale for _, scale in adapters))
        if llama_cpp.llama_set_adapters_lora(self._ctx, handles, n, scales) != 0:
            raise EngineError("llama.cpp could not apply the LoRA adapters")


def _load(model: llama_cpp.llama_model_p, path: Path) -> llama_cpp.llama_adapter_lora_p:
    handle = llama_cpp.llama_adapter_lora_init(model, os.fsencode(path))
    if not handle:
        # llama.cpp says why only in its own log (silent unless --verbose).
        log.warning("llama.cpp refused the LoRA adapter %s", path.name)
        raise EngineInputError(
            f"cannot load the LoRA '{path.stem}': {path.name} is not a LoRA adapter (GGUF) for this model's "
            "architecture and tensor shapes",
            code="lora_load_failed",
        )
    return handle
