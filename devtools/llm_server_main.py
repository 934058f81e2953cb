"""Run llama.cpp's OpenAI-compatible server (xllamacpp) on loopback until signalled.

Run it with the LLM venv's python (see scripts/setup-llm), not the HA venv:

    python devtools/llm_server_main.py --model PATH [--port 0] [--ctx 4096] [--threads 2]

Prints ``READY http://127.0.0.1:PORT`` on stdout once /health answers OK (the
parent process waits for that line), then serves until SIGTERM or SIGINT.
Logs from llama.cpp go to stderr.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from types import FrameType
import urllib.error
import urllib.request

import xllamacpp

HOST = "127.0.0.1"
HEALTH_TIMEOUT_S = 60.0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="path to the GGUF file")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--ctx", type=int, default=4096, help="context size (tokens)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument(
        "--seed", type=int, default=42, help="sampling seed of every request (fixed: repeatable)"
    )
    return parser.parse_args(argv)


def _params(args: argparse.Namespace) -> xllamacpp.CommonParams:
    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostname = HOST  # never listen beyond loopback
    params.port = args.port
    params.n_ctx = args.ctx
    # One slot: the whole context serves one conversation, and its prompt cache
    # (cache_prompt) is what makes multi-turn latency acceptable on a CPU.
    params.n_parallel = 1
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    # The GGUF's Jinja chat template is what renders the `tools` list.
    params.use_jinja = True
    params.cache_prompt = True
    # llama.cpp's default seed is random per request: the same prompt could be answered
    # differently from one run to the next, even at a low temperature.
    params.sampling.seed = args.seed
    return params


def _wait_healthy(base_url: str) -> None:
    """Poll /health: the server may still be loading after the constructor returns."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base_url}/health not OK after {HEALTH_TIMEOUT_S:.0f} s")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    """Start the server, announce it, and block until a stop signal arrives."""
    args = _parse_args(argv)
    # The pid our parent had when it started us (devtools.child_process sets it):
    # if it died before now, os.getppid() is already our new parent's.
    parent = int(os.environ.get("MAJORDOME_PARENT_PID") or os.getppid())
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    server = xllamacpp.Server(_params(args))  # blocks while the model loads
    # Installed only now: the Server constructor sets llama.cpp's own SIGINT/SIGTERM
    # handlers, which stop its HTTP loop but leave this process waiting forever.
    # A signal during the load therefore ends the HTTP loop early, /health never
    # answers and _wait_healthy() exits with an error: still a clean exit.
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # listening_address is e.g. "http://127.0.0.1:40123" (the real port when --port 0).
    base_url = str(server.listening_address).rstrip("/")
    if not base_url.startswith("http"):
        base_url = f"http://{base_url}"
    _wait_healthy(base_url)
    print(f"READY {base_url}", flush=True)

    # wait() with a timeout so the main thread returns to the interpreter
    # regularly (Python signal handlers run promptly) and can notice that its
    # parent died without stopping it: re-parenting changes our ppid.
    while not stop.wait(0.5):
        if os.getppid() != parent:
            print("llm_server_main: parent gone", file=sys.stderr, flush=True)
            break
    print("llm_server_main: stopping", file=sys.stderr, flush=True)
    del server  # the destructor stops llama.cpp's HTTP loop and frees the model
    return 0


if __name__ == "__main__":
    sys.exit(main())
