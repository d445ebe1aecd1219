"""Sampler presets: YAML files under `user_data/presets/`, named by a request's `preset`.

Values the request gives itself win over the preset's (the reference API does it the other way
round, which its users report as a bug).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import ValidationError

from homeport.errors import InvalidRequestError
from homeport.schemas.common import SamplingFields
from homeport.services.text.conversation import Conversation

Request = TypeVar("Request", bound=SamplingFields)
_SAFE_NAME = re.compile(r"^[\w .+-]+$")


class PresetLibrary:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.iterdir() if p.suffix in (".yaml", ".yml"))

    def apply(self, request: Request) -> Request:
        if not request.preset:
            return request
        values = self._load(request.preset)
        given = request.model_dump(exclude_unset=True)
        try:
            return type(request).model_validate({**values, **given})
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise InvalidRequestError(
                f"preset {request.preset!r} has an invalid {field}: {first['msg']}", param="preset"
            ) from None

    def apply_to(self, conversation: Conversation) -> Conversation:
        """`apply` for the chat pipeline: a preset's stop strings become the limits' (when the
        request gave none), its other values the sampling's."""
        sampling = conversation.sampling
        if not sampling.preset:
            return conversation
        stop = conversation.limits.stop
        merged = self.apply(sampling if stop is None else sampling.model_copy(update={"stop": list(stop)}))
        if stop is None and "stop" in merged.model_fields_set:
            stop = tuple(merged.stop or ())
        limits = dataclasses.replace(conversation.limits, stop=stop)
        return dataclasses.replace(conversation, sampling=merged.model_copy(update={"stop": None}), limits=limits)

    def _load(self, name: str) -> dict:
        candidates = [self.directory / f"{name}{suffix}" for suffix in (".yaml", ".yml")] if _SAFE_NAME.match(name) else []
        path = next((candidate for candidate in candidates if candidate.is_file()), None)
        if path is None:
            known = ", ".join(self.names()) or "none"
            raise InvalidRequestError(f"unknown preset {name!r} (presets: {known})", param="preset")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            raise InvalidRequestError(f"preset {name!r} is not valid YAML", param="preset") from None
        if not isinstance(values, dict):
            raise InvalidRequestError(f"preset {name!r} must be a mapping of parameter names to values", param="preset")
        # Presets configure sampling only: they cannot swap the prompt, the model or the stream mode.
        sampling_fields = set(SamplingFields.model_fields) - {"model", "preset", "stream", "stream_options", "n", "user"}
        return {key.replace("-", "_"): value for key, value in values.items() if key.replace("-", "_") in sampling_fields}
