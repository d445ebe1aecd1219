"""Tool calls out of generated text, whole or streamed, for every model family's markup.

Per request, with reasoning taken out first (thinking is not searched for calls, and GPT-OSS's
addressed messages reach the harmony parser intact):

    parser = parser_for(engine.chat_template(), model_id)        # once per model
    reasoning = ReasoningStream(starts_in_reasoning=prompt_opens_reasoning(prompt))
    calls = parser.stream(tool_names)
    for text in generated:                                         # each text delta
        thought, visible = reasoning.feed(text)
        delta = calls.feed(visible)                                # -> delta.content, delta.tool_calls
    thought, visible = reasoning.finish()
    last = calls.feed(visible), calls.finish()

The markup is made of special tokens (<tool_call>, [TOOL_CALLS], <|channel|>…), so the engine
must render special tokens into the text it hands over. Each call is sent whole, as soon as its
markup closes: validating it first is what lets malformed or unknown calls stay visible content.
"""

from homeport.services.text.tool_calls.base import (
    ParsedOutput,
    StreamDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallParser,
    ToolCallStream,
)
from homeport.services.text.tool_calls.detect import detect_format, parser_by_name, parser_for

__all__ = [
    "ParsedOutput",
    "StreamDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallParser",
    "ToolCallStream",
    "detect_format",
    "parser_by_name",
    "parser_for",
]
