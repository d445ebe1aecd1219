"""Request fields shared by completions and chat."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class WireModel(BaseModel):
    # Clients send new fields all the time: accept unknown ones, validate the known ones.
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class StreamOptions(WireModel):
    include_usage: bool = False


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class SamplingFields(WireModel):
    """Generation parameters accepted by completions, chat and logits: OpenAI's plus the reference
    API's (names and defaults as text-generation-webui's, so its clients work unchanged)."""

    model: str | None = None
    preset: str | None = None  # a YAML file under user_data/presets/; request values win over it
    temperature: Annotated[float, Field(ge=0.0, le=5.0)] | None = None
    dynamic_temperature: bool = False
    dynatemp_low: Annotated[float, Field(ge=0.0)] = 1.0
    dynatemp_high: Annotated[float, Field(ge=0.0)] = 1.0
    dynatemp_exponent: Annotated[float, Field(gt=0.0)] = 1.0
    top_p: Probability | None = None
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_p: Probability | None = None
    typical_p: Probability = 1.0
    top_n_sigma: Annotated[float, Field(ge=0.0)] = 0.0
    tfs: Probability = 1.0
    top_a: Annotated[float, Field(ge=0.0)] = 0.0
    epsilon_cutoff: Annotated[float, Field(ge=0.0)] = 0.0
    eta_cutoff: Annotated[float, Field(ge=0.0)] = 0.0
    smoothing_factor: Annotated[float, Field(ge=0.0)] = 0.0
    smoothing_curve: Annotated[float, Field(gt=0.0)] = 1.0
    xtc_threshold: Probability = 0.1
    xtc_probability: Probability = 0.0
    dry_multiplier: Annotated[float, Field(ge=0.0)] = 0.0
    dry_base: Annotated[float, Field(ge=1.0)] = 1.75
    dry_allowed_length: Annotated[int, Field(ge=1)] = 2
    dry_sequence_breakers: str | list[str] = ["\n", ":", '"', "*"]
    repetition_penalty: Annotated[float, Field(gt=0.0)] | None = None
    repetition_penalty_range: Annotated[int, Field(ge=-1)] | None = None
    encoder_repetition_penalty: Annotated[float, Field(gt=0.0)] = 1.0
    no_repeat_ngram_size: Annotated[int, Field(ge=0)] = 0
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    penalty_alpha: Annotated[float, Field(ge=0.0)] = 0.0
    mirostat_mode: Annotated[int, Field(ge=0, le=2)] = 0
    mirostat_tau: Annotated[float, Field(gt=0.0)] = 5.0
    mirostat_eta: Annotated[float, Field(gt=0.0)] = 0.1
    temperature_last: bool = False
    sampler_priority: str | list[str] | None = None
    seed: int | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    custom_token_bans: str | list[int] | None = []
    ban_eos_token: bool = False
    ignore_eos: bool = False  # vLLM's name for ban_eos_token
    add_bos_token: bool = True
    skip_special_tokens: bool = True
    truncation_length: Annotated[int, Field(ge=0)] = 0  # 0: the model's context
    auto_max_new_tokens: bool = False
    max_tokens_second: Annotated[float, Field(ge=0.0)] = 0.0
    guidance_scale: Annotated[float, Field(ge=0.0)] = 1.0
    negative_prompt: str = ""
    grammar_string: str = ""
    response_format: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = 1
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str]:
        if value is None:
            return []
        values = [value] if isinstance(value, str) else value
        return [v for v in values if v]

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.lstrip("-").isdigit():
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
        return value

    @field_validator("custom_token_bans")
    @classmethod
    def _bans(cls, value: str | list[int] | None) -> list[int]:
        if value is None or value == "":
            return []
        if isinstance(value, str):
            try:
                return [int(part) for part in value.split(",") if part.strip()]
            except ValueError:
                raise ValueError("custom_token_bans must be comma-separated token ids") from None
        return list(value)

    @field_validator("sampler_priority")
    @classmethod
    def _priority(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        names = value.replace(",", "\n").split("\n") if isinstance(value, str) else value
        return [name.strip() for name in names if name.strip()]

    @field_validator("dry_sequence_breakers")
    @classmethod
    def _breakers(cls, value: str | list[str]) -> list[str]:
        if isinstance(value, list):
            return value
        # The reference sends them as the inside of a JSON list: '"\\n", ":", "\\"", "*"'.
        try:
            parsed = json.loads(f"[{value}]")
        except json.JSONDecodeError:
            raise ValueError("dry_sequence_breakers must be a list of strings or a JSON list body") from None
        if not all(isinstance(item, str) for item in parsed):
            raise ValueError("dry_sequence_breakers must be strings")
        return parsed

    def stop_strings(self) -> list[str]:
        return list(self.stop or [])
