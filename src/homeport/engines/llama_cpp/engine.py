"""The llama.cpp engine: a GGUF model, its tokenizer, and the thread that runs its decode loop.

One thread per loaded model owns the llama.cpp context and runs the `Scheduler` (continuous
batching, prefix cache) on the shared engine runtime (`engines/runtime`): requests reach it
through a queue and tokens come back to the event loop, so no blocking C call runs on the loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import llama_cpp
from llama_cpp import _internals
from llama_cpp import _logger as llama_logger
from llama_cpp._utils import suppress_stdout_stderr

from homeport.engines import load_progress
from homeport.engines.base import Grammar, ModelInfo, SamplingParams
from homeport.engines.llama_cpp.lora import LoraSet
from homeport.engines.llama_cpp.sampling import grammar_sampler
from homeport.engines.llama_cpp.scheduler import Scheduler
from homeport.engines.llama_cpp.speculative import Drafter, DraftModel, DraftModelConfig, NgramDrafter
from homeport.engines.llama_cpp.vision import MediaPrompt, VisionProjector
from homeport.engines.runtime import RuntimeEngine
from homeport.errors import EngineError, EngineInputError, StartupError, UnsupportedInputError

log = logging.getLogger(__name__)

# llama.cpp's own log (loading chatter, and grammar parse errors that quote the request) stays
# silent unless debug output was asked for: request text must never reach a log.
_SILENT_LOG = llama_cpp.llama_log_callback(lambda level, text, user_data: None)

DEFAULT_MAX_CONTEXT = 8192  # an auto ctx-size caps the model's training context here (KV memory)
PREFILL_CHUNK = 128  # prompt tokens per sequence per step, aligned to positions (see scheduler)


@dataclass(frozen=True)
class LlamaCppConfig:
    path: Path
    model_id: str
    ctx_size: int = 0  # per request; 0: the model's training context, capped at DEFAULT_MAX_CONTEXT
    threads: int = 0  # 0: every core
    n_gpu_layers: int = 0
    batch_size: int = 512  # prompt tokens per step
    ubatch_size: int = 512  # tokens per llama.cpp compute pass
    parallel: int = 8  # sequences decoded together
    threads_batch: int = 0  # 0: as threads
    cache_type: str = "fp16"  # KV cache: fp16 | q8_0 | q4_0
    flash_attn: bool | None = None  # None: llama.cpp decides
    rope_freq_base: float = 0.0  # 0: the model's
    use_mmap: bool = True
    use_mlock: bool = False
    kv_unified: bool = True  # one KV cache shared by all sequences, or one stream each
    kv_size: int = 0  # the unified cache's cells; 0: one context's worth
    cache_ram: int = 1024  # MiB of host memory for idle slots' caches out of the unified cache (0: none)
    speculative: SpeculativeConfig | None = None
    mmproj: Path | None = None  # a vision projector: the model then takes images
    split_mode: str = "layer"  # none | layer | row: how layers spread over several GPUs
    tensor_split: tuple[float, ...] = ()  # each GPU's share; () = by free memory
    offload_kqv: bool = True  # KV cache on the GPU with the layers
    # Sliding-window layers with a full-size KV (llama.cpp's default): a prefix cached in a slot
    # stays reusable. Off, they keep ~the window per sequence (Gemma 3 270M at 8 x 8192: 67 MiB
    # instead of 960), as llama-server does, and a reuse that would need evicted cells re-reads.
    swa_full: bool = True
    verbose: bool = False

    # The load arguments in effect by their reference names (for model/info), as the backend
    # resolved them from its declarations: the request's, else the setting's, else the default.
    load_args: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class SpeculativeConfig:
    """Speculative decoding: drafts from a smaller model (`draft_path`) or by prompt lookup."""

    kind: Literal["draft", "ngram"]
    draft_max: int = 4  # drafts per sequence per step
    draft_min: int = 0  # fewer drafts than this are not worth checking
    draft_path: Path | None = None
    draft_n_gpu_layers: int = 0
    draft_p_min: float = 0.0  # the draft model stops when its top token is less likely than this
    ngram_size: int = 4  # prompt lookup: the longest n-gram looked up (then shorter ones, down to 2)


_SPLIT_MODES = {"none": llama_cpp.LLAMA_SPLIT_MODE_NONE, "layer": llama_cpp.LLAMA_SPLIT_MODE_LAYER,
                "row": llama_cpp.LLAMA_SPLIT_MODE_ROW}
_KV_TYPES = {"fp16": llama_cpp.GGML_TYPE_F16, "f16": llama_cpp.GGML_TYPE_F16,
             "q8_0": llama_cpp.GGML_TYPE_Q8_0, "q4_0": llama_cpp.GGML_TYPE_Q4_0}


class LlamaCppEngine(RuntimeEngine):
    """A GGUF model served by llama.cpp. Construct with `load()` (blocking: call it off the loop)."""

    def __init__(self, config: LlamaCppConfig, model: _internals.LlamaModel, ctx: _internals.LlamaContext,
                 context_length: int, drafter: Drafter | None = None, vision: VisionProjector | None = None) -> None:
        self.config = config
        self._model = model
        self._ctx = ctx
        self._vocab = model.vocab
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._piece_cache: dict[tuple[int, bool], bytes] = {}
        self._vision = vision
        self._eog = frozenset(t for t in range(self._n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t))
        n_batch = min(config.batch_size, context_length)
        self._scheduler = Scheduler(
            ctx,
            model,
            name=f"llama.cpp:{config.model_id}",
            model_id=config.model_id,
            n_slots=config.parallel,
            n_batch=n_batch,
            chunk=min(PREFILL_CHUNK, n_batch),
            context_length=context_length,
            piece=self._piece,
            eog=self._eog,
            drafter=drafter,
            vision=vision,
            draft_max=config.speculative.draft_max if config.speculative else 0,
            draft_min=config.speculative.draft_min if config.speculative else 0,
            kv_cells=llama_cpp.llama_n_ctx(ctx.ctx) if config.kv_unified else None,
            store_bytes=config.cache_ram << 20,
            # On a CPU (its prompt cost linear in tokens: docs/benchmarks.md) one chunk's worth per
            # step; a GPU reads a whole batch for little more than a chunk, so it takes the batch.
            prefill_budget=n_batch if config.n_gpu_layers else PREFILL_CHUNK,
        )
        self._loras = LoraSet(model.model, ctx.ctx)
        metadata = model.metadata()
        self.info = ModelInfo(
            model_id=config.model_id,
            context_length=context_length,
            loader="llama.cpp",
            path=str(config.path),
            chat_template=metadata.get("tokenizer.chat_template") or None,
            bos_token=self._token_text(llama_cpp.llama_vocab_bos(self._vocab)),
            eos_token=self._token_text(llama_cpp.llama_vocab_eos(self._vocab)),
        )

    # ---- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, config: LlamaCppConfig) -> LlamaCppEngine:
        llama_logger.set_verbose(config.verbose)
        if not config.verbose:
            llama_cpp.llama_log_set(_SILENT_LOG, ctypes.c_void_p(0))
        if not config.path.is_file():
            raise StartupError(f"model file not found: {config.path}")
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0x7FFFFFFF if config.n_gpu_layers < 0 else config.n_gpu_layers
        model_params.split_mode = _SPLIT_MODES[config.split_mode]
        shares = (ctypes.c_float * max(1, llama_cpp.llama_max_devices()))()
        if config.tensor_split:
            for index, share in enumerate(config.tensor_split[:len(shares)]):
                shares[index] = share
            model_params.tensor_split = shares  # read during the load only; `shares` outlives it
        if not config.use_mmap or config.use_mlock:  # otherwise llama.cpp's own default (auto)
            model_params.load_mode = (
                (llama_cpp.LLAMA_LOAD_MODE_MMAP if config.use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE)
                | (llama_cpp.LLAMA_LOAD_MODE_MLOCK if config.use_mlock else 0)
            )
        # llama.cpp reports the share of tensors read; the model manager shows it (load_progress.py).
        progress = llama_cpp.llama_progress_callback(_report_progress)
        model_params.progress_callback = progress  # `progress` outlives the load below
        try:
            model = _internals.LlamaModel(path_model=str(config.path), params=model_params, verbose=config.verbose)
        except ValueError:
            raise StartupError(f"cannot load model {config.path}: not a valid GGUF file") from None
        context_length = config.ctx_size or min(model.n_ctx_train(), DEFAULT_MAX_CONTEXT)
        threads = config.threads or _default_threads()
        n_batch = min(config.batch_size, context_length)
        ctx_params = llama_cpp.llama_context_default_params()
        # Unified (one cache for all, the default): attention batches across sequences, 1.5x the
        # aggregate speed of separate streams at 8, and the sequences share one pool of kv_size
        # cells (one context by default; the scheduler pauses a request when they outgrow it).
        # Separate streams: ctx_size cells each, and where a request's tokens sit never depends on
        # what others left behind, so its greedy output never does either (docs/benchmarks.md).
        if config.kv_unified and 0 < config.kv_size < context_length:
            model.close()
            raise StartupError(f"--kv-size {config.kv_size} is less than the context length {context_length}: "
                               "a request could not fit (raise it, or lower --ctx-size)")
        ctx_params.kv_unified = config.kv_unified
        ctx_params.n_ctx = (config.kv_size or context_length) if config.kv_unified else context_length * config.parallel
        ctx_params.n_seq_max = config.parallel
        # A step: a prompt budget plus each sequence's next token (and its drafts, when speculating).
        draft_max = config.speculative.draft_max if config.speculative else 0
        ctx_params.n_batch = n_batch + config.parallel * (1 + draft_max)
        ctx_params.n_ubatch = min(config.ubatch_size, ctx_params.n_batch)
        ctx_params.n_threads = threads
        ctx_params.n_threads_batch = config.threads_batch or threads
        ctx_params.type_k = ctx_params.type_v = _KV_TYPES[config.cache_type]
        if config.flash_attn is not None:
            ctx_params.flash_attn_type = 1 if config.flash_attn else 0
        if config.rope_freq_base:
            ctx_params.rope_freq_base = config.rope_freq_base
        ctx_params.no_perf = True
        # Rejected drafts are removed from the KV, which a window-sized SWA cache cannot undo.
        ctx_params.swa_full = config.swa_full or config.speculative is not None
        ctx_params.offload_kqv = config.offload_kqv
        try:
            ctx = _internals.LlamaContext(model=model, params=ctx_params, verbose=config.verbose)
        except ValueError:
            model.close()
            raise StartupError(
                f"cannot create a llama.cpp context of {ctx_params.n_ctx} KV cells for {config.parallel} sequences "
                f"for {config.path} (not enough memory? try a smaller --ctx-size, --kv-size or --parallel)"
            ) from None
        drafter = vision = None
        try:
            drafter = _load_drafter(config, model, context_length, n_batch, threads)
            if config.mmproj is not None:
                vision = VisionProjector.load(config.mmproj, model, threads=threads, use_gpu=config.n_gpu_layers != 0,
                                              verbose=config.verbose)
        except StartupError:
            if drafter is not None:
                drafter.close()
            ctx.close()
            model.close()
            raise
        return cls(config, model, ctx, context_length, drafter, vision)

    async def start(self) -> None:
        self._scheduler.start()

    async def close(self) -> None:
        await self._scheduler.aclose()
        self._scheduler.free()
        if self._vision is not None:
            self._vision.close()
        self._loras.close()
        self._ctx.close()
        self._model.close()

    # ---- tokens ----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._n_vocab

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        add_bos = add_special and bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_bos, parse_special)
        if n < 0:
            capacity = -n
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_bos, parse_special)
        return list(buf[:n])

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self._piece(t) for t in tokens).decode("utf-8", errors="replace")

    def token_piece(self, token: int) -> bytes:
        return self._piece(token, True)

    def _piece(self, token: int, special: bool = False) -> bytes:
        key = (token, special)
        piece = self._piece_cache.get(key)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
            piece = buf.raw[:n]
            self._piece_cache[key] = piece
        return piece

    def eog_tokens(self) -> frozenset[int]:
        return self._eog

    def fim_tokens(self) -> tuple[int, int, int] | None:
        tokens = (
            llama_cpp.llama_vocab_fim_pre(self._vocab),
            llama_cpp.llama_vocab_fim_suf(self._vocab),
            llama_cpp.llama_vocab_fim_mid(self._vocab),
        )
        return tokens if all(t >= 0 for t in tokens) else None

    def unsupported_sampling(self, params: SamplingParams) -> list[str]:
        return []  # every SamplingParams stage is a native sampler

    def media_marker(self) -> str | None:
        return self._vision.marker if self._vision is not None else None

    def tokenize_media(self, text: str, images: Sequence[bytes], *, add_special: bool = True) -> MediaPrompt:
        """Blocking (image decoding and the vision encoder): call it off the event loop. The
        images are encoded here, on the caller's thread, so the engine thread only decodes their
        embeddings and running generations do not wait for the encoder."""
        if self._vision is None:
            raise UnsupportedInputError(f"the model {self.info.model_id} does not accept images")
        media = self._vision.tokenize(text, images, add_special=add_special, parse_special=True)
        if media.segments and media.segments[-1].start + media.segments[-1].length >= len(media.tokens):
            media.close()
            raise EngineInputError("a prompt cannot end with an image")
        for segment in media.segments:
            if self._vision.non_causal and segment.length > self._scheduler.max_image_tokens:
                media.close()
                raise EngineInputError(
                    f"an image takes {segment.length} tokens, more than this model's --ubatch-size "
                    f"({self._scheduler.max_image_tokens}) allows"
                )
        media.embeddings = [self._vision.encode(segment) for segment in media.segments]
        return media

    def check_grammar(self, grammar: Grammar) -> str | None:
        # llama.cpp's grammar parser prints its errors, quoting the grammar, straight to stderr:
        # request text must not reach the log, so stderr is muted while it parses.
        try:
            with suppress_stdout_stderr(disable=self.config.verbose):
                sampler = grammar_sampler(grammar, self._vocab)
        except ValueError as exc:
            return str(exc)
        llama_cpp.llama_sampler_free(sampler)
        return None

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text = llama_cpp.llama_vocab_get_text(self._vocab, token)
        return text.decode("utf-8", errors="replace") if text else ""

    def effective_args(self) -> dict:
        return {**dict(self.config.load_args), "ctx_size": self.info.context_length}

    # ---- LoRA adapters ---------------------------------------------------------------------

    @property
    def lora_names(self) -> list[str]:
        return [path.stem for path, _ in self._loras.applied]

    async def set_loras(self, adapters: list[tuple[Path, float]]) -> None:
        """Applies these adapters (file, scale) instead of the current ones; [] removes them all.
        Waits for running generations to finish (queued ones start after the change): the
        prefix cache is cleared, as its KV was computed with the old weights."""
        if not self._scheduler.running:
            raise EngineError("the model is not running")
        wanted = tuple(adapters)

        def apply() -> None:  # on the engine thread, with no generation running
            if self._loras.apply(wanted):
                self._scheduler.clear_cache()

        await asyncio.wrap_future(self._scheduler.call_in_thread(apply, exclusive=True))


def _report_progress(fraction: float, _user_data: ctypes.c_void_p) -> bool:
    load_progress.report(fraction)
    return True  # go on loading


def _load_drafter(config: LlamaCppConfig, model: _internals.LlamaModel, context_length: int, n_batch: int,
                  threads: int) -> Drafter | None:
    spec = config.speculative
    if spec is None:
        return None
    if spec.kind == "ngram":
        return NgramDrafter(spec.ngram_size)
    return DraftModel.load(
        DraftModelConfig(spec.draft_path, spec.draft_n_gpu_layers, spec.draft_p_min), model,
        n_seq=config.parallel, n_ctx_per_seq=context_length, n_batch=n_batch, threads=threads,
        threads_batch=config.threads_batch or threads, kv_unified=config.kv_unified, verbose=config.verbose,
    )


def check_gguf(path: Path) -> None:
    """Raises StartupError unless llama.cpp can read the file's vocabulary (a cheap validity check)."""
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    with suppress_stdout_stderr(disable=False):
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise StartupError(f"cannot load model {path}: not a valid GGUF file")
    llama_cpp.llama_model_free(model)


def _default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
