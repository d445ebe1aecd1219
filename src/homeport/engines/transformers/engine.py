"""The transformers engine: a Hugging Face causal LM folder, its tokenizer, and the thread that
runs its decode loop.

One thread per loaded model owns the torch model and runs the `Scheduler` on the shared engine
runtime (`engines/runtime`): requests reach it through a queue and tokens come back to the event
loop, so no forward pass ever runs on the event loop. Build it with `load_transformers_engine`
(loader.py).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from homeport.engines.base import Grammar, ModelInfo, SamplingParams
from homeport.engines.runtime import RuntimeEngine
from homeport.engines.transformers.scheduler import Scheduler
from homeport.engines.transformers.support import DEFAULT_PARALLEL, GRAMMAR_UNSUPPORTED, unsupported_sampling
from homeport.engines.transformers.tokens import Tokens
from homeport.errors import UnsupportedInputError, UnsupportedParameterError

PREFILL_CHUNK = 256  # prompt tokens per step: a long prompt yields to the other requests between chunks


@dataclass(frozen=True)
class TransformersConfig:
    path: Path
    model_id: str
    ctx_size: int = 0  # per request; 0: the model's training context, capped at DEFAULT_MAX_CONTEXT
    threads: int = 0  # 0: torch's default
    parallel: int = DEFAULT_PARALLEL
    dtype: str = "auto"
    device: str = "auto"
    debug: bool = False


class TransformersEngine(RuntimeEngine):
    """A Hugging Face model served with torch. Construct with `load_transformers_engine()`."""

    def __init__(
        self,
        config: TransformersConfig,
        model: Any,
        tokens: Tokens,
        *,
        info: ModelInfo,
        eog: frozenset[int],
        device: Any,
        dtype: str,
        prefill_chunk: int = PREFILL_CHUNK,
    ) -> None:
        self.config = config
        self.info = info
        self._model = model
        self._tokens = tokens
        self._eog = eog
        self._device = device
        self._dtype = dtype
        self._scheduler = Scheduler(
            model,
            tokens,
            name=f"transformers:{info.model_id}",
            model_id=info.model_id,
            device=device,
            parallel=config.parallel,
            context_length=info.context_length,
            prefill_chunk=prefill_chunk,
            eog=eog,
        )

    async def start(self) -> None:
        self._scheduler.start()

    async def close(self) -> None:
        await self._scheduler.aclose()
        self._scheduler.model = None
        self._model = None
        gc.collect()
        if str(self._device).startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # ---- tokens ----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._tokens.vocab_size

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return self._tokens.encode(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._tokens.decode(tokens)

    def token_piece(self, token: int) -> bytes:
        return self._tokens.piece(token, render_special=True)

    def eog_tokens(self) -> frozenset[int]:
        return self._eog

    def fim_tokens(self) -> tuple[int, int, int] | None:
        return None

    def check_grammar(self, grammar: Grammar) -> str | None:
        return GRAMMAR_UNSUPPORTED

    def media_marker(self) -> str | None:
        return None  # image inputs: GGUF models with an mmproj only, for now

    def tokenize_media(self, text: str, images: Sequence[bytes], *, add_special: bool = True) -> NoReturn:
        raise UnsupportedInputError("image inputs are not supported by the transformers engine yet")

    def unsupported_sampling(self, params: SamplingParams) -> list[str]:
        """Sampling parameters set to a value this engine cannot apply (it treats them as neutral)."""
        return unsupported_sampling(params)

    def effective_args(self) -> dict:
        return {
            "ctx_size": self.info.context_length,
            "threads": self.config.threads,
            "parallel": self.config.parallel,
            "dtype": self._dtype,
            "device": str(self._device),
        }

    # ---- LoRA adapters ---------------------------------------------------------------------

    @property
    def lora_names(self) -> list[str]:
        return []

    async def set_loras(self, adapters: list[tuple[Path, float]]) -> None:
        raise UnsupportedParameterError("LoRA adapters are not supported by the transformers engine yet")
