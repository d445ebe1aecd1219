"""Models on demand: the request's `model` picks one from the library and loads it when needed.

- Up to `max_loaded` models stay loaded; loading one more unloads the least recently used model
  that has nothing running (if every loaded model is busy, the request gets a 503 instead of
  breaking someone's stream).
- Requests for a model that is loading wait for that load; a failed load is a clear error and
  the other models keep serving.
- With `idle_timeout` (seconds) a model nobody used for that long is unloaded; the next request
  loads it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from homeport.engines.base import TextEngine
from homeport.errors import HomeportError, InvalidRequestError, ModelNotFoundError, ServiceUnavailableError, StartupError
from homeport.model_paths import ModelEntry, ModelLibrary

log = logging.getLogger(__name__)
ModelServices = TypeVar("ModelServices")
# Blocking. It may also have a `check(entry)` method: a quick test run before others are evicted.
EngineLoader = Callable[[ModelEntry, dict[str, Any]], TextEngine]


@dataclass(eq=False)
class LoadedModel(Generic[ModelServices]):
    entry: ModelEntry
    engine: TextEngine
    services: ModelServices
    args: dict[str, Any]
    last_used: float = field(default_factory=time.monotonic)
    pins: int = 0  # requests using it right now (a stream pins it until it ends)

    @property
    def busy(self) -> bool:
        return self.pins > 0


class ModelManager(Generic[ModelServices]):
    def __init__(
        self,
        *,
        library: ModelLibrary,
        loader: EngineLoader | None,
        build_services: Callable[[TextEngine, Any], ModelServices],  # (engine, prompt template or None)
        default_model: str,
        max_loaded: int = 1,
        idle_timeout: float = 0.0,
        aliases: dict[str, str] | None = None,
        unknown_to_default: bool = True,
    ) -> None:
        self.library = library
        self._loader = loader
        self._build_services = build_services
        self.default_model = default_model
        self.max_loaded = max_loaded
        self.idle_timeout = idle_timeout
        self.aliases = dict(aliases or {})
        # The reference API answers whatever name a request gives with the loaded model; apps send
        # "gpt-4o" or "x". Off (--strict-model-names): an unknown name is a 404.
        self.unknown_to_default = unknown_to_default
        self._loaded: dict[str, LoadedModel[ModelServices]] = {}
        self._loading: dict[str, asyncio.Task] = {}
        self._lock = asyncio.Lock()  # guards _loaded/_loading changes, not the loads themselves
        # One load at a time: two loads in parallel could both find room and overshoot max_loaded.
        self._load_lock = asyncio.Lock()

    # ---- lookup ----------------------------------------------------------------------------

    def resolve(self, name: str | None, *, strict: bool = False) -> str:
        """The model id a request means: its `model`, through the aliases; none means the default,
        and so does an unknown name unless `strict` (management calls) or strict model names."""
        if not name:
            return self.default_model
        name = self.aliases.get(name, name)
        if name in self._loaded:
            return name
        entry = self.library.find(name)
        if entry is not None:
            return entry.id
        if self.unknown_to_default and not strict:
            return self.default_model
        raise ModelNotFoundError(f"The model '{name}' does not exist (models are looked up in {self.library.model_dir})",
                                 param="model")

    def loaded(self) -> list[LoadedModel[ModelServices]]:
        """Most recently used first."""
        return sorted(self._loaded.values(), key=lambda m: m.last_used, reverse=True)

    def listing(self) -> list[tuple[ModelEntry, LoadedModel | None]]:
        """Every available model, loaded ones first."""
        entries = {m.entry.id: (m.entry, m) for m in self.loaded()}
        for entry in sorted(self.library.scan(), key=lambda e: e.id):
            entries.setdefault(entry.id, (entry, None))
        return list(entries.values())

    # ---- use -------------------------------------------------------------------------------

    async def acquire(self, name: str | None, *, strict: bool = False) -> LoadedModel[ModelServices]:
        """The model for a request, loaded if needed, pinned until `release` (a stream pins its
        model until it ends, so eviction never cuts it off)."""
        model = await self.get(name, strict=strict)
        model.pins += 1
        return model

    def release(self, model: LoadedModel[ModelServices]) -> None:
        model.pins -= 1
        model.last_used = time.monotonic()

    async def get(
        self, name: str | None, args: dict[str, Any] | None = None, template: Any = None, *, strict: bool = False
    ) -> LoadedModel[ModelServices]:
        model_id = self.resolve(name, strict=strict)
        model = self._loaded.get(model_id)
        if model is not None and args is None:
            model.last_used = time.monotonic()
            return model
        async with self._lock:
            task = self._loading.get(model_id)
            if task is None:
                if model is not None:  # an explicit reload with other arguments
                    await self._unload(model)
                task = asyncio.create_task(self._load(model_id, args or {}, template))
                self._loading[model_id] = task
        try:
            # Shielded: one waiting request giving up must not cancel a load others wait for.
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._loading.pop(model_id, None)

    async def _load(self, model_id: str, args: dict[str, Any], template: Any) -> LoadedModel[ModelServices]:
        entry = self.library.find(model_id)
        if entry is None:
            raise ModelNotFoundError(f"The model '{model_id}' does not exist", param="model")
        if self._loader is None:
            raise ServiceUnavailableError(f"the model '{model_id}' is not loaded and this server cannot load models")
        async with self._load_lock:
            check = getattr(self._loader, "check", None)
            try:
                if check is not None:
                    # A file that cannot load must not cost a loaded model its place.
                    await asyncio.to_thread(check, entry)
                await self._make_room()
                log.info("loading model %s", entry.id)
                engine = await asyncio.to_thread(self._loader, entry, args)
            except HomeportError:
                raise
            except StartupError as exc:
                raise InvalidRequestError(f"cannot load {entry.id}: {exc}", param="model", code="model_load_failed") from None
            await engine.start()
            model = LoadedModel(entry=entry, engine=engine, services=self._build_services(engine, template), args=args)
            self._loaded[entry.id] = model
            return model

    async def _make_room(self) -> None:
        while len(self._loaded) >= self.max_loaded:
            idle = [m for m in self._loaded.values() if not m.busy and m.engine.stats().active == 0]
            if not idle:
                raise ServiceUnavailableError(
                    f"all {self.max_loaded} loaded model(s) are busy; retry shortly or raise --max-loaded-models",
                    headers={"Retry-After": "5"},
                )
            await self._unload(min(idle, key=lambda m: m.last_used))

    # ---- management ------------------------------------------------------------------------

    def adopt(self, entry: ModelEntry, engine: TextEngine, args: dict[str, Any] | None = None) -> None:
        """Register an engine loaded before the server started (the `--model`)."""
        self._loaded[entry.id] = LoadedModel(entry, engine, self._build_services(engine, None), dict(args or {}))

    async def load(self, name: str, args: dict[str, Any], template: Any = None) -> LoadedModel[ModelServices]:
        """Loads (or reloads, with these arguments) a model."""
        return await self.get(name, args, template, strict=True)

    async def unload(self, name: str | None) -> list[str]:
        """Unloads one model (or all with None); returns the ids unloaded."""
        async with self._lock:
            targets = list(self._loaded.values()) if name is None else [self._loaded.get(self.resolve(name, strict=True))]
            if None in targets:
                raise InvalidRequestError(f"the model '{name}' is not loaded", param="model_name")
            for model in targets:
                await self._unload(model)
            return [m.entry.id for m in targets]

    async def _unload(self, model: LoadedModel) -> None:
        self._loaded.pop(model.entry.id, None)
        log.info("unloading model %s", model.entry.id)
        await model.engine.close()

    async def unload_idle(self) -> None:
        if not self.idle_timeout:
            return
        deadline = time.monotonic() - self.idle_timeout
        for model in list(self._loaded.values()):
            if model.last_used < deadline and not model.busy and model.engine.stats().active == 0:
                async with self._lock:
                    await self._unload(model)

    async def run_idle_watch(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, min(30.0, self.idle_timeout / 4)))
            await self.unload_idle()

    async def start(self) -> None:
        for model in self._loaded.values():
            await model.engine.start()

    async def close(self) -> None:
        for task in self._loading.values():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for model in list(self._loaded.values()):
            await self._unload(model)
