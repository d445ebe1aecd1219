"""Request sampling fields → engine `SamplingParams`, with everything checked before generation.

Parameters the engine has no equivalent for are not silently dropped: they are listed, and the
response carries them in the `X-Homeport-Ignored-Parameters` header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import jsonschema

from homeport.engines.base import DEFAULT_SAMPLER_ORDER, Grammar, SamplingParams, TextEngine
from homeport.errors import InvalidRequestError
from homeport.schemas.common import SamplingFields
from homeport.services.reply import IGNORED_HEADER

BANNED = float("-inf")

# Reference sampler_priority names → native stages (several names share the penalties stage).
_STAGE_BY_NAME = {
    "repetition_penalty": "penalties",
    "presence_penalty": "penalties",
    "frequency_penalty": "penalties",
    "dry": "dry",
    "top_n_sigma": "top_n_sigma",
    "temperature": "temperature",
    "dynamic_temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "typical_p": "typical_p",
    "min_p": "min_p",
    "xtc": "xtc",
}
# Names the reference accepts in sampler_priority whose samplers llama.cpp does not have.
_NO_STAGE = {"quadratic", "epsilon", "eta", "tfs", "top_a", "adaptive_p", "mirostat", "encoder_rep", "no_repeat_ngram"}

# Parameters with no llama.cpp equivalent, and the value at which they do nothing.
_UNSUPPORTED_NEUTRAL = {
    "tfs": 1.0,
    "top_a": 0.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "smoothing_factor": 0.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "penalty_alpha": 0.0,
    "guidance_scale": 1.0,
}


@dataclass(frozen=True)
class Sampling:
    params: SamplingParams
    ignored: tuple[str, ...]

    def headers(self) -> dict[str, str]:
        return {IGNORED_HEADER: ", ".join(self.ignored)} if self.ignored else {}


def build_sampling(fields: SamplingFields, engine: TextEngine, *, seed_offset: int = 0) -> Sampling:
    grammar = _grammar(fields, engine)
    bias = _logit_bias(fields, engine)
    seed = fields.seed + seed_offset if fields.seed is not None and fields.seed >= 0 else None
    order = _order(fields)
    if fields.dynamic_temperature:
        temperature = (fields.dynatemp_low + fields.dynatemp_high) / 2
        dynatemp_range = abs(fields.dynatemp_high - fields.dynatemp_low) / 2
    else:
        temperature = 1.0 if fields.temperature is None else fields.temperature
        dynatemp_range = 0.0
    params = SamplingParams(
        temperature=temperature,
        dynatemp_range=dynatemp_range,
        dynatemp_exponent=fields.dynatemp_exponent,
        top_p=1.0 if fields.top_p is None else fields.top_p,
        top_k=fields.top_k if fields.top_k is not None and fields.top_k > 0 else 0,
        min_p=fields.min_p or 0.0,
        typical_p=fields.typical_p,
        top_n_sigma=fields.top_n_sigma,
        xtc_threshold=fields.xtc_threshold,
        xtc_probability=fields.xtc_probability,
        dry_multiplier=fields.dry_multiplier,
        dry_base=fields.dry_base,
        dry_allowed_length=fields.dry_allowed_length,
        dry_sequence_breakers=tuple(fields.dry_sequence_breakers),
        repetition_penalty=fields.repetition_penalty or 1.0,
        repetition_penalty_range=1024 if fields.repetition_penalty_range is None else fields.repetition_penalty_range,
        frequency_penalty=fields.frequency_penalty or 0.0,
        presence_penalty=fields.presence_penalty or 0.0,
        mirostat_mode=fields.mirostat_mode,
        mirostat_tau=fields.mirostat_tau,
        mirostat_eta=fields.mirostat_eta,
        order=order,
        seed=seed,
        logit_bias=bias,
        grammar=grammar,
    )
    ignored = tuple(dict.fromkeys(_ignored(fields) + tuple(engine.unsupported_sampling(params))))
    return Sampling(params=params, ignored=ignored)


def _ignored(fields: SamplingFields) -> tuple[str, ...]:
    ignored = [name for name, neutral in _UNSUPPORTED_NEUTRAL.items() if getattr(fields, name) != neutral]
    ignored += sorted(set(fields.sampler_priority or ()) & _NO_STAGE)
    return tuple(dict.fromkeys(ignored))


def _order(fields: SamplingFields) -> tuple[str, ...]:
    if fields.sampler_priority:
        unknown = [n for n in fields.sampler_priority if n not in _STAGE_BY_NAME and n not in _NO_STAGE]
        if unknown:
            valid = ", ".join(sorted(set(_STAGE_BY_NAME) | _NO_STAGE))
            raise InvalidRequestError(
                f"unknown sampler {unknown[0]!r} in sampler_priority; valid names: {valid}", param="sampler_priority"
            )
        stages = [_STAGE_BY_NAME[n] for n in fields.sampler_priority if n in _STAGE_BY_NAME]
        # Stages left out of the priority list keep their default relative order, after it.
        order = list(dict.fromkeys(stages + list(DEFAULT_SAMPLER_ORDER)))
    else:
        order = list(DEFAULT_SAMPLER_ORDER)
    if fields.temperature_last:
        order.remove("temperature")
        order.append("temperature")
    return tuple(order)


def _logit_bias(fields: SamplingFields, engine: TextEngine) -> dict[int, float]:
    bias: dict[int, float] = {}
    for key, value in (fields.logit_bias or {}).items():
        token = _checked_token(int(key), engine, "logit_bias")
        # OpenAI: -100 bans the token outright, whatever the logits say.
        bias[token] = BANNED if value <= -100 else value
    for token in fields.custom_token_bans or ():
        bias[_checked_token(token, engine, "custom_token_bans")] = BANNED
    if fields.ban_eos_token or fields.ignore_eos:
        bias.update(dict.fromkeys(engine.eog_tokens(), BANNED))
    return bias


def _checked_token(token: int, engine: TextEngine, param: str) -> int:
    if not 0 <= token < engine.vocab_size:
        raise InvalidRequestError(
            f"{param} names token {token}, outside this model's vocabulary (0..{engine.vocab_size - 1})", param=param
        )
    return token


def _grammar(fields: SamplingFields, engine: TextEngine) -> Grammar | None:
    grammar = response_format_grammar(fields.response_format)
    param = "response_format"
    if fields.grammar_string:
        if grammar is not None:
            raise InvalidRequestError("send either grammar_string or a JSON response_format, not both", param=param)
        grammar, param = Grammar(kind="gbnf", source=fields.grammar_string), "grammar_string"
    if grammar is not None:
        problem = engine.check_grammar(grammar)
        if problem:
            raise InvalidRequestError(f"Invalid {param}: {problem}", param=param, code="invalid_grammar")
    return grammar


def response_format_grammar(response_format: dict | None) -> Grammar | None:
    """OpenAI's response_format as a decoding constraint (None for plain text)."""
    if not response_format:
        return None
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return Grammar(kind="json")
    if kind != "json_schema":
        raise InvalidRequestError(
            f"response_format type must be text, json_object or json_schema, not {kind!r}", param="response_format.type"
        )
    wrapper = response_format.get("json_schema")
    if not isinstance(wrapper, dict):
        raise InvalidRequestError("response_format.json_schema must be an object", param="response_format.json_schema")
    # OpenAI nests the schema under json_schema.schema; some clients send it one level up.
    schema = wrapper.get("schema", wrapper if "type" in wrapper or "properties" in wrapper else None)
    if schema is None:
        return Grammar(kind="json")
    if not isinstance(schema, dict):
        raise InvalidRequestError("the JSON schema must be an object", param="response_format.json_schema.schema")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequestError(
            f"Invalid JSON schema: {exc.message}", param="response_format.json_schema.schema", code="invalid_schema"
        ) from None
    return Grammar(kind="json_schema", source=json.dumps(schema))
