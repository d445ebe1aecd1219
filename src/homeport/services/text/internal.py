"""The reference API's `/v1/internal/*`: tokenizer, model facts, stopping generations."""

from __future__ import annotations

import asyncio

from homeport.engines.base import TextEngine
from homeport.schemas.internal import LogitsRequest
from homeport.services.text.generation import check_token_ids, tokenize
from homeport.services.text.presets import PresetLibrary
from homeport.services.text.sampling import build_sampling


class InternalService:
    def __init__(self, engine: TextEngine, presets: PresetLibrary) -> None:
        self.engine = engine
        self.presets = presets

    async def encode(self, text: str) -> dict:
        tokens = await asyncio.to_thread(self.engine.tokenize, text)
        return {"tokens": tokens, "length": len(tokens)}

    async def decode(self, tokens: list[int]) -> dict:
        check_token_ids(self.engine, tokens, "tokens")
        return {"text": await asyncio.to_thread(self.engine.detokenize, tokens)}

    async def count(self, text: str) -> dict:
        tokens = await asyncio.to_thread(self.engine.tokenize, text)
        return {"length": len(tokens)}

    def stop_generation(self, response_id: str | None) -> None:
        self.engine.stop(response_id)

    async def logits(self, request: LogitsRequest) -> dict[str, float]:
        """Next-token probabilities as the reference API returns them: {token text: probability},
        most likely first, from the raw model or after the request's samplers."""
        request = self.presets.apply(request)
        tokens = await tokenize(self.engine, request.prompt)
        sampling = build_sampling(request, self.engine).params if request.use_samplers else None
        distribution = await self.engine.distribution(tokens, sampling, request.top_logits)
        result: dict[str, float] = {}
        for token, probability in distribution:
            text = self.engine.token_piece(token).decode("utf-8", errors="replace")
            result[text] = result.get(text, 0.0) + probability
        return result
