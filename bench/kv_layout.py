"""Raw llama.cpp decode steps, unified KV cache against one stream per sequence (issue 16).

    .venv/bin/python bench/kv_layout.py [--sequences 8] [--prompt 40] [--steps 96] [--rounds 3] [--idle 0]
        [--flash-attn auto|on|off]

No server: the packaged models through llama-cpp-python's low-level API, the same context shape as
`homeport serve` and llama-server `-np 8 -c 8192` (8 sequences, 1,024 cells each, or 8,192 shared).
Each sequence reads a prompt, then every step decodes one token of each; the layouts alternate
within each round so a busy spell of the machine hits both alike. Prints ms per step (best round).
Also measured: separate streams with each step's rows in a random sequence order (llama.cpp then
splits the step into one compute pass per run of consecutive sequence ids), and with `--idle N`
the unified cache while the other sequences (up to 8) hold N idle cells (a cached prefix).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_server import packaged_models

STEP = r"""
import random, sys, time
import llama_cpp
from llama_cpp._utils import suppress_stdout_stderr

path, unified = sys.argv[1], sys.argv[2] == "1"
nseq, prompt, steps, threads, idle, shuffled, flash = map(int, sys.argv[3:10])
llama_cpp.llama_backend_init()
with suppress_stdout_stderr(disable=False):
    model = llama_cpp.llama_model_load_from_file(path.encode(), llama_cpp.llama_model_default_params())
params = llama_cpp.llama_context_default_params()
params.n_ctx, params.n_seq_max, params.kv_unified = 1024 * 8, 8, unified
params.n_batch = params.n_ubatch = 512
params.n_threads = params.n_threads_batch = threads
params.no_perf = True
params.flash_attn_type = flash  # -1 auto (llama.cpp's default: on for the CPU), 0 off, 1 on
with suppress_stdout_stderr(disable=False):
    ctx = llama_cpp.llama_init_from_model(model, params)
batch = llama_cpp.llama_batch_init(512, 0, 1)

def put(i, token, pos, seq):
    batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, True
    batch.seq_id[i][0] = seq

def read(seq, n):
    for first in range(0, n, 512):
        for pos in range(first, min(n, first + 512)):
            put(pos - first, 100 + (pos * 7 + seq) % 1000, pos, seq)
        batch.n_tokens = min(n, first + 512) - first
        assert llama_cpp.llama_decode(ctx, batch) == 0

idlers = range(nseq, 8)
for seq in idlers:
    read(seq, idle // len(idlers))
for seq in range(nseq):
    read(seq, prompt)
order = list(range(nseq))
start = time.perf_counter()
for step in range(steps):
    if shuffled:
        random.shuffle(order)
    for i, seq in enumerate(order):
        put(i, 200 + (step + seq) % 500, prompt + step, seq)
    batch.n_tokens = nseq
    assert llama_cpp.llama_decode(ctx, batch) == 0
print((time.perf_counter() - start) / steps * 1000)
"""


FLASH = {"auto": -1, "off": 0, "on": 1}


def step_ms(path: str, unified: bool, args: argparse.Namespace, *, idle: int = 0, shuffled: bool = False) -> float:
    command = [sys.executable, "-c", STEP, path, "1" if unified else "0", str(args.sequences), str(args.prompt),
               str(args.steps), str(args.threads), str(idle), str(int(shuffled)), str(FLASH[args.flash_attn])]
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=8, help="sequences decoding together (at most 8)")
    parser.add_argument("--prompt", type=int, default=40, help="prompt tokens of each sequence")
    parser.add_argument("--steps", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--idle", type=int, default=0, help="cells held by the sequences that do not decode")
    parser.add_argument("--flash-attn", choices=FLASH, default="auto")
    args = parser.parse_args()
    if args.idle and args.sequences >= 8:
        parser.error("--idle needs --sequences below 8 (the others hold the idle cells)")
    idle = f" | unified, {args.idle} idle cells" if args.idle else ""
    print(f"| model | unified ms/step | one stream each | ratio | one stream each, rows out of order{idle} | "
          f"({args.sequences} sequences, {args.prompt}-token prompts, {args.steps} steps, best of {args.rounds}, "
          f"flash attention {args.flash_attn}) |")
    print("|---|---|---|---|---|" + ("---|" if idle else ""))
    for model in packaged_models():
        unified, split, shuffled, with_idle = [], [], [], []
        for _ in range(args.rounds):
            unified.append(step_ms(model.path, True, args))
            split.append(step_ms(model.path, False, args))
            shuffled.append(step_ms(model.path, False, args, shuffled=True))
            if args.idle:
                with_idle.append(step_ms(model.path, True, args, idle=args.idle))
        extra = f" | {min(with_idle):.1f} ({min(with_idle) / min(unified):.2f}x)" if idle else ""
        print(f"| {model.label} | {min(unified):.1f} | {min(split):.1f} | {min(unified) / min(split):.2f} | "
              f"{min(shuffled):.1f} ({min(shuffled) / min(split):.2f}x){extra} | |")


if __name__ == "__main__":
    main()
