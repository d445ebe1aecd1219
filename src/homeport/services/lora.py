"""LoRA adapters (the reference API's `/v1/internal/lora/*`): the files are
`<user_data_dir>/loras/*.gguf`, named without the suffix, and apply to one loaded model (the
request's `model`, or the default), which is loaded if needed. They belong to that engine:
unloading or reloading the model drops them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from homeport.errors import InvalidRequestError
from homeport.services.engine_input import engine_input_from
from homeport.registry.manager import ModelManager


class LoraService:
    def __init__(self, models: ModelManager[Any], user_data_dir: Path) -> None:
        self.models = models
        self.folder = user_data_dir / "loras"

    async def names(self) -> list[str]:
        return list(await self._available())

    async def apply(self, model_name: str | None, names: list[str], scales: list[float] | None) -> None:
        """Replaces the model's adapters with these (scale 1 each unless given)."""
        scales = scales if scales is not None else [1.0] * len(names)
        if len(scales) != len(names):
            raise InvalidRequestError(f"`scales` has {len(scales)} values for {len(names)} LoRA names", param="scales")
        if len(set(names)) != len(names):
            raise InvalidRequestError("a LoRA is named more than once", param="lora_names")
        available = await self._available()
        unknown = [name for name in names if name not in available]
        if unknown:
            raise InvalidRequestError(
                f"unknown LoRA '{unknown[0]}'; available: {', '.join(available) or 'none (put *.gguf files in loras/)'}",
                param="lora_names",
            )
        await self._set(model_name, [(available[name], scale) for name, scale in zip(names, scales)])

    async def remove_all(self, model_name: str | None) -> None:
        model_id = self.models.resolve(model_name, strict=True)
        if any(m.entry.id == model_id for m in self.models.loaded()):  # a model not loaded has none to remove
            await self._set(model_id, [])

    async def _set(self, model_name: str | None, adapters: list[tuple[Path, float]]) -> None:
        model = await self.models.acquire(model_name, strict=True)  # pinned: not evicted while its adapters change
        try:
            with engine_input_from("lora_names"):  # the engine's error names no request field
                await model.engine.set_loras(adapters)
        finally:
            self.models.release(model)

    async def _available(self) -> dict[str, Path]:
        return await asyncio.to_thread(self._scan)

    def _scan(self) -> dict[str, Path]:
        if not self.folder.is_dir():
            return {}
        return {path.stem: path.absolute() for path in sorted(self.folder.glob("*.gguf")) if path.is_file()}
