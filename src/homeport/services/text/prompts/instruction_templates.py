"""Instruction templates named by requests and per-model settings, and template text sent inline.

A name is a file under `<user_data>/instruction-templates/` (`.jinja`, or the reference API's
`.yaml`/`.yml` layout: a mapping whose `instruction_template` key holds the Jinja source), else a
built-in table entry (case-insensitive, so the reference's "Alpaca" finds ours). "None" means
Alpaca, as in the reference.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from homeport.errors import InvalidRequestError
from homeport.services.text.prompts import named_files
from homeport.services.text.prompts.chat_templates import ChatTemplate, ChatTemplateLibrary, infer_stop_markers

_SUFFIXES = (".jinja", ".yaml", ".yml")
_YAML_KEY = "instruction_template"


def from_text(text: str, name: str) -> ChatTemplate:
    """A template from its text: the reference's YAML layout when it is one, else Jinja source."""
    source = _yaml_source(text)
    source = text if source is None else source
    return ChatTemplate(name, source, infer_stop_markers(source))


def _yaml_source(text: str) -> str | None:
    # Jinja source is often valid YAML too (a plain string); only a mapping with the key counts.
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if isinstance(data, dict) and isinstance(data.get(_YAML_KEY), str):
        return data[_YAML_KEY]
    return None


class InstructionTemplates:
    def __init__(self, directory: Path, library: ChatTemplateLibrary) -> None:
        self.directory = directory
        self.library = library

    def names(self) -> list[str]:
        user = named_files.names(self.directory, _SUFFIXES)
        return user + [name for name in self.library.names() if name not in user]

    def get(self, name: str) -> ChatTemplate | None:
        """The template called `name`, or None when there is none."""
        if name == "None":
            name = "alpaca"
        path = named_files.find(self.directory, name, _SUFFIXES)
        if path is not None:
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".jinja":
                return ChatTemplate(name, text, infer_stop_markers(text))
            source = _yaml_source(text)
            if source is None:
                raise InvalidRequestError(
                    f"instruction template {name!r} must be a YAML mapping with an {_YAML_KEY!r} key",
                    param="instruction_template",
                )
            return ChatTemplate(name, source, infer_stop_markers(source))
        for known in self.library.names():
            if known.lower() == name.lower():
                return self.library.by_name(known)
        return None
