"""One registry for every kind of model: the backends that serve them, how each recognises its
files, its typed load arguments and how it loads.

A backend registers itself where it is defined (its package's `__init__` calls `register`); the
registry imports the packages under `homeport.engines` on first use, so adding a backend is one
folder and one `register(...)` call. Nothing outside a backend branches on its format. A backend
package's `__init__` must stay cheap: the heavy imports (torch, llama_cpp) belong inside `load`.

Files the library recognises but no backend serves (Hugging Face-format Whisper folders, Piper
voices) register a `Recognizer` from the package of their kind: they are listed (with no
capabilities) and a request naming one is a 400 that says no backend serves them.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homeport.errors import InvalidRequestError, UnsupportedParameterError

if TYPE_CHECKING:
    from homeport.registry.library import ModelEntry
    from homeport.settings import Settings

# Model kinds, each served by at least one backend.
KINDS = ("text", "embedding", "rerank", "image", "transcription", "speech")


@dataclass(frozen=True)
class Flag:
    """The start-up command-line flag of a load argument (its Settings field is `LoadArg.setting`)."""

    names: tuple[str, ...]  # e.g. ("--n-gpu-layers", "--gpu-layers")
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    switch: bool = False  # --x / --no-x (argparse.BooleanOptionalAction)


@dataclass(frozen=True)
class LoadArg:
    """One load argument (the reference API's name): its type and what values it takes. The single
    source for `model/load` validation, the start-up flag and its Settings field, and the default."""

    name: str
    type: type  # int | float | bool | str
    help: str
    default: Any = None  # when neither the request nor the settings give one
    setting: str | None = None  # the Settings field that gives its start-up value
    flag: Flag | None = None
    signed: bool = False  # ints: negative values allowed (-1 = all)
    minimum: float | None = None  # the smallest value (e.g. 1, or -1 with signed)
    between: tuple[float, float] | None = None  # inclusive range
    choices: tuple[str, ...] | None = None
    invalid: str | None = None  # the message for a value outside `between` / `choices`
    parse: Callable[[Any], Any] | None = None  # e.g. "60,40" → (60.0, 40.0); raises InvalidRequestError
    alias_of: str | None = None  # stored under that name

    def check(self, value: Any) -> Any:
        """The value, checked (and parsed); an `InvalidRequestError` naming it otherwise."""
        name, param = self.name, f"args.{self.name}"
        kind = self.type
        if kind is bool and not isinstance(value, bool):
            raise InvalidRequestError(f"load argument {name!r} must be true or false", param=param)
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidRequestError(f"load argument {name!r} must be an integer", param=param)
        if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidRequestError(f"load argument {name!r} must be a number", param=param)
        if kind is str and not isinstance(value, str):
            raise InvalidRequestError(f"load argument {name!r} must be a string", param=param)
        if self.choices is not None and (value.lower() if name == "loader" else value) not in self.choices:
            raise InvalidRequestError(self.invalid or f"{name} must be one of {', '.join(self.choices)}", param=param)
        if kind is int and not self.signed and value < 0:
            raise InvalidRequestError(f"load argument {name!r} must not be negative", param=param)
        if self.minimum is not None and value < self.minimum:
            raise InvalidRequestError(f"load argument {name!r} must be at least {self.minimum:g}", param=param)
        if self.between is not None and not self.between[0] <= value <= self.between[1]:
            low, high = self.between
            raise InvalidRequestError(self.invalid or f"load argument {name!r} must be between {low:g} and {high:g}",
                                      param=param)
        return self.parse(value) if self.parse is not None else value


@dataclass(frozen=True)
class Backend:
    """A kind of model homeport serves. `load` and `check` are blocking (run them in a thread) and
    import the heavy libraries themselves."""

    name: str  # e.g. "llama.cpp"; entries name their backend by it
    kind: str  # one of KINDS
    format: str  # what `/v1/models` shows as `format` (e.g. gguf, transformers)
    detect: Callable[[Path], bool]  # a GGUF file or a folder: is it this backend's? (cheap: metadata only)
    load: Callable[[ModelEntry, Settings, dict[str, Any]], Any]  # → an engine with the kind's capabilities
    load_args: tuple[LoadArg, ...] = ()
    capabilities: tuple[str, ...] = ()  # what its engines can do (see engines/capabilities.py)
    check: Callable[[ModelEntry], None] | None = None  # a quick test before others are evicted
    loaders: tuple[str, ...] = ()  # names the `loader` load argument accepts for it (lowercase)
    loader_label: str = ""  # how the `loader` error message names it
    files: str = "file"  # "file" (a GGUF) or "folder"
    priority: int = 0  # higher detects first (an embedding GGUF before the generic text GGUF)

    def arg(self, name: str) -> LoadArg | None:
        return next((a for a in self.load_args if a.name == name), None)


def json_object(path: Path) -> dict:
    """A JSON file's object for detection, or {} (missing, unreadable, not JSON, not an object):
    detection never raises; the load reports what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Recognizer:
    """Files of a kind no backend serves yet: listed, never loaded."""

    name: str
    kind: str
    format: str
    detect: Callable[[Path], bool]
    files: str = "folder"
    capabilities: tuple[str, ...] = ()
    priority: int = 0


@dataclass
class _Registry:
    backends: dict[str, Backend] = field(default_factory=dict)
    recognizers: dict[str, Recognizer] = field(default_factory=dict)
    discovered: bool = False


_REGISTRY = _Registry()
_DISCOVERY = threading.RLock()


def register(backend: Backend | Recognizer) -> Backend | Recognizer:
    if backend.kind not in KINDS:
        raise ValueError(f"unknown model kind {backend.kind!r}")
    table = _REGISTRY.backends if isinstance(backend, Backend) else _REGISTRY.recognizers
    table[backend.name] = backend
    return backend


def _discover() -> None:
    """Imports every package under homeport.engines once: each registers its backends."""
    if _REGISTRY.discovered:
        return
    with _DISCOVERY:
        if _REGISTRY.discovered:
            return
        import homeport.engines as engines

        for module in pkgutil.iter_modules(engines.__path__):
            if module.ispkg:
                importlib.import_module(f"homeport.engines.{module.name}")
        _REGISTRY.discovered = True


def backends(kind: str | None = None) -> list[Backend]:
    """Every registered backend (of one kind), in detection order."""
    _discover()
    found = [b for b in _REGISTRY.backends.values() if kind is None or b.kind == kind]
    return sorted(found, key=lambda b: -b.priority)


def recognizers() -> list[Backend | Recognizer]:
    """Backends and recognisers together, in detection order."""
    _discover()
    every: list[Backend | Recognizer] = [*_REGISTRY.backends.values(), *_REGISTRY.recognizers.values()]
    return sorted(every, key=lambda b: -b.priority)


def backend(name: str) -> Backend:
    _discover()
    return _REGISTRY.backends[name]


def find_backend(name: str) -> Backend | None:
    _discover()
    return _REGISTRY.backends.get(name)


def recognise(path: Path) -> Backend | Recognizer | None:
    """What a GGUF file or a folder is, or None."""
    files = "file" if path.is_file() else "folder"
    for candidate in recognizers():
        if candidate.files == files and candidate.detect(path):
            return candidate
    return None


def capabilities_of(name: str) -> tuple[str, ...]:
    _discover()
    known = _REGISTRY.backends.get(name) or _REGISTRY.recognizers.get(name)
    return known.capabilities if known is not None else ()


# ---- load arguments ------------------------------------------------------------------------------


def setting_knobs() -> dict[str, LoadArg]:
    """The load arguments whose start-up value is a Settings field of their own name (`--ctx-size`,
    `ctx_size:` in settings.yaml): `homeport.settings` makes each one a field, with its type, range
    and default from this declaration. Where backends share a knob, the one with the flag declares it."""
    knobs: dict[str, LoadArg] = {}
    for candidate in backends():
        for arg in candidate.load_args:
            if arg.setting == arg.name and (arg.name not in knobs or (arg.flag and not knobs[arg.name].flag)):
                knobs[arg.name] = arg
    return knobs


# Known to the reference API, not available in homeport yet: refused, never silently dropped.
NOT_YET = {
    "numa": "NUMA placement",
    "device_draft": "a separate device for the draft model",
    "ctx_size_draft": "a separate draft context size; the draft model's follows ctx_size",
    "spec_ngram_size_m": "a separate prompt-lookup draft length; use draft_max",
    "spec_ngram_min_hits": "prompt-lookup hit thresholds",
}


def loader_arg() -> LoadArg:
    """`loader`: the reference API's choice of engine; it must match the model's backend."""
    named = [b for b in backends() if b.loaders]
    labels = " or ".join(b.loader_label for b in named)
    return LoadArg("loader", str, f"{labels}: must match the model",
                   choices=tuple(name for b in named for name in b.loaders), invalid=f"loader must be {labels}")


def all_load_args() -> dict[str, LoadArg]:
    """Every load argument some backend honours (the first backend's declaration of a shared name)."""
    table: dict[str, LoadArg] = {}
    for candidate in backends():
        for arg in candidate.load_args:
            table.setdefault(arg.name, arg)
    table["loader"] = loader_arg()
    return table


def validate_load_args(args: dict[str, Any] | None) -> dict[str, Any]:
    """`model/load`'s arguments checked against every backend's (which apply is checked at load,
    when the model's backend is known); aliases stored under their canonical name."""
    table = all_load_args()
    checked: dict[str, Any] = {}
    for name, value in (args or {}).items():
        if name in NOT_YET:
            raise UnsupportedParameterError(f"load argument {name!r} ({NOT_YET[name]}) is not supported yet",
                                            param=f"args.{name}")
        arg = table.get(name)
        if arg is None:
            valid = ", ".join(sorted(table))
            raise InvalidRequestError(f"unknown load argument {name!r}; valid arguments: {valid}", param=f"args.{name}")
        checked[arg.alias_of or name] = arg.check(value)
    return checked


def check_args_fit(entry: ModelEntry, chosen: Backend, args: dict[str, Any]) -> None:
    """Every argument applies to this model's backend, and `loader` names it."""
    loader = args.get("loader")
    if loader is not None and loader.lower() not in chosen.loaders:
        raise InvalidRequestError(f"{entry.id} is a {entry.format} model: the {loader} loader cannot load it",
                                  param="args.loader")
    valid = sorted({a.name for a in chosen.load_args} | ({"loader"} if chosen.loaders else set()))
    for name in args:
        if name == "loader":
            continue
        if chosen.arg(name) is None:
            raise InvalidRequestError(
                f"load argument {name!r} does not apply to {entry.format} models; "
                f"valid arguments for them: {', '.join(valid)}", param=f"args.{name}",
            )


def arg_value(chosen: Backend, name: str, args: dict[str, Any], settings: Settings) -> Any:
    """A load argument's value: the request's, else the start-up setting's, else the declared default."""
    if name in args:
        return args[name]
    declared = chosen.arg(name)
    if declared is None:
        raise KeyError(name)
    if declared.setting is not None:
        return getattr(settings, declared.setting)
    return declared.default
