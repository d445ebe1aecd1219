"""The one typed settings object, and how it is built from defaults, settings.yaml, flags and env.

Precedence, lowest first: field defaults < settings file < command-line values < environment
variables (the reference API lets its OPENEDAI_* variables override everything; we keep that).
Every problem becomes a one-line `SettingsError` that names the setting and where its value came
from, because a pydantic dump is unreadable to someone who just mistyped a flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from homeport.errors import StartupError
from homeport.registry import LoadArg, setting_knobs
from homeport.schemas.chat import ToolPrompt

Origin = Literal["file", "cli", "env"]

# (variable, field) pairs; tuples so nothing at module level can be mutated.
_ENV_FIELDS: tuple[tuple[str, str], ...] = (
    ("OPENEDAI_PORT", "api_port"),
    ("OPENEDAI_CERT_PATH", "ssl_certfile"),
    ("OPENEDAI_KEY_PATH", "ssl_keyfile"),
    ("OPENEDAI_DEBUG", "debug"),
    ("OPENEDAI_EMBEDDING_MODEL", "embedding_model"),
    ("OPENEDAI_EMBEDDING_DEVICE", "embedding_device"),
    ("OPENEDAI_RERANK_MODEL", "rerank_model"),
    ("OPENEDAI_ENABLE_IPV6", "api_enable_ipv6"),
    ("OPENEDAI_DISABLE_IPV4", "api_disable_ipv4"),
)
# The reference reads these two as switches that any non-empty value turns on.
_ENV_SWITCHES = frozenset({"api_enable_ipv6", "api_disable_ipv4"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})
# The reference API's settings.yaml spells the debug switch this way.
_YAML_ALIASES: tuple[tuple[str, str], ...] = (
    ("openai_debug", "debug"),
    ("openai_embedding_model", "embedding_model"),
    ("openai_embedding_device", "embedding_device"),
)
# Never echo these back in an error message.
_SECRET_FIELDS = frozenset({"api_key", "admin_key"})


class _Settings(BaseModel):
    """Everything homeport is configured with; built once at start-up and passed down. The model
    backends' knobs (ctx_size, parallel, draft_max, ...) are added to it below from their load-argument
    declarations (`homeport.registry.setting_knobs`): type, range and default are written once, there."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    api_port: int = Field(5000, ge=0, le=65535)  # 0 = any free port (printed at start-up)
    listen: bool = False
    listen_host: str | None = None
    api_enable_ipv6: bool = False  # also listen on [::1] ([::] with listen)
    api_disable_ipv4: bool = False  # do not listen on 127.0.0.1 (0.0.0.0 with listen)
    public_api: bool = False  # a Cloudflare tunnel through a local `cloudflared` executable
    public_api_id: str | None = None  # a named tunnel (cloudflared's own configuration) instead of a quick one
    cloudflared: Path | None = None  # the cloudflared executable; None = found on PATH
    nowebui: bool = False  # no chat page at /; the API is always on
    shutdown_timeout: float = Field(30.0, ge=0.0)  # seconds running generations get to finish on SIGTERM
    tool_prompt: ToolPrompt = "auto"  # who shows tools: the template, homeport's tool prompt, or the template where it can
    strict_model_names: bool = False  # an unknown model name is a 404 instead of the default model
    allow_remote_media: bool = False  # fetch http(s) image URLs (off: offline means nothing is fetched)
    remote_media_allow_private: bool = False  # let remote media reach loopback/private/link-local addresses
    api_key: str | None = None
    admin_key: str | None = None
    ssl_keyfile: Path | None = None
    ssl_certfile: Path | None = None
    model: str | None = None  # a GGUF path or a name under model_dir; None = the default model
    model_dir: Path = Path("user_data/models")
    user_data_dir: Path = Path("user_data")
    state_db: Path | None = None  # stored Responses (SQLite); None = <user_data_dir>/homeport.db
    max_queue: int = Field(256, ge=0)  # requests that may wait for a slot; past it, 503
    max_loaded_models: int = Field(2, ge=1)  # past it, the least recently used idle model is unloaded (2: both packaged models)
    idle_timeout: float = Field(0.0, ge=0.0)  # minutes without requests before a model unloads; 0 = never
    model_aliases: dict[str, str] = {}  # request model name → a model in the library (e.g. gpt-4o-mini)
    embedding_model: str | None = None  # a path or a name under model_dir; None = all-MiniLM-L6-v2
    embedding_device: str = "cpu"  # cpu | cuda | auto
    rerank_model: str | None = None  # a cross-encoder folder, path or name under model_dir; None = embeddings
    moderation_threshold: float = Field(0.5, ge=0.0, le=1.0)  # category score above which text is flagged
    image_model: str | None = None  # a diffusers folder (path or name under model_dir) loaded at start
    stt_model: str | None = None  # speech to text: a Whisper folder, path or name under model_dir; None = Whisper base
    tts_model: str | None = None  # text to speech: a name under model_dir; None = hibari's bundled voices
    voice_map: dict[str, str] = {}  # voice name (OpenAI's alloy, nova, ...) → a bundled voice; adds to the default table
    cors_origins: tuple[str, ...] = ("*",)
    metrics: bool = True  # Prometheus text at /metrics
    metrics_public: bool = False  # /metrics without the API key (for a scraper on a trusted network)
    debug: bool = False
    # A Ray Serve cluster (homeport.cluster): None = this process serves alone and Ray is never imported.
    ray_address: str | None = None  # the head's host:port, or "local" (a private one-node cluster)
    replicas: int = Field(1, ge=1)  # model replicas, unless min/max_replicas turn on autoscaling
    min_replicas: int | None = Field(None, ge=0)
    max_replicas: int | None = Field(None, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)  # autoscaling's target per replica
    # Seconds the load must stay above (below) the target before Serve adds (removes) a replica: Serve's defaults.
    autoscale_upscale_delay: float = Field(30.0, ge=0)
    autoscale_downscale_delay: float = Field(600.0, ge=0)
    replica_cpus: float = Field(1.0, ge=0)  # CPUs Ray reserves for each replica
    # Another ingress (on another machine) for the replicas a `homeport serve --ray-address` deployed.
    ingress_only: bool = False
    node_ingress: bool = True  # an ingress on every other node too, placed by Ray (not with ingress_only)

    @field_validator("api_port", "max_queue", "max_loaded_models", "replicas", "min_replicas", "max_replicas", mode="before")
    @classmethod
    def _reject_bool(cls, value: Any) -> Any:
        # pydantic would turn YAML's `parallel: yes` into 1; that is a mistake, not a number.
        if isinstance(value, bool):
            raise PydanticCustomError("int_type", "Input should be a valid integer")
        return value

    @field_validator("embedding_device", mode="before")
    @classmethod
    def _lower_device(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("model_aliases", "voice_map", mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> Any:
        # The CLI gives NAME=MODEL strings (repeatable flag); YAML gives a mapping.
        if isinstance(value, list | tuple):
            pairs = {}
            for item in value:
                name, sep, model = str(item).partition("=")
                if not sep or not name.strip() or not model.strip():
                    raise PydanticCustomError("alias", "expected NAME=MODEL, got {item!r}", {"item": item})
                pairs[name.strip()] = model.strip()
            return pairs
        return value

    @field_validator("listen_host", "api_key", "admin_key", "model", "rerank_model", "public_api_id", "stt_model", "image_model",
                     "tts_model", "ray_address", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `--api-key ""` means "no key", not "the empty key".
        return None if value == "" else value

    @field_validator("ssl_keyfile", "ssl_certfile", "model_dir", "user_data_dir", "cloudflared", mode="before")
    @classmethod
    def _expand_home(cls, value: Any) -> Any:
        # The shell expands ~ in flags but not in settings.yaml or environment variables.
        return Path(value).expanduser() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _ssl_pair(self) -> _Settings:
        if (self.ssl_keyfile is None) != (self.ssl_certfile is None):
            given, missing = ("ssl_certfile", "ssl_keyfile")
            if self.ssl_certfile is None:
                given, missing = missing, given
            raise ValueError(f"{given} is set but {missing} is not; TLS needs both or neither")
        return self

    @model_validator(mode="after")
    def _replica_bounds(self) -> _Settings:
        if self.min_replicas is not None and self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        if self.ingress_only and self.ray_address is None:
            raise ValueError("ingress_only needs ray_address: the cluster whose replicas it serves")
        return self

    @property
    def bind_host(self) -> str:
        if self.listen_host:
            return self.listen_host
        return "0.0.0.0" if self.listen else "127.0.0.1"

    @property
    def bind_hosts(self) -> tuple[str, ...]:
        """Every address to listen on, as the reference API picks them (IPv6 first); may be empty."""
        if self.listen_host:
            return (self.listen_host,)
        hosts = []
        if self.api_enable_ipv6:
            hosts.append("::" if self.listen else "::1")
        if not self.api_disable_ipv4:
            hosts.append("0.0.0.0" if self.listen else "127.0.0.1")
        return tuple(hosts)

    @property
    def effective_admin_key(self) -> str | None:
        """The reference API's admin key defaults to the API key."""
        return self.admin_key if self.admin_key is not None else self.api_key


def _knob_field(arg: LoadArg) -> tuple[Any, Any]:
    """A Settings field (annotation, FieldInfo) from a load-argument declaration."""
    if arg.type is str:
        choices = arg.flag.choices if arg.flag and arg.flag.choices else arg.choices
        annotation: Any = (Literal[choices] if choices else str) | None  # type: ignore[valid-type]
        return annotation, Field(arg.default, description=arg.help)
    low = arg.minimum if arg.minimum is not None else (None if arg.signed or arg.type is bool else 0)
    high = None
    if arg.between is not None:
        low, high = arg.between
    return arg.type, Field(arg.default, ge=low, le=high, description=arg.help)


def _not_a_bool(cls: type, value: Any) -> Any:
    # pydantic would turn YAML's `parallel: yes` into 1; that is a mistake, not a number.
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


def _empty_is_none(cls: type, value: Any) -> Any:
    return None if value == "" else value  # `--mmproj ""` means "none"


_KNOBS = setting_knobs()
Settings = create_model(  # type: ignore[call-overload]
    "Settings",
    __base__=_Settings,
    __module__=__name__,
    __validators__={
        "_knob_ints": field_validator(*(n for n, a in _KNOBS.items() if a.type is int), mode="before")(_not_a_bool),
        "_knob_strs": field_validator(*(n for n, a in _KNOBS.items() if a.type is str), mode="before")(_empty_is_none),
    },
    **{name: _knob_field(arg) for name, arg in _KNOBS.items()},
)


class SettingsError(StartupError):
    """A setting could not be used; `origin` says which layer gave the bad value (None: unknown)."""

    def __init__(self, message: str, origin: Origin | None = None) -> None:
        super().__init__(message)
        self.origin = origin


def load_settings(
    cli_values: Mapping[str, Any], environ: Mapping[str, str], settings_file: Path | None = None
) -> Settings:
    """Merge the layers into one validated `Settings`; raise `SettingsError` (one line) on any problem.

    `cli_values` holds field names; None means "not given". Without `settings_file`,
    `<user_data_dir>/settings.yaml` is read when it exists; an explicit file must exist.
    """
    cli = {key: value for key, value in cli_values.items() if value is not None}
    if settings_file is None:
        user_data_dir = cli.get("user_data_dir", Settings.model_fields["user_data_dir"].default)
        default_file = Path(user_data_dir) / "settings.yaml"
        settings_file = default_file if default_file.is_file() else None

    # field -> (value, where it came from, origin)
    merged: dict[str, tuple[Any, str, Origin]] = {}
    if settings_file is not None:
        for name, value in _read_settings_file(settings_file).items():
            merged[name] = (value, str(settings_file), "file")
    for name, value in cli.items():
        merged[name] = (value, "--" + name.replace("_", "-"), "cli")
    for name, (value, variable) in _read_environ(environ).items():
        merged[name] = (value, variable, "env")

    # A custom user_data_dir brings its models/ along unless model_dir was set explicitly.
    if "user_data_dir" in merged and "model_dir" not in merged:
        value, source, origin = merged["user_data_dir"]
        if isinstance(value, (str, Path)):
            merged["model_dir"] = (Path(value) / "models", source, origin)

    try:
        return Settings(**{name: value for name, (value, _, _) in merged.items()})
    except ValidationError as exc:
        raise _one_line(exc, merged) from None


def _read_settings_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(f"settings file not found: {path}", "file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SettingsError(f"cannot read settings file {path}: {reason}", "file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise SettingsError(f"invalid YAML in settings file {path}{where}: {problem}", "file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must be a mapping of setting names to values", "file")

    values: dict[str, Any] = {}
    for key, value in data.items():
        name = _field_name(key)
        if name is None:
            raise SettingsError(f"unknown setting {key!r} in settings file {path}", "file")
        if name in values:
            raise SettingsError(f"setting {name} is given twice in settings file {path}", "file")
        if value is not None:  # `key:` with no value means "use the default", as None does on the CLI
            values[name] = value
    return values


def _field_name(key: Any) -> str | None:
    if not isinstance(key, str):
        return None
    name = key.strip().replace("-", "_")
    name = dict(_YAML_ALIASES).get(name, name)
    return name if name in Settings.model_fields else None


def _read_environ(environ: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    values: dict[str, tuple[Any, str]] = {}
    for variable, name in _ENV_FIELDS:
        raw = environ.get(variable, "").strip()
        if not raw:  # an exported but empty variable counts as unset
            continue
        value: Any = raw
        if name == "debug":
            value = raw.lower() not in _FALSE_WORDS
        elif name in _ENV_SWITCHES:
            value = True
        values[name] = (value, variable)
    return values


def _one_line(exc: ValidationError, merged: Mapping[str, tuple[Any, str, Origin]]) -> SettingsError:
    error = exc.errors(include_url=False)[0]
    if not error["loc"]:  # a model-level rule; name the sources of the settings it mentions
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        mentioned = [f"{name} from {source}" for name, (_, source, _) in merged.items() if name in message]
        origins = {merged[name][2] for name in merged if name in message}
        suffix = f" ({', '.join(mentioned)})" if mentioned else ""
        origin = origins.pop() if len(origins) == 1 else None
        return SettingsError(f"invalid settings: {message}{suffix}", origin)

    name = str(error["loc"][0])
    _, source, origin = merged.get(name, (None, "defaults", None))
    if error["type"] == "extra_forbidden":
        return SettingsError(f"unknown setting {name!r} from {source}", origin)
    return SettingsError(f"invalid value for {name} from {source}: {_describe(error, name)}", origin)


def _describe(error: Mapping[str, Any], name: str) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    shown = "the value" if name in _SECRET_FIELDS else _show(error["input"])
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{shown} is not an integer"
    if kind in ("bool_parsing", "bool_type"):
        return f"{shown} is not a boolean (use true or false)"
    if kind == "string_type":
        return f"{shown} is not a string"
    if kind == "path_type":
        return f"{shown} is not a path"
    if kind in ("tuple_type", "list_type"):
        return f"{shown} is not a list"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, got {shown}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}, got {shown}"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return " ".join(str(error["msg"]).split())


def _show(value: Any) -> str:
    text = repr(str(value)) if isinstance(value, Path) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
