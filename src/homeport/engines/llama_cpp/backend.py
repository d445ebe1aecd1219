"""The llama.cpp text backend's declaration: its load arguments (one declaration per knob: the
`model/load` check, the start-up flag and Settings field, the default) and how it loads. Importing
this module does not import llama_cpp; `load` and `check` do."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from homeport.errors import InvalidRequestError, StartupError
from homeport.registry import Backend, Flag, LoadArg, arg_value, check_args_fit
from homeport.registry.gguf import is_embedding_gguf, is_projector

if TYPE_CHECKING:
    from homeport.engines.llama_cpp.engine import LlamaCppEngine, SpeculativeConfig
    from homeport.registry.library import ModelEntry
    from homeport.settings import Settings

CACHE_TYPES = ("fp16", "f16", "q8_0", "q4_0")
SPLIT_MODES = ("none", "layer", "row")
SPEC_TYPES = {"none": "none", "draft": "draft", "draft-simple": "draft", "ngram": "ngram", "ngram-simple": "ngram"}


def _tensor_split(value: str) -> tuple[float, ...]:
    try:
        shares = tuple(float(part) for part in value.split(","))
    except ValueError:
        shares = ()
    if not shares or any(share < 0 for share in shares) or sum(shares) <= 0:
        raise InvalidRequestError("tensor_split must be comma-separated non-negative shares, e.g. 60,40",
                                  param="args.tensor_split")
    return shares


LOAD_ARGS: tuple[LoadArg, ...] = (
    LoadArg("ctx_size", int, "context length in tokens per request (0 = the model's, at most 8192)", default=0,
            setting="ctx_size", flag=Flag(("--ctx-size",), "context length; 0 = auto", "N")),
    LoadArg("n_gpu_layers", int, "layers to offload to a GPU (-1 = all)", default=0, signed=True, minimum=-1,
            setting="n_gpu_layers",
            flag=Flag(("--n-gpu-layers", "--gpu-layers"), "layers to offload to the GPU; -1 = all", "N")),
    LoadArg("gpu_layers", int, "alias of n_gpu_layers", signed=True, alias_of="n_gpu_layers"),
    LoadArg("threads", int, "threads for decoding (0 = every core)", default=0, setting="threads",
            flag=Flag(("--threads",), "CPU threads; 0 = auto", "N")),
    LoadArg("threads_batch", int, "threads for prompt processing (0 = as threads)", default=0),
    LoadArg("batch_size", int, "prompt tokens decoded per step", default=512, minimum=1, setting="batch_size",
            flag=Flag(("--batch-size",), "prompt tokens per step (default 512)", "N")),
    LoadArg("ubatch_size", int, "tokens per compute pass", default=512, minimum=1, setting="ubatch_size",
            flag=Flag(("--ubatch-size",), "tokens per compute pass (default 512)", "N")),
    LoadArg("cache_type", str, "KV cache type: fp16, q8_0 or q4_0", default="fp16", choices=CACHE_TYPES,
            invalid="cache_type must be fp16, q8_0 or q4_0"),
    LoadArg("flash_attn", bool, "flash attention", default=None),
    LoadArg("rope_freq_base", float, "RoPE base frequency (0 = the model's)", default=0.0),
    LoadArg("parallel", int, "sequences decoded together", default=8, minimum=1, setting="parallel",
            flag=Flag(("--parallel",), "sequences decoded together (default 8)", "N")),
    LoadArg("no_mmap", bool, "read the whole model into memory instead of mapping it", default=False),
    LoadArg("mlock", bool, "lock the model in RAM", default=False),
    LoadArg("kv_unified", bool, "one KV cache shared by all sequences (default) or one stream each",
            default=True, setting="kv_unified",
            flag=Flag(("--kv-unified",), "one KV cache shared by all sequences (default; --no-kv-unified: one "
                      "stream each, output independent of history)", switch=True)),
    LoadArg("kv_size", int, "KV cache cells shared by all sequences of the unified cache (0 = one context's worth: "
            "ctx_size); when running requests outgrow it, the newest pauses and resumes",
            default=0, setting="kv_size",
            flag=Flag(("--kv-size",), "KV cache cells shared by the sequences (default 0: one context, "
                      "as llama-server's -c; ctx-size x parallel: every request its full context at once)", "N")),
    LoadArg("cache_ram", int, "host memory (MiB) for idle slots' cached prefixes, moved out of the unified KV "
            "cache when a request starts (there they would slow every decoded token); 0 = they stay in it",
            default=1024, setting="cache_ram",
            flag=Flag(("--cache-ram",), "MiB of host memory for idle slots' prompt caches, moved out of the KV "
                      "cache when a request starts (default 1024; 0: they stay in it)", "N")),
    LoadArg("spec_type", str, "speculative decoding: none, draft (with model_draft) or ngram (prompt lookup)",
            choices=tuple(SPEC_TYPES), setting="spec_type",
            flag=Flag(("--spec-type",), "speculative decoding: a draft model, or ngram (prompt lookup, no second "
                      "model)", choices=("none", "draft", "ngram"))),
    LoadArg("model_draft", str, "a smaller GGUF with the same vocabulary that drafts tokens (path or library name)",
            setting="model_draft",
            flag=Flag(("--model-draft",), "draft model for speculative decoding (GGUF, same vocabulary)", "NAME")),
    LoadArg("draft_max", int, "drafted tokens checked per step (default 4)", default=4, between=(1, 64),
            setting="draft_max",
            flag=Flag(("--draft-max",), "drafted tokens checked per step (default 4)", "N")),
    LoadArg("draft_min", int, "fewer drafted tokens than this are not checked", default=0),
    LoadArg("draft_p_min", float, "the draft model stops when its top token is less likely than this (0-1)",
            default=0.0, between=(0.0, 1.0), invalid="draft_p_min must be between 0 and 1"),
    LoadArg("gpu_layers_draft", int, "the draft model's layers to offload to a GPU (-1 = all)", signed=True,
            setting="n_gpu_layers"),
    LoadArg("spec_ngram_size_n", int, "prompt lookup: the longest n-gram matched (default 4)", default=4,
            between=(1, 64)),
    LoadArg("mmproj", str, "a vision projector GGUF (path, or file name under the model dir): the model takes images",
            setting="mmproj", flag=Flag(("--mmproj",), "vision projector GGUF: the model takes images", "FILE")),
    LoadArg("split_mode", str, "how layers spread over several GPUs: none, layer (default) or row", default="layer",
            choices=SPLIT_MODES, invalid="split_mode must be none, layer or row"),
    LoadArg("tensor_split", str, "each GPU's share of the model, comma-separated (e.g. 60,40)", default=(),
            parse=_tensor_split),
    LoadArg("no_kv_offload", bool, "keep the KV cache in system memory when layers are on a GPU", default=False),
    LoadArg("swa_full", bool, "sliding-window layers (Gemma 3) keep the whole context, so a cached prefix is reused; "
            "off: only the window per sequence (far less memory; a cached prefix then mostly re-reads)",
            default=True, setting="swa_full",
            flag=Flag(("--swa-full",), "full-size KV for sliding-window layers (default; --no-swa-full: only the "
                      "window, much less memory on Gemma 3, fewer prefix-cache hits)", switch=True)),
)


def detect(path: Path) -> bool:
    return path.suffix.lower() == ".gguf" and not is_projector(path) and not is_embedding_gguf(path)


def load(entry: ModelEntry, settings: Settings, args: dict[str, Any]) -> LlamaCppEngine:
    """Blocking (seconds). Raises StartupError when the model cannot load."""
    from homeport.engines.llama_cpp.engine import LlamaCppConfig, LlamaCppEngine

    check_args_fit(entry, BACKEND, args)

    def arg(name: str) -> Any:
        return arg_value(BACKEND, name, args, settings)

    speculative = speculative_config(settings, args)
    in_effect = {a.name: arg(a.name) for a in LOAD_ARGS if a.alias_of is None}
    in_effect["spec_type"] = speculative.kind if speculative else "none"
    in_effect["tensor_split"] = ",".join(f"{share:g}" for share in in_effect["tensor_split"])
    config = LlamaCppConfig(
        path=entry.path,
        model_id=entry.id,
        ctx_size=arg("ctx_size"),
        threads=arg("threads"),
        threads_batch=arg("threads_batch"),
        n_gpu_layers=arg("n_gpu_layers"),
        batch_size=arg("batch_size"),
        ubatch_size=arg("ubatch_size"),
        parallel=arg("parallel"),
        cache_type=arg("cache_type"),
        flash_attn=arg("flash_attn"),
        rope_freq_base=arg("rope_freq_base"),
        use_mmap=not arg("no_mmap"),
        use_mlock=arg("mlock"),
        kv_unified=arg("kv_unified"),
        kv_size=arg("kv_size"),
        cache_ram=arg("cache_ram"),
        speculative=speculative,
        mmproj=side_file(arg("mmproj"), settings, "vision projector"),
        split_mode=arg("split_mode"),
        tensor_split=arg("tensor_split"),
        offload_kqv=not arg("no_kv_offload"),
        swa_full=arg("swa_full"),
        verbose=settings.debug,
        load_args=tuple(in_effect.items()),
    )
    return LlamaCppEngine.load(config)


def check(entry: ModelEntry) -> None:
    """Reads the model's metadata only (fast): a corrupt or foreign file fails here."""
    from homeport.engines.llama_cpp.engine import check_gguf

    check_gguf(entry.path)


def speculative_config(settings: Settings, args: dict[str, Any]) -> SpeculativeConfig | None:
    """The speculative decoding the load arguments (over the settings) ask for, or None.
    Raises StartupError when the draft model cannot be found."""
    from homeport.engines.llama_cpp.engine import SpeculativeConfig

    def arg(name: str) -> Any:
        return arg_value(BACKEND, name, args, settings)

    draft_name = arg("model_draft")
    kind = SPEC_TYPES[args.get("spec_type") or settings.spec_type or ("draft" if draft_name else "none")]
    if kind == "none":
        return None
    common = {"draft_max": arg("draft_max"), "draft_min": arg("draft_min")}
    if kind == "ngram":
        return SpeculativeConfig(kind="ngram", ngram_size=arg("spec_ngram_size_n"), **common)
    if not draft_name:
        raise StartupError("speculative decoding with a draft model needs model_draft")
    return SpeculativeConfig(
        kind="draft", draft_path=_draft_path(draft_name, settings), draft_p_min=arg("draft_p_min"),
        draft_n_gpu_layers=arg("gpu_layers_draft"), **common,
    )


def side_file(name: str | None, settings: Settings, what: str) -> Path | None:
    """A file named by path, or by file name relative to the model dir (projectors are not
    models of their own, so the library does not list them)."""
    if not name:
        return None
    for path in (Path(name).expanduser(), settings.model_dir / name):
        if path.is_file():
            return path
    raise StartupError(f"{what} not found: {name} (looked for a file, and in {settings.model_dir})")


def _draft_path(name: str, settings: Settings) -> Path:
    from homeport.registry.library import ModelLibrary

    entry = ModelLibrary(settings.model_dir).find(name)
    if entry is not None and entry.format == "gguf":
        return entry.path
    return side_file(name, settings, "draft model")


BACKEND = Backend(
    name="llama.cpp",
    kind="text",
    format="gguf",
    detect=detect,
    load=load,
    check=check,
    load_args=LOAD_ARGS,
    capabilities=("text_generation", "vision", "lora", "fim", "next_token_distribution"),
    loaders=("llama.cpp", "llamacpp", "llama_cpp"),
    loader_label="llama.cpp",
    files="file",
)
