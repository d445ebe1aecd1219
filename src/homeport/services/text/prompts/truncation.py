"""Fitting a conversation into a token budget by dropping its oldest messages.

System messages always stay, and so does the last turn. An assistant message that called tools
and the tool results answering it go together: a result without its call (or the reverse) would
confuse the model and trip templates that check the pairing. The prompt is re-rendered and
re-counted for each candidate cut, found by binary search (fewer messages never render longer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from homeport.errors import ContextLengthExceededError


@dataclass(frozen=True)
class Fitted:
    text: str
    dropped_messages: int


def fit(
    history: list[dict],
    render: Callable[[list[dict]], str],
    count_tokens: Callable[[str], int],
    budget: int | None,
) -> Fitted:
    full = render(history)
    if budget is None or count_tokens(full) <= budget:
        return Fitted(full, 0)
    groups = _droppable_groups(history)

    def without(k: int) -> tuple[list[dict], int]:
        dropped = {i for group in groups[:k] for i in group}
        return [m for i, m in enumerate(history) if i not in dropped], len(dropped)

    kept, dropped = without(len(groups))
    smallest = render(kept)
    needed = count_tokens(smallest)
    if needed > budget:
        raise ContextLengthExceededError(
            f"the prompt needs {needed} tokens even with only the system messages and the last message, "
            f"but {budget} are available for it (the context length minus the reply's max tokens); "
            "shorten the messages or ask for fewer tokens",
            param="messages",
        )
    best, low, high = Fitted(smallest, dropped), 0, len(groups)  # `high` fits, `low` does not
    while high - low > 1:
        middle = (low + high) // 2
        kept, dropped = without(middle)
        text = render(kept)
        if count_tokens(text) <= budget:
            best, high = Fitted(text, dropped), middle
        else:
            low = middle
    return best


def _droppable_groups(history: list[dict]) -> list[list[int]]:
    """Message indexes that are dropped together, oldest first; never system messages or the last turn."""
    groups: list[list[int]] = []
    for index, message in enumerate(history):
        if message["role"] == "system":
            continue
        answers_previous_call = (
            message["role"] == "tool" and groups and history[groups[-1][0]].get("tool_calls")
            and groups[-1][-1] == index - 1
        )
        if answers_previous_call:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups[:-1]  # the last turn stays
