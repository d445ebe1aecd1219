"""Counting a reply's reasoning tokens, and ending its reasoning when a budget is spent (Anthropic's
`thinking.budget_tokens`).

The meter watches the raw generated text for <think> / </think> (or starts inside reasoning when
the prompt opened the block) and counts the tokens generated while inside. Past the budget the
chat pipeline stops that generation and starts a second one whose prompt is the first prompt, the
reasoning so far and the closing marker: the model then writes its answer, and the prefix cache
makes the second prompt cheap (only the marker and what was re-tokenized are new).
"""

from __future__ import annotations

from homeport.services.text.reasoning import THINK_CLOSE, THINK_OPEN

CLOSING = "</think>\n\n"  # what ends the reasoning early, as the model itself writes it


class ReasoningMeter:
    def __init__(self, *, starts_in_reasoning: bool, budget: int | None = None) -> None:
        self.inside = starts_in_reasoning
        self.budget = budget
        self.reasoning_tokens = 0
        self._counted = 0  # completion tokens seen so far
        self._tail = ""  # the end of the text so far, for a marker split across deltas
        self._raw: list[str] = []  # the generated text (kept only under a budget: the continuation needs it)

    def feed(self, text: str, completion_tokens: int) -> bool:
        """`text`: the next delta; `completion_tokens`: how many tokens the generation has made so
        far. True when the budget is spent while the reply is still reasoning."""
        new, self._counted = completion_tokens - self._counted, completion_tokens
        was_inside = self.inside
        window = self._tail + text
        opened, closed = window.rfind(THINK_OPEN), window.rfind(THINK_CLOSE)
        if opened > closed:
            self.inside = True
        elif closed > opened:
            self.inside = False
        self._tail = window[-(len(THINK_CLOSE) - 1) :]
        if was_inside or self.inside:
            self.reasoning_tokens += new
        if self.budget is None:
            return False
        self._raw.append(text)
        return self.inside and self.reasoning_tokens >= self.budget

    def closing(self) -> str:
        """The text that ends the reasoning: the marker, on a line of its own."""
        raw = "".join(self._raw)
        return CLOSING if not raw or raw.endswith("\n") else "\n" + CLOSING

    def continuation(self) -> str:
        """The generated text and the closing marker: what the second generation's prompt adds."""
        return "".join(self._raw) + self.closing()
