"""Token logprobs in OpenAI's two shapes: chat's `content` entries and completions' legacy lists."""

from __future__ import annotations

from collections.abc import Iterable

from homeport.engines.base import TextEngine, TokenEvent, TopLogprobs


class LogprobFormatter:
    def __init__(self, engine: TextEngine, top_n: int) -> None:
        self.engine = engine
        self.top_n = top_n

    def _token(self, token: int) -> tuple[str, list[int]]:
        piece = self.engine.token_piece(token)
        return piece.decode("utf-8", errors="replace"), list(piece)

    def chat_entry(self, token: int, logprob: float, top: TopLogprobs) -> dict:
        text, raw = self._token(token)
        alternatives = []
        for alt, alt_logprob in top[: self.top_n]:
            alt_text, alt_raw = self._token(alt)
            alternatives.append({"token": alt_text, "logprob": alt_logprob, "bytes": alt_raw})
        return {"token": text, "logprob": logprob, "bytes": raw, "top_logprobs": alternatives}

    def chat(self, events: Iterable[TokenEvent]) -> dict:
        content = [self.chat_entry(e.token_id, e.logprob, e.top_logprobs or ()) for e in events]
        return {"content": content, "refusal": None}

    def legacy(self, entries: Iterable[tuple[int, float | None, TopLogprobs]], offset: int) -> dict:
        """Completions' shape; `offset` is where the first token starts in the choice's text."""
        result: dict = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for token, logprob, top in entries:
            text, _ = self._token(token)
            result["tokens"].append(text)
            result["token_logprobs"].append(logprob)
            result["top_logprobs"].append(
                None if logprob is None else {self._token(alt)[0]: lp for alt, lp in top[: self.top_n]}
            )
            result["text_offset"].append(offset)
            offset += len(text)
        return result


def entries(events: Iterable[TokenEvent]) -> list[tuple[int, float | None, TopLogprobs]]:
    return [(e.token_id, e.logprob, e.top_logprobs or ()) for e in events]
