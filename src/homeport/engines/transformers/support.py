"""What the transformers engine honours and what it cannot do yet, without importing torch: the
services layer asks these before a request runs, so nothing is silently dropped."""

from __future__ import annotations

from homeport.engines.base import SamplingParams
from homeport.registry import LoadArg

DEFAULT_PARALLEL = 4

# No trust_remote_code: code shipped in a model folder is never run.
LOAD_ARGS: tuple[LoadArg, ...] = (
    LoadArg("ctx_size", int, "context length in tokens per request (0 = the model's, at most 8192)", default=0,
            setting="ctx_size"),
    LoadArg("threads", int, "torch CPU threads (0 = torch's default)", default=0, setting="threads"),
    LoadArg("parallel", int, "generations decoded together, one step each in turn (default 4)",
            default=DEFAULT_PARALLEL, minimum=1),
    LoadArg("dtype", str, "weights dtype: auto (float32 on CPU, the model's on CUDA), float32, bfloat16 or float16",
            default="auto"),
    LoadArg("device", str, "cpu, cuda or auto (cuda when torch sees a GPU)", default="auto"),
)
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("cpu", "cuda", "auto")

GRAMMAR_UNSUPPORTED = "grammar-constrained output is not supported by the transformers engine yet"


def unsupported_sampling(params: SamplingParams) -> list[str]:
    """The sampling parameters set to a non-neutral value that this engine cannot apply (it
    samples as if they were neutral). Grammars are refused separately, by `check_grammar`."""
    unsupported = []
    if params.dry_multiplier > 0.0:
        unsupported.append("dry_multiplier")
    if params.xtc_probability > 0.0:
        unsupported.append("xtc_probability")
    if params.top_n_sigma > 0.0:
        unsupported.append("top_n_sigma")
    if params.dynatemp_range > 0.0:
        unsupported.append("dynatemp_range")
    if params.mirostat_mode != 0:
        unsupported.append("mirostat_mode")
    return unsupported
