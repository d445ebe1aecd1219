"""Choosing a model's tool-call parser: from its chat template first, then its name, else generic.

The template is the better witness: it shows the markup the model was trained to emit, whatever
the file is called. Hints are checked in order, most specific first, since some templates mention
several families' tokens (a Llama 4 template also says "ipython").
"""

from __future__ import annotations

import re

from homeport.services.text.tool_calls.base import ToolCallParser
from homeport.services.text.tool_calls.formats import all_formats
from homeport.services.text.tool_calls.scanning import FormatParser

_TEMPLATE_HINTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("harmony", ("<|call|>", "to=functions")),
    ("deepseek", ("tool▁call",)),
    ("mistral", ("[TOOL_CALLS]",)),
    # Phi-4-mini's own template shows tools as <|tool|>…<|/tool|>; vLLM's asks for functools[...].
    ("phi4", ("<|/tool_call|>", "<|tool|>", "functools[")),
    ("granite", ("<|tool_call|>",)),
    ("hermes", ("<tool_call>",)),
    ("pythonic", ("<|python_start|>", "[func_name1(", "<|header_start|>")),  # the last: Llama 4's turns
    ("llama3_json", ("<|python_tag|>", "ipython")),
    ("gemma", ("tool_code", "<start_of_turn>")),
)

_NAME_PATTERNS: tuple[tuple[str, re.Pattern], ...] = tuple(
    (fmt, re.compile(pattern))
    for fmt, pattern in (
        ("harmony", r"gpt-?oss"),
        ("deepseek", r"deepseek"),  # before qwen/llama: the R1 distills keep DeepSeek's markup
        ("hermes", r"hermes|qwen|qwq|granite-?4"),
        ("mistral", r"mistral|mixtral|ministral|magistral|devstral|codestral|pixtral"),
        ("phi4", r"phi-?4"),
        ("granite", r"granite"),
        ("pythonic", r"llama-?4"),
        ("llama3_json", r"llama-?3"),
        ("gemma", r"gemma"),
    )
)


def detect_format(template_source: str | None, model_name: str) -> str:
    """The name of the format to parse this model's output with."""
    if template_source:
        for fmt, hints in _TEMPLATE_HINTS:
            if any(hint in template_source for hint in hints):
                return fmt
    name = re.sub(r"[\s_]+", "-", model_name.lower())
    for fmt, pattern in _NAME_PATTERNS:
        if pattern.search(name):
            return fmt
    return "generic"


def parser_by_name(name: str) -> ToolCallParser:
    formats = all_formats()
    if name not in formats:
        raise ValueError(f"unknown tool-call format {name!r}; known: {', '.join(sorted(formats))}")
    return FormatParser(formats[name])


def parser_for(template_source: str | None, model_name: str) -> ToolCallParser:
    return parser_by_name(detect_format(template_source, model_name))
