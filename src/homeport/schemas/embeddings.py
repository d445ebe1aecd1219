"""Requests of /v1/embeddings, /v1/moderations and /v1/rerank (the llama.cpp / vLLM / Jina shape).

Only the wire shape is checked here; rules about content (empty input, dimensions larger than the
model's, token ids outside the vocabulary) need the model and live in the services.
"""

from __future__ import annotations

from typing import Annotated, Literal

from typing import Any

from pydantic import Field, StrictInt, StrictStr, field_validator

from homeport.schemas.common import WireModel

EmbeddingInput = StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]


class EmbeddingRequest(WireModel):
    # OpenAI requires `model`; one embedding model is served, so any name (or none) selects it.
    model: str | None = None
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _input_shape(cls, value: Any) -> Any:
        if isinstance(value, str) or (isinstance(value, list) and _one_input_kind(value)):
            return value
        raise ValueError(
            "input must be a string, a list of strings, a list of token ids or a list of lists of token ids"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _one_input_kind(items: list) -> bool:
    return (
        all(isinstance(item, str) for item in items)
        or all(_is_int(item) for item in items)
        or all(isinstance(item, list) and all(_is_int(token) for token in item) for item in items)
    )


class ModerationImageUrl(WireModel):
    url: str


class ModerationInputPart(WireModel):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ModerationImageUrl | None = None


class ModerationRequest(WireModel):
    model: str | None = None
    input: StrictStr | list[StrictStr] | list[ModerationInputPart]


class RerankDocument(WireModel):
    text: str


class RerankRequest(WireModel):
    model: str | None = None
    query: str
    documents: list[StrictStr | RerankDocument]
    top_n: Annotated[int, Field(ge=1)] | None = None
    return_documents: bool = True
