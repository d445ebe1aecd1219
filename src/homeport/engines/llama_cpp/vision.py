"""Image inputs through a multimodal projector ("mmproj" GGUF), with llama.cpp's mtmd library.

`VisionProjector.tokenize` turns a prompt whose text marks each image with `marker` into a
`MediaPrompt`: text tokens, and for each image a run of placeholder ids (negative, derived from a
hash of the image bytes) standing for the KV positions its embeddings will take. The engine
thread prefills the text as usual and, on reaching a segment, calls `decode_image`, which runs
the vision encoder and decodes the embeddings into the sequence's KV at those positions.

Thread safety (read from mtmd.cpp / mtmd-helper.cpp of the llama.cpp this build pins):
`tokenize` only reads the mtmd context (the media marker, the image preprocessor's constant
parameters, the text vocabulary) and decodes image files with stb_image, whose one global (the
failure reason) is thread-local; mtmd documents both calls as thread-safe. So `tokenize` may run
on a worker thread while the engine thread decodes. `encode` writes the mtmd context's single
output buffer and its compute graph, so encodes are serialized by a lock; they never touch the
llama context, so they may also run on a worker thread. `decode_image` touches the llama context:
engine thread only. `close` only once no other call can run.

Not supported yet: projectors whose image chunks take a different number of KV positions than
tokens (M-RoPE models such as Qwen-VL: n_pos != n_tokens); `load` refuses them.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import sys
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp as mtmd

from homeport.errors import EngineError, EngineInputError, StartupError

# mtmd's log (loading chatter; debug lines that quote prompt text) stays silent unless debug
# output was asked for: request text must never reach a log.
_SILENT_LOG = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
_DEFAULT_LOG = llama_cpp.llama_log_callback()  # NULL: mtmd's own (stderr)
_LOG_ERROR = 4  # GGML_LOG_LEVEL_ERROR
_NO_CALLBACK = mtmd.mtmd_helper_post_decode_callback()  # NULL
# mtmd's image helper falls back to ffmpeg (found on PATH) for bytes stb_image cannot read,
# treating them as WebP or video. An image input must never start a subprocess or become a
# video, so ffmpeg is looked for where it cannot exist.
_NO_FFMPEG_DIR = os.devnull.encode()
_PLACEHOLDER_RANGE = 2**31 - 2  # placeholder ids lie in [-(2**31 - 1), -2]: int32, never -1


class _OwnedChunk:
    """An owned copy of one mtmd image chunk (the preprocessed pixels): freed by `release()`, or
    when nothing refers to it any more."""

    def __init__(self, ptr: int) -> None:
        self.ptr: int | None = ptr
        self._free = weakref.finalize(self, mtmd.mtmd_input_chunk_free, ptr)

    def release(self) -> None:
        self.ptr = None
        self._free()  # runs at most once


@dataclass(frozen=True)
class MediaSegment:
    start: int  # index in MediaPrompt.tokens where this image's placeholder tokens begin
    length: int  # placeholder tokens == KV positions the image takes
    placeholder: int  # the (negative) id repeated over the segment's tokens
    chunk: _OwnedChunk = field(repr=False, compare=False)


@dataclass
class MediaPrompt:
    tokens: list[int]  # text tokens; each image as `length` copies of its negative placeholder id
    segments: tuple[MediaSegment, ...]
    embeddings: list[np.ndarray] = field(default_factory=list)  # per segment, when encoded ahead of decoding

    def close(self) -> None:
        """Frees the images' preprocessed pixels (idempotent); segments cannot be decoded after."""
        for segment in self.segments:
            segment.chunk.release()

    def __enter__(self) -> MediaPrompt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VisionProjector:
    """A loaded mmproj bound to one text model. Construct with `load()` (blocking)."""

    def __init__(self, ctx: int, model: int, marker: str, non_causal: bool) -> None:
        self._ctx: int | None = ctx
        self._model = model
        self._n_embd = llama_cpp.llama_model_n_embd_inp(model)
        self._encode_lock = threading.Lock()
        self.marker = marker  # the text that marks where an image goes in a prompt
        # The model attends bidirectionally within an image (Gemma 3): an image must then be
        # decoded in one micro-batch, so it may take at most n_ubatch tokens.
        self.non_causal = non_causal

    @classmethod
    def load(
        cls, mmproj_path: str | Path, text_model, *, threads: int, use_gpu: bool, verbose: bool
    ) -> VisionProjector:
        """`text_model`: a llama_model_p, or llama_cpp's LlamaModel wrapper of the text model."""
        path = Path(mmproj_path)
        if not path.is_file():
            raise StartupError(f"vision projector file not found: {path}")
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise StartupError(f"cannot load vision projector {path}: not a GGUF file")
        model = getattr(text_model, "model", text_model)
        if not verbose:
            llama_cpp.llama_log_set(_SILENT_LOG, ctypes.c_void_p(0))
        errors: list[str] = []

        def capture(level: int, text: bytes, user_data: int) -> None:  # the reason a load fails
            if level == _LOG_ERROR and text:
                errors.append(text.decode("utf-8", errors="replace"))
            if verbose and text:
                sys.stderr.write(text.decode("utf-8", errors="replace"))

        capture_log = llama_cpp.llama_log_callback(capture)
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = max(1, threads)
        params.print_timings = False
        mtmd.mtmd_helper_log_set(capture_log, ctypes.c_void_p(0))
        try:
            ctx = mtmd.mtmd_init_from_file(str(path).encode(), model, params)
        finally:
            mtmd.mtmd_helper_log_set(_DEFAULT_LOG if verbose else _SILENT_LOG, ctypes.c_void_p(0))
        if not ctx:
            raise StartupError(f"cannot load vision projector {path}: {_reason(errors, path)}")
        refusal = None
        if not mtmd.mtmd_support_vision(ctx):
            refusal = "it has no vision encoder"
        elif mtmd.mtmd_decode_use_mrope(ctx):
            refusal = "models with M-RoPE image positions (e.g. Qwen-VL) are not supported yet"
        if refusal is not None:
            mtmd.mtmd_free(ctx)
            raise StartupError(f"cannot use vision projector {path}: {refusal}")
        marker = mtmd.mtmd_get_marker(ctx).decode("utf-8")
        return cls(ctx, model, marker, bool(mtmd.mtmd_decode_use_non_causal(ctx, None)))

    def close(self) -> None:
        if self._ctx is not None:
            mtmd.mtmd_free(self._ctx)
            self._ctx = None

    # ---- any thread ------------------------------------------------------------------------

    def tokenize(self, text: str, images: Sequence[bytes], *, add_special: bool, parse_special: bool) -> MediaPrompt:
        """`text` holds exactly one `marker` per image, in order; `images` are encoded files
        (PNG, JPEG, GIF, BMP, ...). Thread-safe (see the module docstring)."""
        ctx = self._live_ctx()
        n_markers = text.count(self.marker)
        if n_markers != len(images):
            raise EngineInputError(f"the prompt marks {n_markers} image(s) but {len(images)} image(s) were sent")
        bitmaps = (ctypes.c_void_p * max(1, len(images)))()
        chunks = None
        try:
            for index, image in enumerate(images):
                bitmaps[index] = self._bitmap(ctx, index, image)
            chunks = mtmd.mtmd_input_chunks_init()
            encoded = text.encode("utf-8")
            inp = mtmd.mtmd_input_text(encoded, len(encoded), add_special, parse_special)
            rc = mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(inp), bitmaps, len(images))
            if rc != 0:
                raise EngineInputError("the images could not be prepared for this model")
            return _media_prompt(chunks)
        finally:
            if chunks is not None:
                mtmd.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                if bitmap:
                    mtmd.mtmd_bitmap_free(bitmap)

    def encode(self, segment: MediaSegment) -> np.ndarray:
        """Runs the vision encoder on one image: its embeddings, (length, n_embd) float32.
        Serialized with other encodes; never touches a llama context, so any thread may call it."""
        chunk = _chunk_ptr(segment)
        with self._encode_lock:
            ctx = self._live_ctx()
            if mtmd.mtmd_encode_chunk(ctx, chunk) != 0:
                raise EngineError("the vision encoder failed on an image")
            out = mtmd.mtmd_get_output_embd(ctx)
            flat = np.ctypeslib.as_array(out, shape=(segment.length * self._n_embd,))
            return flat.reshape(segment.length, self._n_embd).copy()

    # ---- engine thread ---------------------------------------------------------------------

    def decode_image(self, ctx, segment: MediaSegment, *, seq_id: int, n_past: int, n_batch: int,
                     embeddings: np.ndarray | None = None) -> None:
        """Decodes one image into sequence `seq_id`'s KV at positions n_past..n_past+length-1
        (the sequence must hold nothing at or after n_past). Encodes it first unless its
        `embeddings` (from `encode`) are given. Its own llama_decode calls (embeddings, not
        tokens; no logits), so the logits of any earlier decode are gone afterwards. Leaves the
        context's causal-attention setting as it found it. Engine thread only."""
        lctx = getattr(ctx, "ctx", ctx)
        mctx = self._live_ctx()
        chunk = _chunk_ptr(segment)
        if llama_cpp.llama_get_model(lctx) != self._model:
            raise EngineError("the vision projector belongs to another model")
        held = llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(lctx), seq_id)
        if held >= n_past:
            raise EngineError(f"sequence {seq_id} already holds position {held}, at or after the image's {n_past}")
        if self.non_causal:
            # llama.cpp aborts the process on a non-causal batch larger than a micro-batch.
            n_ubatch = llama_cpp.llama_n_ubatch(lctx)
            if segment.length > n_ubatch:
                raise EngineError(f"an image takes {segment.length} tokens, more than the micro-batch ({n_ubatch})")
            step = segment.length
        else:
            step = max(1, min(n_batch, llama_cpp.llama_n_batch(lctx)))
        if embeddings is None:
            embeddings = self.encode(segment)
        embd = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embd.shape != (segment.length, self._n_embd):
            raise EngineError("image embeddings of the wrong shape")
        causal = llama_cpp.llama_get_causal_attn(lctx)
        new_n_past = llama_cpp.llama_pos(0)
        try:
            rc = mtmd.mtmd_helper_decode_image_chunk(
                mctx, lctx, chunk, embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                n_past, seq_id, step, ctypes.byref(new_n_past), _NO_CALLBACK, None,
            )
        finally:
            # The helper switches to non-causal for the image and back to causal, whatever the
            # context had before: restore what it had.
            if llama_cpp.llama_get_causal_attn(lctx) != causal:
                llama_cpp.llama_set_causal_attn(lctx, causal)
        if rc != 0:
            raise EngineError(f"decoding an image failed ({rc})")

    # ---- helpers ---------------------------------------------------------------------------

    def _live_ctx(self) -> int:
        if self._ctx is None:
            raise EngineError("the vision projector was unloaded")
        return self._ctx

    def _bitmap(self, ctx: int, index: int, data: bytes) -> int:
        """Decodes one encoded image file into an mtmd bitmap with the id "<SHA-256 of the
        bytes>/<index>": mtmd passes it on to each image chunk the bitmap becomes."""
        if not data:
            raise EngineInputError(f"image {index} is empty")
        opt = mtmd.mtmd_helper_init_opt_default()
        opt.video_params.ffmpeg_bin_dir = _NO_FFMPEG_DIR
        buf = ctypes.cast(ctypes.c_char_p(data), ctypes.POINTER(ctypes.c_uint8))
        wrapper = mtmd.mtmd_helper_bitmap_init_from_buf_wrapper(ctx, buf, len(data), False, opt)
        bitmap, video = wrapper.bitmap, wrapper.video_ctx
        if video:  # unreachable without ffmpeg; never accept a video as an image
            mtmd.mtmd_helper_video_free(video)
        if bitmap and (video or mtmd.mtmd_bitmap_is_audio(bitmap)):
            mtmd.mtmd_bitmap_free(bitmap)
            bitmap = None
        if not bitmap:
            raise EngineInputError(f"image {index} could not be decoded (expected a PNG, JPEG, GIF or BMP file)")
        mtmd.mtmd_bitmap_set_id(bitmap, f"{hashlib.sha256(data).hexdigest()}/{index}".encode())
        return bitmap


def _media_prompt(chunks: int) -> MediaPrompt:
    """Tokens and owned image segments out of mtmd's chunk list (which the caller frees)."""
    tokens: list[int] = []
    segments: list[MediaSegment] = []
    # Tiling models (LLaVA-UHD, MiniCPM-V, ...) make several image chunks of one image: number
    # them within each image, so equal images get equal ids however often they appear.
    seen: dict[bytes, int] = {}  # bitmap id -> image chunks of it so far
    try:
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            kind = mtmd.mtmd_input_chunk_get_type(chunk)
            if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t(0)
                ids = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                tokens.extend(ids[: n.value])
                continue
            if kind != mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                raise EngineError("the multimodal prompt holds a non-image media chunk")
            length = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            if mtmd.mtmd_input_chunk_get_n_pos(chunk) != length:
                raise EngineError("an image takes a different number of positions than tokens")
            image_id = mtmd.mtmd_input_chunk_get_id(chunk) or b""
            nth = seen.get(image_id, 0)
            seen[image_id] = nth + 1
            owned = mtmd.mtmd_input_chunk_copy(chunk)
            if not owned:
                raise EngineError("cannot copy an image chunk")
            placeholder = _placeholder(image_id.partition(b"/")[0], nth)
            segments.append(MediaSegment(start=len(tokens), length=length, placeholder=placeholder,
                                         chunk=_OwnedChunk(owned)))
            tokens.extend([placeholder] * length)
    except BaseException:
        for segment in segments:
            segment.chunk.release()
        raise
    return MediaPrompt(tokens=tokens, segments=tuple(segments))


def _placeholder(image_hash: bytes, nth: int) -> int:
    """A negative id for the nth image chunk of the image whose SHA-256 (hex) is `image_hash`:
    equal for equal images, and (but for a 2**-31 chance) different for different ones."""
    digest = hashlib.sha256(image_hash + b"#" + str(nth).encode()).digest()
    return -2 - int.from_bytes(digest[:8], "little") % _PLACEHOLDER_RANGE


def _chunk_ptr(segment: MediaSegment) -> int:
    ptr = segment.chunk.ptr
    if ptr is None:
        raise EngineError("the image was released before it was decoded")
    return ptr


def _reason(errors: list[str], path: Path) -> str:
    """The most specific error mtmd logged while loading, as one line: the innermost part of its
    "function: function: reason" text. One that just names the file says nothing more."""
    for text in errors:
        lines = text.strip().splitlines()
        reason = re.split(r"\w+: ", lines[0])[-1].strip() if lines else ""
        if reason and str(path) not in reason:
            return reason
    return "not a valid multimodal projector (mmproj) GGUF file"
