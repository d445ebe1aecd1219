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
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from homeport import metrics
from homeport.engines.capabilities import DESCRIPTIONS
from homeport.engines.load_progress import CURRENT as CURRENT_LOAD, LoadProgress
from homeport.errors import HomeportError, InvalidRequestError, ModelNotFoundError, ServiceUnavailableError, StartupError
from homeport.registry.library import ModelEntry, ModelLibrary

log = logging.getLogger(__name__)
ModelServices = TypeVar("ModelServices")
# Blocking; returns an engine of the entry's kind (engines/capabilities.py: `Managed` and the kind's
# protocol). It may also have a `check(entry)` method: a quick test run before others are evicted.
EngineLoader = Callable[[ModelEntry, dict[str, Any]], Any]
# The kind of model a capability's default comes from.
CAPABILITY_KINDS = {"text_generation": "text", "embedding": "embedding", "rerank": "rerank",
                    "image_generation": "image", "transcription": "transcription", "speech_synthesis": "speech"}
# Kinds whose requests fall back to the kind's default for an unknown name (even with strict model
# names) or a model of another kind: clients send OpenAI's names ("text-embedding-3-small",
# "dall-e-3", "whisper-1", "tts-1") or their chat model's, and the embedding endpoints ignored
# `model` before.
_LENIENT_KINDS = frozenset({"embedding", "rerank", "image", "transcription", "speech"})


class ModelLacksCapabilityError(InvalidRequestError):
    code = "model_lacks_capability"


@dataclass(eq=False)
class LoadedModel(Generic[ModelServices]):
    entry: ModelEntry
    engine: Any  # the kind's engine (a TextEngine for text models)
    services: ModelServices | None  # per-model services (text models); None for other kinds
    args: dict[str, Any]
    last_used: float = field(default_factory=time.monotonic)
    pins: int = 0  # requests using it right now (a stream pins it until it ends)
    job_starts: collections.deque = field(default_factory=collections.deque)  # when each pin began

    @property
    def busy(self) -> bool:
        return self.pins > 0

    @property
    def idle(self) -> bool:
        return not self.busy and self.engine.stats().active == 0


class ModelManager(Generic[ModelServices]):
    def __init__(
        self,
        *,
        library: ModelLibrary,
        loader: EngineLoader | None,
        build_services: Callable[[Any, Any], ModelServices],  # (text engine, prompt template or None)
        default_model: str,
        defaults: dict[str, str | HomeportError] | None = None,  # kind → its default model (or why none)
        max_loaded: int = 1,
        idle_timeout: float = 0.0,
        aliases: dict[str, str] | None = None,
        unknown_to_default: bool = True,
    ) -> None:
        self.library = library
        self._loader = loader
        self._build_services = build_services
        self.default_model = default_model
        # Each kind's default (text: default_model). An error: the kind's default cannot be had (a 503 on use).
        self.defaults: dict[str, str | HomeportError] = {**(defaults or {}), "text": default_model}
        self.max_loaded = max_loaded
        self.idle_timeout = idle_timeout
        self.aliases = dict(aliases or {})
        # The reference API answers whatever name a request gives with the loaded model; apps send
        # "gpt-4o" or "x". Off (--strict-model-names): an unknown name is a 404.
        self.unknown_to_default = unknown_to_default
        self._loaded: dict[str, LoadedModel[ModelServices]] = {}
        self._loading: dict[str, asyncio.Task] = {}
        self._progress: dict[str, LoadProgress] = {}  # loads under way (model/info shows them)
        self._lock = asyncio.Lock()  # guards _loaded/_loading changes, not the loads themselves
        # One load at a time: two loads in parallel could both find room and overshoot max_loaded.
        self._load_lock = asyncio.Lock()

    # ---- lookup ----------------------------------------------------------------------------

    def resolve(self, name: str | None, *, strict: bool = False, capability: str = "text_generation",
                entries: list[ModelEntry] | None = None) -> str:
        """The model id a request means: its `model`, through the aliases; none means the default of
        the capability's kind, and so does an unknown name unless `strict` (management calls) or
        strict model names. `entries`: a fresh library scan (async callers make it off the loop)."""
        kind = CAPABILITY_KINDS.get(capability, "text")
        if not name:
            return self._default(kind)
        name = self.aliases.get(name, name)
        entry = self._loaded[name].entry if name in self._loaded else self.library.find(name, entries)
        if entry is not None:
            if kind in _LENIENT_KINDS and not strict and capability not in entry.capabilities:
                # These endpoints ignored `model` before: a chat model's name still gets the default.
                return self._default(kind)
            return entry.id
        if not strict and (self.unknown_to_default or kind in _LENIENT_KINDS):
            return self._default(kind)
        raise ModelNotFoundError(f"The model '{name}' does not exist (models are looked up in {self.library.model_dir})",
                                 param="model")

    def _default(self, kind: str) -> str:
        default = self.defaults.get(kind)
        if isinstance(default, HomeportError):
            raise default
        if default is None:
            raise ServiceUnavailableError(f"no {kind} model is configured")
        return default

    def loaded(self, kind: str | None = "text") -> list[LoadedModel[ModelServices]]:
        """Most recently used first; text models only unless another `kind` (None: every kind)."""
        found = [m for m in self._loaded.values() if kind is None or m.entry.kind == kind]
        return sorted(found, key=lambda m: m.last_used, reverse=True)

    def listing(self, kind: str | None = "text") -> list[tuple[ModelEntry, LoadedModel | None]]:
        """Every available model of a kind (text: the reference API's model list; None: every
        kind), loaded ones first. Blocking (scans the library)."""
        entries = {m.entry.id: (m.entry, m) for m in self.loaded(kind)}
        for entry in sorted(self.library.scan(), key=lambda e: e.id):
            if kind is None or entry.kind == kind:
                entries.setdefault(entry.id, (entry, None))
        return list(entries.values())

    async def alisting(self, kind: str | None = None) -> list[tuple[ModelEntry, LoadedModel | None]]:
        """`listing` of every kind (or one), with the library scanned off the event loop."""
        return await asyncio.to_thread(self.listing, kind)

    # ---- use -------------------------------------------------------------------------------

    async def acquire(self, name: str | None, *, strict: bool = False,
                      capability: str = "text_generation") -> LoadedModel[ModelServices]:
        """The model for a request, loaded if needed, pinned until `release` (a stream pins its
        model until it ends, so eviction never cuts it off). A model without `capability` is a 400."""
        model = await self.get(name, strict=strict, capability=capability)
        model.pins += 1
        model.job_starts.append(time.perf_counter())
        return model

    def release(self, model: LoadedModel[ModelServices]) -> None:
        model.pins -= 1
        model.last_used = time.monotonic()
        # A job of the kinds other than text (they have token histograms) is acquire → release.
        # A stream ends in another task than it began, so starts match first in, first out:
        # overlapping jobs may pair up differently, their count and total time never do.
        started = model.job_starts.popleft() if model.job_starts else None
        if started is not None and model.entry.kind != "text":
            metrics.JOB_SECONDS.labels(model.entry.kind).observe(time.perf_counter() - started)

    @contextlib.asynccontextmanager
    async def using(self, name: str | None, capability: str) -> AsyncIterator[LoadedModel[ModelServices]]:
        """`acquire` … `release` around a block (a whole non-streamed request)."""
        model = await self.acquire(name, capability=capability)
        try:
            yield model
        finally:
            self.release(model)

    async def get(
        self, name: str | None, args: dict[str, Any] | None = None, template: Any = None, *, strict: bool = False,
        capability: str | None = "text_generation",
    ) -> LoadedModel[ModelServices]:
        model_id = self.resolve(name, strict=strict, capability=capability or "text_generation",
                                entries=await self._entries(name))
        model = self._loaded.get(model_id)
        if model is not None and args is None:
            self._check_capability(model.entry, capability)
            model.last_used = time.monotonic()
            return model
        async with self._lock:
            task = self._loading.get(model_id)
            if task is None:
                if model is not None:  # an explicit reload with other arguments
                    await self._unload(model)
                task = asyncio.create_task(self._load(model_id, args or {}, template, capability))
                self._loading[model_id] = task
        try:
            # Shielded: one waiting request giving up must not cancel a load others wait for.
            model = await asyncio.shield(task)
        finally:
            if task.done():
                self._loading.pop(model_id, None)
        self._check_capability(model.entry, capability)
        return model

    async def entry(self, name: str | None) -> ModelEntry | None:
        """The loaded or library model `name` means (through the aliases), or None."""
        if not name:
            return None
        name = self.aliases.get(name, name)
        if name in self._loaded:
            return self._loaded[name].entry
        return await asyncio.to_thread(self.library.find, name)

    async def _entries(self, name: str | None) -> list[ModelEntry] | None:
        """A library scan made in a worker thread when `name` needs one (it is not loaded)."""
        if not name or self.aliases.get(name, name) in self._loaded:
            return None
        return await asyncio.to_thread(self.library.scan)

    @staticmethod
    def _check_capability(entry: ModelEntry, capability: str | None) -> None:
        if capability is not None and capability not in entry.capabilities:
            what = DESCRIPTIONS.get(capability, capability)
            raise ModelLacksCapabilityError(
                f"The model '{entry.id}' is a {entry.kind} model and cannot {what} (capability {capability!r})",
                param="model",
            )

    async def _load(self, model_id: str, args: dict[str, Any], template: Any,
                    capability: str | None = None) -> LoadedModel[ModelServices]:
        entry = await asyncio.to_thread(self.library.find, model_id)
        if entry is None:
            raise ModelNotFoundError(f"The model '{model_id}' does not exist", param="model")
        self._check_capability(entry, capability)  # before anything is evicted for it
        if self._loader is None:
            raise ServiceUnavailableError(f"the model '{model_id}' is not loaded and this server cannot load models")
        async with self._load_lock:
            check = getattr(self._loader, "check", None)
            try:
                if check is not None:
                    # A file that cannot load must not cost a loaded model its place.
                    await asyncio.to_thread(check, entry)
                await self._make_room(entry.kind)
                log.info("loading model %s", entry.id)
                started = time.perf_counter()
                progress = self._progress[entry.id] = LoadProgress(entry.id, entry.kind)
                token = CURRENT_LOAD.set(progress)  # to_thread carries it to the backend's load
                watcher = asyncio.create_task(progress.watch())
                try:
                    engine = await asyncio.to_thread(self._loader, entry, args)
                finally:
                    CURRENT_LOAD.reset(token)
                    watcher.cancel()
                    self._progress.pop(entry.id, None)
                progress.log_quarters()
                await engine.start()
            except HomeportError:
                metrics.MODEL_LOADS.labels(entry.kind, "failed").inc()
                raise
            except StartupError as exc:
                metrics.MODEL_LOADS.labels(entry.kind, "failed").inc()
                raise InvalidRequestError(f"cannot load {entry.id}: {exc}", param="model", code="model_load_failed") from None
            except BaseException:
                metrics.MODEL_LOADS.labels(entry.kind, "failed").inc()
                raise
            seconds = time.perf_counter() - started
            metrics.MODEL_LOADS.labels(entry.kind, "loaded").inc()
            metrics.MODEL_LOAD_SECONDS.labels(entry.kind).observe(seconds)
            log.info("loaded model %s in %.1fs", entry.id, seconds)
            services = self._build_services(engine, template) if entry.kind == "text" else None
            model = LoadedModel(entry=entry, engine=engine, services=services, args=args)
            self._loaded[entry.id] = model
            return model

    def loads_in_progress(self) -> list[dict]:
        """The loads under way: model, kind, progress (0..1, or None when the backend cannot tell), seconds."""
        return [progress.as_dict() for progress in list(self._progress.values())]

    async def _make_room(self, kind: str = "text") -> None:
        """max_loaded counts per kind: an embedding model never evicts a chat model, nor the reverse."""
        while len(same := [m for m in self._loaded.values() if m.entry.kind == kind]) >= self.max_loaded:
            idle = [m for m in same if m.idle]
            if not idle:
                raise ServiceUnavailableError(
                    f"all {self.max_loaded} loaded {kind} model(s) are busy; retry shortly or raise --max-loaded-models",
                    headers={"Retry-After": "5"},
                )
            await self._unload(min(idle, key=lambda m: m.last_used))
            metrics.MODEL_EVICTIONS.labels(kind).inc()

    # ---- management ------------------------------------------------------------------------

    async def load_default(self) -> LoadedModel[ModelServices]:
        """The start-up load of the default text model, made while the server already answers
        liveness (readiness waits for it; requests for the model wait for it as for any load)."""
        return await self.get(self.default_model, strict=True)

    async def preload(self, kind: str, capability: str) -> None:
        """Loads a kind's default model ahead of its first request; a failure is logged (the next
        request tries again), never raised: the other kinds serve meanwhile."""
        name = self.defaults.get(kind)
        if not isinstance(name, str):
            return
        try:
            await self.get(name, strict=True, capability=capability)
        except Exception as exc:  # noqa: BLE001 - logged, not fatal
            log.warning("%s model %s did not load: %s", kind, name, exc)

    def adopt(self, entry: ModelEntry, engine: Any, args: dict[str, Any] | None = None) -> None:
        """Register an engine loaded before the server started (the `--model`)."""
        services = self._build_services(engine, None) if entry.kind == "text" else None
        self._loaded[entry.id] = LoadedModel(entry, engine, services, dict(args or {}))

    async def load(self, name: str, args: dict[str, Any], template: Any = None) -> LoadedModel[ModelServices]:
        """Loads (or reloads, with these arguments) a model of any kind; the library is rescanned."""
        self.library.refresh()
        return await self.get(name, args, template, strict=True, capability=None)

    async def unload(self, name: str | None) -> list[str]:
        """Unloads one model (or all with None); returns the ids unloaded."""
        async with self._lock:
            targets = (list(self._loaded.values()) if name is None
                       else [self._loaded.get(self.resolve(name, strict=True, entries=await self._entries(name)))])
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
            if model.last_used < deadline and model.idle:
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
