"""Per-model settings: `<user_data>/models/config-user.yaml`, regex keys → settings.

Every key whose pattern matches the lowercased model id (re.search) applies, in file order, later
entries overriding earlier ones, as in the reference API. Read on each request, so edits apply at
once. A broken file is the server's problem, not the client's: a 500 that names it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from homeport.errors import HomeportError

FILE_NAME = "config-user.yaml"


class ModelSettingsError(HomeportError):
    code = "invalid_model_settings"


def settings_for(models_dir: Path, model_id: str) -> dict[str, Any]:
    path = models_dir / FILE_NAME
    if not path.is_file():
        return {}
    try:
        table = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise ModelSettingsError(f"models/{FILE_NAME} is not valid YAML") from None
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ModelSettingsError(f"models/{FILE_NAME} must map name patterns to settings")
    merged: dict[str, Any] = {}
    name = model_id.lower()
    for pattern, values in table.items():
        try:
            matched = re.search(str(pattern), name)
        except re.error:
            where = f"models/{FILE_NAME}: {str(pattern)!r}"
            raise ModelSettingsError(f"{where} is not a valid regular expression") from None
        if matched and isinstance(values, dict):
            merged.update(values)
    return merged
