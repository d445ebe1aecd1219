"""Chat templates: which Jinja template turns a model's messages into its prompt, and rendering it.

A GGUF model usually ships its own template (tokenizer.chat_template), and that one always wins.
Otherwise the model's name picks an entry from a table: the user's table first, then the built-ins
in builtin_templates.yaml, whose last entry (Alpaca) matches every name.

Templates are foreign code (they arrive inside downloaded model files), so they run in Jinja's
immutable sandbox, configured like Hugging Face's so real-world templates behave the same, and
every failure surfaces as one ChatTemplateError that names the template and never quotes messages.
"""

from __future__ import annotations

import json
import pathlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import jinja2
import yaml
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from homeport.errors import ChatTemplateError

_BUILTIN_TABLE = "builtin_templates.yaml"
# Requests may send their own templates (instruction_template_str, chat_template_str): the cache of
# compiled ones is bounded so that a stream of distinct templates cannot grow memory without end.
_COMPILED_CACHE_SIZE = 64
_ENTRY_KEYS = frozenset({"name", "pattern", "stop", "template"})

# End-of-turn (or end-of-text) markers that, when a template writes them, the model will write
# too at the end of its reply. Start markers such as "[/INST]" or "<|im_start|>" are left out:
# stopping on them would cut replies that quote them and they never end a turn.
_KNOWN_STOP_MARKERS = (
    "<end_of_turn>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|END_OF_TURN_TOKEN|>",
    "<｜end▁of▁sentence｜>",
    "</s>",
)


@dataclass(frozen=True)
class ChatTemplate:
    name: str  # table entry name, or "model" for the model's own template
    source: str  # Jinja2 source
    stop: tuple[str, ...]  # end-of-turn markers generation must stop on


def infer_stop_markers(template_source: str) -> tuple[str, ...]:
    """The known end-of-turn markers that the template writes, in _KNOWN_STOP_MARKERS order."""
    return tuple(marker for marker in _KNOWN_STOP_MARKERS if marker in template_source)


@dataclass(frozen=True)
class _Entry:
    pattern: re.Pattern[str]
    template: ChatTemplate


class ChatTemplateLibrary:
    """Built-in templates (from builtin_templates.yaml shipped in the package) plus an optional user table."""

    def __init__(self, user_table: pathlib.Path | None = None) -> None:
        entries: list[_Entry] = []
        if user_table is not None and user_table.is_file():
            entries += _load_table(user_table.read_text(encoding="utf-8"), str(user_table))
        builtin = resources.files(__package__).joinpath(_BUILTIN_TABLE).read_text(encoding="utf-8")
        entries += _load_table(builtin, _BUILTIN_TABLE)
        self._entries = tuple(entries)

    def for_model(self, model_name: str, model_template: str | None) -> ChatTemplate:
        """The model's own template if it has one, else the first table entry matching its name."""
        if model_template and model_template.strip():
            return ChatTemplate("model", model_template, infer_stop_markers(model_template))
        for entry in self._entries:
            if entry.pattern.search(model_name):
                return entry.template
        # Unreachable with the shipped table (its last pattern matches everything).
        return self._entries[-1].template

    def names(self) -> list[str]:
        """Every entry's name, user entries first, each name once."""
        return list(dict.fromkeys(entry.template.name for entry in self._entries))

    def by_name(self, name: str) -> ChatTemplate:
        """The table entry called `name` (user entries shadow built-ins); KeyError if none is."""
        for entry in self._entries:
            if entry.template.name == name:
                return entry.template
        raise KeyError(name)


class ChatTemplateRenderer:
    """Renders templates in a sandboxed Jinja environment; compiled templates cached per instance (no module globals)."""

    def __init__(self) -> None:
        self._env = _new_environment()
        # Keyed by source, least recently used first: a model's template is compiled once.
        self._compiled: OrderedDict[str, jinja2.Template] = OrderedDict()
        self._lock = threading.Lock()  # prompts are built in worker threads

    def render(
        self,
        template: ChatTemplate,
        messages: list[dict],
        *,
        add_generation_prompt: bool = True,
        bos_token: str = "",
        eos_token: str = "",
        **variables: Any,
    ) -> str:
        compiled = self._compile(template)
        # tools/documents default to None as in Hugging Face: templates test `tools is not none`,
        # which an undefined variable would pass.
        context = {"tools": None, "documents": None, **variables}
        context.update(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
        )
        try:
            return compiled.render(context)
        except ChatTemplateError:
            raise  # the template's own raise_exception(): its message is meant for the client
        except Exception as exc:  # any failure inside foreign template code is the template's
            where = _template_line(exc)
            at = f" at line {where}" if where is not None else ""
            # Only the error's type: its text may quote message content.
            raise ChatTemplateError(
                f"chat template {template.name!r} failed to render ({type(exc).__name__}{at})"
            ) from None

    def _compile(self, template: ChatTemplate) -> jinja2.Template:
        with self._lock:
            compiled = self._compiled.get(template.source)
            if compiled is not None:
                self._compiled.move_to_end(template.source)
                return compiled
        try:
            compiled = self._env.from_string(template.source)
        except jinja2.TemplateSyntaxError as exc:
            raise ChatTemplateError(
                f"chat template {template.name!r} has a syntax error at line {exc.lineno}: {exc.message}"
            ) from None
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(
                f"chat template {template.name!r} cannot be compiled ({type(exc).__name__})"
            ) from None
        with self._lock:
            self._compiled[template.source] = compiled
            while len(self._compiled) > _COMPILED_CACHE_SIZE:
                self._compiled.popitem(last=False)
        return compiled


class _GenerationTag(Extension):
    """Hugging Face's `{% generation %}` block (it marks assistant text for training); renders its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return caller()


def _new_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.loopcontrols", _GenerationTag],
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.filters["tojson"] = _tojson
    return env


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
    ensure_ascii: bool = False,
) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML and forces ASCII; prompts need the text as is.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _template_line(exc: BaseException) -> int | None:
    """The template line that raised, from the traceback Jinja rewrites to point into the template."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _load_table(text: str, origin: str) -> list[_Entry]:
    """Parse and check a template table, so a bad entry fails at start-up, not on a request."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{origin}: not valid YAML: {exc}") from None
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{origin}: expected a list of template entries, got {type(raw).__name__}")
    env = _new_environment()
    return [_parse_entry(item, f"{origin}: entry {index}", env) for index, item in enumerate(raw)]


def _parse_entry(item: Any, where: str, env: jinja2.Environment) -> _Entry:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a mapping with name, pattern, template and optional stop")
    unknown = set(item) - _ENTRY_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(map(str, unknown))}; allowed: {sorted(_ENTRY_KEYS)}")
    for key in ("name", "pattern", "template"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise ValueError(f"{where}: {key!r} must be a non-empty string")
    name, source = item["name"], item["template"]
    where = f"{where} ({name})"
    try:
        pattern = re.compile(item["pattern"], re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"{where}: 'pattern' is not a valid regular expression: {exc}") from None
    stop = item.get("stop")
    if stop is None:
        stop = infer_stop_markers(source)
    elif not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise ValueError(f"{where}: 'stop' must be a list of non-empty strings")
    try:
        env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"{where}: template syntax error at line {exc.lineno}: {exc.message}") from None
    return _Entry(pattern, ChatTemplate(name, source, tuple(stop)))
