"""`POST /v1/completions`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from homeport.schemas.chat import ChatMessage
from homeport.schemas.common import SamplingFields

TokenIds = list[Annotated[int, Field(ge=0)]]


class CompletionRequest(SamplingFields):
    # Exactly one of the two (checked by the service, to answer with a 400 naming `prompt`).
    prompt: str | list[str] | TokenIds | list[TokenIds] | None = None
    # The reference API's multimodal form: the messages' text parts joined, no chat template; each
    # <__media__> in the text stands for the next image part.
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = 16  # OpenAI's default for legacy completions
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: bool | None = False
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1)] | None = None

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be an empty list")
        return value

    def prompts(self) -> list[str | list[int]]:
        """The prompt(s) as a list: each a string or a list of token ids (none with `messages`)."""
        prompt = self.prompt
        if prompt is None:
            return []
        if isinstance(prompt, str):
            return [prompt]
        if all(isinstance(p, int) for p in prompt):
            return [list(prompt)]
        return list(prompt)
