"""A server child process on 127.0.0.1 that this process owns (tests and benchmarks).

    child = ChildProcess("wyoming_piper", stop_grace=5.0)
    child.start(python_module(python, "wyoming_piper", "--uri", uri))
    child.wait_ready(probe, timeout=60.0, retry_on=(OSError,))
    ...
    child.stop()

The child gets its own process group, so that stopping it also stops anything it
spawned; its output is drained by a thread into a bounded tail that error messages
show. ``python_module`` makes it die with the thread that started it (Linux
parent-death signal); a child started otherwise must watch its parent itself (see
llm_server_main). Children still running when the interpreter exits are stopped.
Stdlib only.
"""

from __future__ import annotations

import atexit
import collections
from collections.abc import Callable, Mapping, Sequence
import contextlib
import os
from pathlib import Path
import signal
import subprocess
import threading
import time
from types import TracebackType
from typing import IO, Self
import weakref

PARENT_PID_ENV = "MAJORDOME_PARENT_PID"  # the bootstrap checks it against its ppid
TAIL_LINES = 60  # how much of the child's log an error message shows
PUMP_JOIN_S = 2.0

# Runs in the child's own interpreter before its module: asks Linux to SIGTERM it
# when the thread that started it dies (no preexec_fn, which is unsafe in a threaded
# parent such as Home Assistant's tests), then runs the module as `python -m` would.
_BOOTSTRAP = """\
import ctypes, os, runpy, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(os.environ["MAJORDOME_PARENT_PID"]):
        sys.exit(f"parent died before {sys.argv[1]} started")
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def python_module(python: Path | str, module: str, *args: str) -> list[str]:
    """`python -m module args`, as a child that dies with the thread starting it (Linux)."""
    return [str(python), "-c", _BOOTSTRAP, module, *args]


# Safety net for start() without stop(): stop leftovers when the interpreter exits.
# (If this process is killed outright, the parent-death signal or watchdog acts.)
_LIVE: weakref.WeakSet[ChildProcess] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for child in list(_LIVE):
        child.stop()


def _pump(stream: IO[str], sinks: Sequence[Callable[[str], object]]) -> None:
    """Drain a child's pipe in a thread: an unread pipe would fill up and block the child."""
    for line in stream:
        for sink in sinks:
            sink(line)


class ChildProcess:
    """One child process group: spawn, wait until ready, stop; restartable after stop()."""

    def __init__(self, name: str, *, stop_grace: float, tail_lines: int = TAIL_LINES) -> None:
        """`name` labels error messages; stop() waits `stop_grace` s before SIGKILL."""
        self.name = name
        self.stop_grace = stop_grace
        self._proc: subprocess.Popen[str] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._pumps: list[threading.Thread] = []

    @property
    def pid(self) -> int | None:
        """Process id (and process group id) of the child, or None when not started."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """Started, not stopped, and not exited."""
        return self._proc is not None and self._proc.poll() is None

    def start(
        self,
        cmd: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        on_line: Callable[[str], object] | None = None,
        on_stdout: Callable[[str], object] | None = None,
    ) -> None:
        """Spawn `cmd` with stdin closed and its output pumped by daemon threads.

        Its log (stderr, and stdout unless `on_stdout` is given) goes to the tail and
        to `on_line`; with `on_stdout`, stdout lines go there only. Both run in a pump
        thread. `env` (default: ours) gets PARENT_PID_ENV for the bootstrap.
        """
        if self._proc is not None:
            raise RuntimeError(f"{self.name} already started")
        self._tail.clear()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if on_stdout is None else subprocess.PIPE,
            text=True,
            env={**(os.environ if env is None else env), PARENT_PID_ENV: str(os.getpid())},
            cwd=cwd,
            start_new_session=True,  # own process group: killpg reaches it and its children
        )
        _LIVE.add(self)
        log_sinks: list[Callable[[str], object]] = [self._tail.append]
        if on_line is not None:
            log_sinks.append(on_line)
        assert self._proc.stdout is not None
        streams: list[tuple[IO[str], list[Callable[[str], object]]]]
        if on_stdout is None:
            streams = [(self._proc.stdout, log_sinks)]
        else:
            assert self._proc.stderr is not None
            streams = [(self._proc.stdout, [on_stdout]), (self._proc.stderr, log_sinks)]
        self._pumps = [
            threading.Thread(target=_pump, args=stream_sinks, daemon=True)
            for stream_sinks in streams
        ]
        for pump in self._pumps:
            pump.start()

    def wait_ready[T](
        self,
        probe: Callable[[], T | None],
        timeout: float,
        *,
        retry_on: tuple[type[BaseException], ...] = (),
        interval: float = 0.1,
    ) -> T:
        """Call `probe` until it returns a value; raise with the tail if the child exits.

        None, or an exception in `retry_on` (the last one is quoted on timeout), means
        "not yet". TimeoutError after `timeout` s.
        """
        assert self._proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self._proc.returncode} before ready"
                    + self.tail()
                )
            try:
                result = probe()
            except retry_on as err:
                last_error = err
                result = None
            if result is not None:
                return result
            time.sleep(interval)
        last = f" (last: {last_error!r})" if last_error else ""
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s{last}" + self.tail())

    def wait(self, timeout: float) -> int:
        """Wait for the child to exit by itself; its exit code (TimeoutExpired after `timeout`)."""
        assert self._proc is not None, "start() first"
        return self._proc.wait(timeout)

    def tail(self) -> str:
        """The child's last log lines, formatted for an error message."""
        time.sleep(0.1)  # let the pump thread catch the child's last words
        return f"\n--- {self.name} log (tail) ---\n" + "".join(self._tail)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after the grace period; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig, grace in ((signal.SIGTERM, self.stop_grace), (signal.SIGKILL, None)):
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
        # Whatever it spawned and left in its group gets the same end; they would
        # otherwise keep the pipes open (and the pumps waiting).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        _LIVE.discard(self)
        # The pipes are at EOF now; closing them before the pumps finish reading
        # would race with their reads.
        for pump in self._pumps:
            pump.join(timeout=PUMP_JOIN_S)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


class ChildServer:
    """Base of a server class that runs one ChildProcess: pid, stop, `with` support."""

    _child: ChildProcess

    @property
    def pid(self) -> int | None:
        """Process id of the server, or None when not running."""
        return self._child.pid

    def start(self) -> None:
        """Spawn and wait until ready; never leaves it running on failure."""
        raise NotImplementedError

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after a grace period; idempotent."""
        self._child.stop()

    def stderr_tail(self) -> str:
        """The server's last log lines, formatted for an error message."""
        return self._child.tail()

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


__all__ = ["ChildProcess", "ChildServer", "python_module"]
