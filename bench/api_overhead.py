"""CPU the API layers spend per streamed token, without a model (issue 16).

    .venv/bin/python bench/api_overhead.py [--tokens 1000] [--delay 0.003] [--profile]

The app over the fake engine in a real uvicorn (uvloop, httptools, as `homeport serve` runs it);
a client in another process streams one `/v1/completions` reply. `--delay` spaces the tokens as a
model would (one per event-loop wake-up, the case that costs: at 0 they arrive faster than the
client reads and share socket writes). Prints the server's CPU per token (`time.process_time`, so
a busy machine slows it but does not inflate it), and with `--profile` the functions that take it.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time

import uvicorn

sys.path.insert(0, os.path.dirname(__file__))
from serving import free_port

from homeport.app import create_app
from homeport.engines.fake import FakeEngine
from homeport.settings import Settings

CLIENT = r"""
import sys, httpx
port, tokens = sys.argv[1], int(sys.argv[2])
for n in (20, tokens):  # a warm-up stream, then the measured one
    payload = {"prompt": "hi", "max_tokens": n, "stream": True}
    with httpx.Client(timeout=600) as http, http.stream("POST", f"http://127.0.0.1:{port}/v1/completions",
                                                        json=payload) as response:
        chunks = sum(line.startswith("data: {") for line in response.iter_lines())
    print(chunks, flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=0.003, help="seconds between the fake engine's tokens")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    port = free_port()
    engine = FakeEngine(script="word " * (args.tokens // 5 + 10), context_length=args.tokens + 1000,
                        step_delay=args.delay)
    app = create_app(Settings(user_data_dir=tempfile.mkdtemp()), engine)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False,
                                           loop="uvloop", http="httptools"))
    cpu: dict[str, float] = {}

    def drive() -> None:
        while not server.started:
            time.sleep(0.05)
        client = subprocess.Popen([sys.executable, "-c", CLIENT, str(port), str(args.tokens)],
                                  stdout=subprocess.PIPE, text=True)
        client.stdout.readline()  # the warm-up stream is done
        cpu["start"] = time.process_time()
        cpu["chunks"] = int(client.stdout.readline())
        cpu["end"] = time.process_time()
        client.wait()
        server.should_exit = True

    threading.Thread(target=drive, daemon=True).start()
    profile = cProfile.Profile() if args.profile else None
    if profile is not None:
        profile.enable()
    server.run()
    if profile is not None:
        profile.disable()
    per_token = (cpu["end"] - cpu["start"]) / cpu["chunks"] * 1000
    print(f"{cpu['chunks']} chunks, one every {args.delay * 1000:g} ms: server CPU {per_token:.3f} ms per token")
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
