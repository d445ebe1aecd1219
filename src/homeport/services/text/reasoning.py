"""Separating a model's reasoning from its visible answer, whole or streamed.

Two conventions are read: <think>…</think> blocks (Qwen3, DeepSeek R1, and many more), and GPT-OSS
harmony channels, where the analysis channel is reasoning and the final channel the answer.
Markers never reach either part; only a possible marker's beginning is held back while streaming.
Whitespace that only frames a section is trimmed: the run opening reasoning or the answer after
</think> (models write "</think>\n\n"), and reasoning's trailing run before its end marker.

Harmony messages addressed to a function (`to=functions.f`) are tool calls, neither reasoning nor
prose: they pass through into the content verbatim, markers and all, for the harmony tool-call
parser to take out. Run this before tool-call parsing.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CHANNEL, START, MESSAGE = "<|channel|>", "<|start|>", "<|message|>"
MESSAGE_ENDS = ("<|end|>", "<|return|>", "<|call|>")
HEADER_LIMIT = 256  # a harmony header longer than this is no header: its marker was plain text


@dataclass(frozen=True)
class ReasoningSplit:
    reasoning: str | None  # None when the output had no (non-empty) reasoning
    content: str


def prompt_opens_reasoning(prompt: str) -> bool:
    """Whether the rendered prompt already opened a <think> block for the reply (Qwen3's and
    DeepSeek R1's templates can), so the output starts inside reasoning."""
    return prompt.rstrip().endswith(THINK_OPEN)


def split_reasoning(text: str, *, starts_in_reasoning: bool = False) -> ReasoningSplit:
    stream = ReasoningStream(starts_in_reasoning=starts_in_reasoning)
    reasoning, content = stream.feed(text)
    more_reasoning, more_content = stream.finish()
    return ReasoningSplit(reasoning=(reasoning + more_reasoning) or None, content=content + more_content)


class _Mode(enum.Enum):
    CONTENT = "content"  # plain output, or a harmony final/commentary message
    THINK = "think"  # inside <think>…</think>
    HEADER = "header"  # a harmony header, up to <|message|>; buffer starts with its marker
    ANALYSIS = "analysis"  # a harmony analysis message: reasoning
    ADDRESSED = "addressed"  # a harmony message to a recipient: passed through raw


_HARMONY_BODY_MARKERS = (*MESSAGE_ENDS, START, CHANNEL)
_MARKERS = {
    _Mode.CONTENT: (THINK_OPEN, THINK_CLOSE, START, CHANNEL, *MESSAGE_ENDS),
    _Mode.THINK: (THINK_CLOSE, THINK_OPEN),
    _Mode.ANALYSIS: _HARMONY_BODY_MARKERS,
    _Mode.ADDRESSED: _HARMONY_BODY_MARKERS,
}
_CHANNEL_NAME = re.compile(r"<\|channel\|>\s*(\w+)")


class ReasoningStream:
    """Feed generated text; get back (reasoning delta, content delta) as soon as each is certain."""

    def __init__(self, *, starts_in_reasoning: bool = False) -> None:
        self._mode = _Mode.THINK if starts_in_reasoning else _Mode.CONTENT
        self._buffer = ""
        # Drop the whitespace run that opens a section (models write "</think>\n\n"); it persists
        # across fragments until the first visible character, so chunking cannot change the result.
        self._strip = starts_in_reasoning
        # Reasoning's trailing whitespace waits for more reasoning; a section's end drops it.
        self._reasoning_ws = ""
        self._out: dict[str, list[str]] = {"reasoning": [], "content": []}

    def feed(self, fragment: str) -> tuple[str, str]:
        self._buffer += fragment
        return self._drain(final=False)

    def finish(self) -> tuple[str, str]:
        return self._drain(final=True)

    def _drain(self, final: bool) -> tuple[str, str]:
        while self._buffer and self._step(final):
            pass
        reasoning, content = "".join(self._out["reasoning"]), "".join(self._out["content"])
        self._out = {"reasoning": [], "content": []}
        return reasoning, content

    def _step(self, final: bool) -> bool:
        """Consume what can be decided at the front of the buffer; False to wait for more."""
        if self._mode is _Mode.HEADER:
            return self._header(final)
        buffer = self._buffer
        markers = _MARKERS[self._mode]
        hits = [(i, m) for m in markers if (i := buffer.find(m)) != -1]
        if hits:
            index, marker = min(hits)
            if index:
                self._emit(buffer[:index])
            self._buffer = buffer[index:]
            self._on_marker(marker)
            return True
        keep = 0 if final else _partial_marker(buffer, markers)
        if keep == len(buffer):
            return False
        self._emit(buffer[: len(buffer) - keep])
        self._buffer = buffer[len(buffer) - keep :]
        return False

    def _on_marker(self, marker: str) -> None:
        """Act on the marker at the front of the buffer."""
        mode = self._mode
        self._reasoning_ws = ""
        if marker in (START, CHANNEL):  # a harmony header begins; it stays in the buffer
            self._mode, self._strip = _Mode.HEADER, False
            return
        self._buffer = self._buffer[len(marker) :]
        if marker == THINK_OPEN:
            if mode is _Mode.CONTENT:
                self._mode, self._strip = _Mode.THINK, True
        elif marker == THINK_CLOSE:  # a stray one (no block open) is only dropped
            self._mode, self._strip = _Mode.CONTENT, mode is _Mode.THINK
        elif marker in MESSAGE_ENDS:
            if mode is _Mode.ADDRESSED:
                self._out["content"].append(marker)
            self._mode = _Mode.CONTENT

    def _header(self, final: bool) -> bool:
        window = HEADER_LIMIT + len(MESSAGE)
        end = self._buffer.find(MESSAGE, 0, window)
        if end == -1:
            if final:  # cut off inside a header: nothing of it to show
                self._buffer = ""
                return False
            if len(self._buffer) < window:
                return False
            # Too long for a header: its marker was ordinary text after all.
            marker = START if self._buffer.startswith(START) else CHANNEL
            self._out["content"].append(marker)
            self._buffer = self._buffer[len(marker) :]
            self._mode = _Mode.CONTENT
            return True
        header = self._buffer[:end]
        self._buffer = self._buffer[end + len(MESSAGE) :]
        if "to=" in header:
            self._mode = _Mode.ADDRESSED
            self._out["content"].append(header + MESSAGE)
        else:
            channel = _CHANNEL_NAME.search(header)
            self._mode = _Mode.ANALYSIS if channel and channel.group(1) == "analysis" else _Mode.CONTENT
        return True

    def _emit(self, text: str) -> None:
        if self._strip:
            text = text.lstrip()
            if not text:
                return
            self._strip = False
        if self._mode not in (_Mode.THINK, _Mode.ANALYSIS):
            self._out["content"].append(text)
            return
        body = text.rstrip()
        if body:
            self._out["reasoning"].append(self._reasoning_ws + body)
            self._reasoning_ws = text[len(body) :]
        else:
            self._reasoning_ws += text


def _partial_marker(buffer: str, markers: tuple[str, ...]) -> int:
    """Length of the longest end of `buffer` that is a proper beginning of a marker. Per token:
    only the places in the tail where a marker's first character occurs are tried."""
    longest = 0
    for marker in markers:
        size = min(len(marker) - 1, len(buffer))
        at = buffer.find(marker[0], len(buffer) - size)
        while at != -1:
            if len(buffer) - at > longest and marker.startswith(buffer[at:]):
                longest = len(buffer) - at
                break  # the first hit is the longest for this marker
            at = buffer.find(marker[0], at + 1)
    return longest
