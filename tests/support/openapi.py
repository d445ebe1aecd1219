"""Validates bodies and SSE chunks against OpenAI's OpenAPI spec (vendored: tests/data/openai-openapi.yaml, MIT, licence beside it)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[1] / "data" / "openai-openapi.yaml"
_SPEC_URI = "urn:openai-openapi"


def _openapi_to_json_schema(node: Any) -> Any:
    """The spec mixes OpenAPI 3.0's `nullable: true` into 3.1 schemas; JSON Schema ignores it,
    which would reject the nulls OpenAI itself sends. Rewrite it as `anyOf [..., null]`."""
    if isinstance(node, list):
        return [_openapi_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _openapi_to_json_schema(value) for key, value in node.items()}
    if converted.pop("nullable", False) is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def _add_completion_chunk_schema(schemas: dict) -> None:
    """The spec reuses CreateCompletionResponse for stream chunks, but a chunk before the last has
    no finish reason yet, and OpenAI sends it as null. `CreateCompletionChunk` is that response with
    a nullable finish_reason, and like chat chunks `usage: null` until the final usage chunk."""
    chunk = copy.deepcopy(schemas["CreateCompletionResponse"])
    finish = chunk["properties"]["choices"]["items"]["properties"]["finish_reason"]
    chunk["properties"]["choices"]["items"]["properties"]["finish_reason"] = {"anyOf": [finish, {"type": "null"}]}
    chunk["properties"]["usage"] = {"anyOf": [chunk["properties"]["usage"], {"type": "null"}]}
    schemas["CreateCompletionChunk"] = chunk


class SpecValidator:
    def __init__(self, spec_path: Path = SPEC_PATH) -> None:
        spec = _openapi_to_json_schema(yaml.safe_load(spec_path.read_text()))
        _add_completion_chunk_schema(spec["components"]["schemas"])
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self._registry = Registry().with_resource(_SPEC_URI, resource)
        self._schemas = spec["components"]["schemas"]

    @functools.cache
    def _validator(self, schema_name: str) -> jsonschema.Draft202012Validator:
        if schema_name not in self._schemas:
            raise KeyError(f"no schema {schema_name!r} in the spec")
        schema = {"$ref": f"{_SPEC_URI}#/components/schemas/{schema_name}"}
        return jsonschema.Draft202012Validator(schema, registry=self._registry)

    def validate(self, schema_name: str, instance: Any) -> None:
        """Raises jsonschema.ValidationError when `instance` does not match the named schema."""
        self._validator(schema_name).validate(instance)
