"""Characters for the chat modes: `<user_data>/characters/<name>.yaml|.yml|.json`, plus built-ins.

Files are read on every request (they are small), so an edit applies at once; the reference API
memoizes them until restart. An unknown name is a 400 that lists the known ones (the reference
raises a bare ValueError, a 500). Both layouts of the reference are read: its own (name, context,
greeting, your_name) and Pygmalion's (char_name, char_persona, char_greeting, world_scenario,
example_dialogue).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from homeport.errors import InvalidRequestError
from homeport.services.text.prompts import named_files

DEFAULT_CHARACTER = "Assistant"
_SUFFIXES = (".yaml", ".yml", ".json")
_BUILTIN_DIR = ("data", "characters")
# Keys the reference reads the names from, first found wins.
_BOT_NAME_KEYS = ("name", "bot", "<|bot|>", "char_name")
_USER_NAME_KEYS = ("your_name", "user", "<|user|>")


@dataclass(frozen=True)
class Character:
    name: str  # the bot's name (name2)
    context: str  # placeholders ({{user}}, {{char}}, <USER>, <BOT>) not yet substituted
    greeting: str
    user_name: str | None = None  # a name the file gives the user (name1), if any


def substitute_names(text: str, name1: str, name2: str) -> str:
    """Replace the character-card placeholders for the user's and the bot's names."""
    for placeholder, name in (("{{user}}", name1), ("<USER>", name1), ("{{char}}", name2), ("<BOT>", name2)):
        text = text.replace(placeholder, name)
    return text


class CharacterLibrary:
    """The user's characters first, then the ones shipped in the package (Assistant, Example)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def names(self) -> list[str]:
        return sorted(set(named_files.names(self.directory, _SUFFIXES)) | set(_builtin_files()))

    def load(self, name: str | None) -> Character:
        # "None" is what the reference's UI sends for "no character".
        name = DEFAULT_CHARACTER if not name or name == "None" else name
        path = named_files.find(self.directory, name, _SUFFIXES)
        if path is not None:
            text, suffix = path.read_text(encoding="utf-8"), path.suffix
        else:
            builtin = _builtin_files().get(name)
            if builtin is None:
                known = ", ".join(self.names())
                raise InvalidRequestError(f"unknown character {name!r} (characters: {known})", param="character")
            text, suffix = builtin.read_text(encoding="utf-8"), ".yaml"
        return _parse(name, text, suffix)


def _builtin_files() -> dict[str, Any]:
    folder = resources.files(__package__).joinpath(*_BUILTIN_DIR)
    return {Path(f.name).stem: f for f in folder.iterdir() if f.name.endswith(".yaml")}


def _parse(name: str, text: str, suffix: str) -> Character:
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError):
        raise InvalidRequestError(f"character {name!r} is not valid {suffix[1:].upper()}", param="character") from None
    if not isinstance(data, dict):
        raise InvalidRequestError(f"character {name!r} must be a mapping (name, context, greeting)", param="character")

    def first(keys: tuple[str, ...]) -> str | None:
        for key in keys:
            value = data.get(key)
            if value not in (None, ""):
                return str(value)
        return None

    if data.get("context") not in (None, ""):
        context = str(data["context"])
    elif data.get("char_persona") not in (None, ""):
        context = _pygmalion_context(data)
    else:
        context = ""
    greeting = first(("greeting", "char_greeting")) or ""
    return Character(
        name=first(_BOT_NAME_KEYS) or name, context=context, greeting=greeting, user_name=first(_USER_NAME_KEYS)
    )


def _pygmalion_context(data: dict) -> str:
    """The reference's layout for Pygmalion cards: persona, scenario, then the example dialogue."""
    parts = [f"{data.get('char_name') or '{{char}}'}'s Persona: {data['char_persona']}"]
    if data.get("world_scenario"):
        parts.append(f"Scenario: {data['world_scenario']}")
    if data.get("example_dialogue"):
        parts.append(str(data["example_dialogue"]).strip())
    return "\n".join(str(p).strip() for p in parts) + "\n"
