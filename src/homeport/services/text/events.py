"""The chat pipeline's output, independent of any wire format: what the model said, as events.

Each wire adapter (OpenAI chat, Anthropic Messages, OpenAI Responses) turns these into its own
bodies and stream frames; none of them looks at raw model text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ToolCallStarted:
    index: int
    id: str | None
    name: str | None


@dataclass(frozen=True)
class ToolCallArgumentsDelta:
    index: int
    arguments: str


@dataclass(frozen=True)
class ToolCallDone:
    index: int
    id: str
    name: str
    arguments: str  # the whole JSON arguments text


@dataclass(frozen=True)
class Finish:
    """The end of one generation. `reason`: stop | length | tool_calls; `stop_sequence` names the
    client's stop string that ended it, when one did."""

    reason: str
    stop_sequence: str | None = None


@dataclass(frozen=True)
class UsageReport:
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0  # of output_tokens, those generated inside the reply's reasoning


Event = TextDelta | ReasoningDelta | ToolCallStarted | ToolCallArgumentsDelta | ToolCallDone | Finish | UsageReport
