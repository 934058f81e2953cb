"""Start a real local LLM server (llama.cpp via xllamacpp) for tests and benchmarks.

    with LocalLlmServer() as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="none")
        client.chat.completions.create(model=srv.model, ...)

The server runs in a separate venv (made by scripts/setup-llm) because xllamacpp
is not a dependency of the integration; this module only needs the stdlib.
"""

from __future__ import annotations

import atexit
import collections
import functools
import json
import os
from pathlib import Path
import queue
import signal
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import IO, Self
import urllib.request
import weakref

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUP_SCRIPT = REPO_ROOT / "scripts" / "setup-llm"
SERVER_MAIN = Path(__file__).resolve().parent / "llm_server_main.py"

READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0
STDERR_TAIL_LINES = 60  # how much of the server's log to show when it fails


@functools.cache
def ensure_llm() -> tuple[Path, Path]:
    """Run scripts/setup-llm and return (python of the LLM venv, GGUF model path).

    The script's output is streamed to our stderr so a first-time install
    (~20 s) does not look like a hang. Cached: the script runs once per process.
    """
    proc = subprocess.Popen([str(SETUP_SCRIPT)], stdout=subprocess.PIPE, stderr=None, text=True)
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


# Safety net for start() without stop(): stop leftovers when the interpreter exits.
# (If this process is killed outright, the server notices its parent is gone.)
_LIVE_SERVERS: weakref.WeakSet[LocalLlmServer] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE_SERVERS):
        server.stop()


def _pump_lines(stream: IO[str], sink: queue.Queue[str] | collections.deque[str]) -> None:
    """Drain a child's pipe in a thread: an unread pipe would fill up and block the child."""
    for line in stream:
        if isinstance(sink, queue.Queue):
            sink.put(line)
        else:
            sink.append(line)


class LocalLlmServer:
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
    ) -> None:
        self.ctx = ctx
        self.threads = threads
        self.port = port
        self.ready_timeout = ready_timeout
        self._python = python
        self._model_path = model
        self._proc: subprocess.Popen[str] | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._pumps: list[threading.Thread] = []
        self.url = ""  # e.g. http://127.0.0.1:40123
        self.model = ""  # model id as reported by /v1/models

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL (what the openai client and Majordome expect)."""
        return f"{self.url}/v1"

    @property
    def pid(self) -> int | None:
        """Process id of the server, or None when not running."""
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Spawn the server and block until it is ready; never leaves it running on failure."""
        if self._proc is not None:
            raise RuntimeError("server already started")
        if self._python is None or self._model_path is None:
            self._python, self._model_path = ensure_llm()
        cmd = [
            str(self._python),
            str(SERVER_MAIN),
            "--model", str(self._model_path),
            "--port", str(self.port),
            "--ctx", str(self.ctx),
            "--threads", str(self.threads),
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # own process group: killpg reaches only the server
        )
        _LIVE_SERVERS.add(self)
        try:
            self.url = self._wait_ready()
            self.model = self._fetch_model_id()
        except BaseException:  # includes KeyboardInterrupt during the wait
            self.stop()
            raise

    def _wait_ready(self) -> str:
        """Return the server URL from its READY line, or raise with its stderr tail."""
        assert self._proc is not None
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        stdout_lines: queue.Queue[str] = queue.Queue()
        self._pumps = [
            threading.Thread(target=_pump_lines, args=(stream, sink), daemon=True)
            for stream, sink in (
                (self._proc.stdout, stdout_lines),
                (self._proc.stderr, self._stderr_tail),
            )
        ]
        for pump in self._pumps:
            pump.start()
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            try:
                line = stdout_lines.get(timeout=0.2)
            except queue.Empty:
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"LLM server exited with code {self._proc.returncode} before READY"
                        + self._stderr_text()
                    ) from None
                continue
            if line.startswith("READY "):
                return line.split(maxsplit=1)[1].strip()
        raise TimeoutError(
            f"LLM server not ready after {self.ready_timeout:.0f} s" + self._stderr_text()
        )

    def _stderr_text(self) -> str:
        time.sleep(0.1)  # let the pump thread catch the child's last words
        return "\n--- server stderr (tail) ---\n" + "".join(self._stderr_tail)

    def _fetch_model_id(self) -> str:
        with urllib.request.urlopen(f"{self.base_url}/models", timeout=10) as resp:
            data = json.load(resp)
        return str(data["data"][0]["id"])

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after STOP_GRACE_S; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, None)):
            try:
                os.killpg(proc.pid, sig)  # pgid == pid thanks to start_new_session
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        proc.wait()  # reap it even if the group was already gone
        _LIVE_SERVERS.discard(self)
        # The pipes are at EOF now; closing them before the pumps finish reading
        # would race with their reads.
        for pump in self._pumps:
            pump.join(timeout=2)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
