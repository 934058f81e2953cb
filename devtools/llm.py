"""Start a real local LLM server (llama.cpp via xllamacpp) for tests and benchmarks.

    with LocalLlmServer() as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="none")
        client.chat.completions.create(model=srv.model, ...)

`LocalLlmServer(model_name="1.5b")` serves the embedded model's 1.5B sibling (the main
model of the cascade, 0.5B being the fast one); `MODEL_NAMES` lists what setup-llm knows.
The server runs in a separate venv (made by scripts/setup-llm) because xllamacpp
is not a dependency of the integration; this module only needs the stdlib.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
import subprocess
import sys
import urllib.request

from devtools.child_process import ChildProcess, ChildServer

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUP_SCRIPT = REPO_ROOT / "scripts" / "setup-llm"
SERVER_MAIN = Path(__file__).resolve().parent / "llm_server_main.py"

MODEL_NAMES = ("0.5b", "1.5b")  # scripts/setup-llm's models; 0.5b is the embedded one
DEFAULT_MODEL_NAME = "0.5b"
READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0


@functools.cache
def ensure_llm(model_name: str = DEFAULT_MODEL_NAME) -> tuple[Path, Path]:
    """Run scripts/setup-llm for a model; return (python of the LLM venv, GGUF model path).

    The script's output is streamed to our stderr so a first-time install
    (~20 s; ~45 s for 1.5b) does not look like a hang. Cached: the script runs once
    per process and model.
    """
    if model_name not in MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r} (known: {', '.join(MODEL_NAMES)})")
    proc = subprocess.Popen(
        [str(SETUP_SCRIPT), model_name], stdout=subprocess.PIPE, stderr=None, text=True
    )
    assert proc.stdout is not None
    last_line = ""
    for line in proc.stdout:
        sys.stderr.write(line)
        if line.strip():
            last_line = line.strip()
    if proc.wait() != 0:
        raise RuntimeError(f"{SETUP_SCRIPT} failed with exit code {proc.returncode}")
    model = Path(last_line)
    if not model.is_file():
        raise RuntimeError(f"{SETUP_SCRIPT} did not print a model path (got {last_line!r})")
    # Layout fixed by setup-llm: CACHE/models/<model>.gguf and CACHE/llm-venv.
    python = model.parent.parent / "llm-venv" / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"LLM venv python missing: {python}")
    return python, model


class LocalLlmServer(ChildServer):
    """A llama.cpp server child process, bound to 127.0.0.1, as a context manager.

    The child gets its own process group so that stopping it also stops anything
    it spawned; it also exits by itself if this process dies (see llm_server_main).
    """

    def __init__(
        self,
        *,
        ctx: int = 4096,
        threads: int = 2,
        port: int = 0,
        ready_timeout: float = READY_TIMEOUT_S,
        python: Path | None = None,
        model: Path | None = None,
        model_name: str = DEFAULT_MODEL_NAME,
    ) -> None:
        self.ctx = ctx
        self.model_name = model_name
        self.threads = threads
        self.port = port
        self.ready_timeout = ready_timeout
        self._python = python
        self._model_path = model
        self._child = ChildProcess("LLM server", stop_grace=STOP_GRACE_S)
        self.url = ""  # e.g. http://127.0.0.1:40123
        self.model = ""  # model id as reported by /v1/models

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL (what the openai client and Majordome expect)."""
        return f"{self.url}/v1"

    def start(self) -> None:
        """Spawn the server and block until it is ready; never leaves it running on failure."""
        if self.pid is not None:
            raise RuntimeError("server already started")
        if self._python is None or self._model_path is None:
            self._python, self._model_path = ensure_llm(self.model_name)
        cmd = [
            str(self._python),
            str(SERVER_MAIN),
            "--model", str(self._model_path),
            "--port", str(self.port),
            "--ctx", str(self.ctx),
            "--threads", str(self.threads),
        ]  # fmt: skip
        # Its stdout carries only the READY line; its log goes to stderr.
        urls: list[str] = []

        def on_stdout(line: str) -> None:
            if line.startswith("READY "):
                urls.append(line.split(maxsplit=1)[1].strip())

        self._child.start(cmd, on_stdout=on_stdout)
        try:
            self.url = self._child.wait_ready(lambda: urls[0] if urls else None, self.ready_timeout)
            self.model = self._fetch_model_id()
        except BaseException:  # includes KeyboardInterrupt during the wait
            self.stop()
            raise

    def _fetch_model_id(self) -> str:
        with urllib.request.urlopen(f"{self.base_url}/models", timeout=10) as resp:
            data = json.load(resp)
        return str(data["data"][0]["id"])
