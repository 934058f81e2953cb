"""The real wyoming-satellite 1.0.0 on 127.0.0.1, with a fake mic, wake word and speaker.

    with WyomingSatellite(tmp_path, spoken_command(piper, "turn on the kitchen light")) as sat:
        ...  # add a `wyoming` config entry for sat.port to Home Assistant
        await sat.async_wait_armed()  # Home Assistant connected, RunSatellite received
        sat.trigger()  # "wake word": it streams the speech, then silence, to HA
        await sat.async_wait_played(1)  # HA's spoken answer went to the speaker
        pcm = sat.speaker_audio()  # 22.05 kHz s16le mono

The satellite runs from its own venv (scripts/setup-voice; `ensure_voice()
.satellite_python`, None when the install failed: then `start()` raises
SatelliteUnavailable). Its commands are small stdlib scripts run by that venv's
interpreter: satellite_mic.py (real-time 16 kHz PCM: silence, plus the speech each
time streaming starts), satellite_wake.py (one detection per `trigger()`), and
`sh -c 'cat >> speaker.raw; echo >> played'` for the sound (one line in `played` per
answer, once all of it is in speaker.raw). With a local wake command the satellite
asks Home Assistant for a pipeline from speech-to-text to text-to-speech (without
one, HA would have to provide a wake-word engine).

Everything happens under `workdir`; the process group dies with the thread that
started it (Linux parent-death signal), with `stop()`, or at interpreter exit.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Callable
import contextlib
import json
from pathlib import Path
import re
import shlex
import socket
import threading
import time
from typing import IO

from devtools.child_process import ChildProcess, ChildServer, python_module
from devtools.ports import free_port
from devtools.voice_servers import STT_RATE, VoicePaths, ensure_voice, wav_bytes

HOST = "127.0.0.1"
SPEAKER_RATE = 22050  # what the satellite tells Home Assistant it plays
READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0
ARMED_MARKER = "Waiting for wake word"  # logged after RunSatellite and after each transcript

HERE = Path(__file__).resolve().parent
MIC_SCRIPT = HERE / "satellite_mic.py"
WAKE_SCRIPT = HERE / "satellite_wake.py"

_TRANSCRIPT = re.compile(r"Event\(type='transcript', data=(\{.*\}), payload=")
_SYNTHESIZE = re.compile(r"Event\(type='synthesize', data=(\{.*\}), payload=")


class SatelliteUnavailable(RuntimeError):
    """wyoming-satellite is not installed (scripts/setup-voice could not install it)."""


def _describe(port: int, timeout: float) -> dict[str, object]:
    """Send a Wyoming Describe with a blocking socket; return the Info data.

    Blocking on purpose: start() may run in a thread with an idle event loop set
    (a pytest-asyncio fixture), where asyncio.run would replace that loop.
    """
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(b'{"type": "describe"}\n')
        stream = sock.makefile("rb")
        while True:
            line = stream.readline()
            if not line:
                raise ConnectionError("the satellite closed the connection")
            header = json.loads(line)
            data: dict[str, object] = header.get("data") or {}
            if length := header.get("data_length"):
                data = {**data, **json.loads(stream.read(length))}
            if length := header.get("payload_length"):
                stream.read(length)
            if header.get("type") == "info":
                return data


class WyomingSatellite(ChildServer):
    """wyoming-satellite as a child process group, as a context manager."""

    def __init__(
        self,
        workdir: Path | str,
        wav_pcm16k: bytes,
        *,
        name: str = "Test Sat",
        ready_timeout: float = READY_TIMEOUT_S,
        paths: VoicePaths | None = None,
    ) -> None:
        """Prepare; `wav_pcm16k` is what the mic says after a trigger (16 kHz s16le mono)."""
        self.workdir = Path(workdir)
        self.name = name
        self.ready_timeout = ready_timeout
        self._paths = paths
        self._speech = wav_pcm16k
        self.host = HOST
        self.port = 0
        self.ready_s = 0.0  # spawn -> Describe answered
        self._child = ChildProcess("wyoming_satellite", stop_grace=STOP_GRACE_S)
        self._lines: list[str] = []
        self._log: IO[str] | None = None  # log_file while running
        self._lock = threading.Lock()
        self.speech_file = self.workdir / "speech.wav"
        self.wake_file = self.workdir / "wake"  # satellite_wake.py: a detection
        self.play_file = self.workdir / "play"  # satellite_mic.py: say the speech
        self.speaker_file = self.workdir / "speaker.raw"
        self.played_file = self.workdir / "played"  # a line per response played
        self.log_file = self.workdir / "satellite.log"

    # --- process --------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """E.g. tcp://127.0.0.1:40123."""
        return f"tcp://{self.host}:{self.port}"

    def _python(self) -> Path:
        paths = self._paths or ensure_voice()
        if paths.satellite_python is None or not paths.satellite_python.exists():
            raise SatelliteUnavailable(
                "wyoming-satellite is not installed: scripts/setup-voice could not install "
                "wyoming-satellite==1.0.0 (see its warnings)"
            )
        return paths.satellite_python

    def command(self, python: Path) -> list[str]:
        """The satellite's command line (after the interpreter and bootstrap)."""
        py = str(python)
        speaker = shlex.quote(str(self.speaker_file))
        played = shlex.quote(str(self.played_file))
        # The mic and wake scripts die with the satellite (parent-death signal, as
        # the satellite with us); `cat` ends at EOF.
        return [
            "wyoming_satellite",
            "--name", self.name,
            "--uri", self.uri,
            "--no-zeroconf",
            "--mic-command", shlex.join([py, str(MIC_SCRIPT), str(self.speech_file), str(self.play_file)]),
            "--mic-command-rate", str(STT_RATE),
            "--mic-command-width", "2",
            "--mic-command-channels", "1",
            "--wake-command", shlex.join([py, str(WAKE_SCRIPT), str(self.wake_file)]),
            # The satellite starts this per response and closes its stdin after
            # AudioStop: `cat` then ends and the line in `played` says it is all there.
            "--snd-command", shlex.join(["sh", "-c", f"cat >> {speaker}; echo >> {played}"]),
            "--snd-command-rate", str(SPEAKER_RATE),
            "--snd-command-width", "2",
            "--snd-command-channels", "1",
            "--streaming-start-command", shlex.join(["touch", str(self.play_file)]),
            "--debug",
        ]  # fmt: skip

    def start(self) -> None:
        """Spawn and wait until it answers Describe; never leaves it running on failure."""
        if self.pid is not None:
            raise RuntimeError("satellite already started")
        python = self._python()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for path in (self.wake_file, self.play_file, self.speaker_file, self.played_file):
            path.unlink(missing_ok=True)
        self._write_speech(self._speech)
        self.port = free_port()
        with self._lock:
            self._lines.clear()
        started = time.monotonic()
        self._log = self.log_file.open("a", encoding="utf-8")
        try:
            self._child.start(
                python_module(python, *self.command(python)),
                cwd=self.workdir,
                on_line=self._on_line,
            )
            self._child.wait_ready(
                self._probe, self.ready_timeout, retry_on=(OSError, ValueError, RuntimeError)
            )
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.monotonic() - started

    def _on_line(self, line: str) -> None:
        """Keep the whole log in memory and in log_file (runs in the pump thread)."""
        with self._lock:
            self._lines.append(line)
            if self._log is not None:
                self._log.write(line)
                self._log.flush()

    def _probe(self) -> dict[str, object]:
        """The satellite's Info once it lists a satellite (readiness probe)."""
        info = _describe(self.port, timeout=2.0)
        if not info.get("satellite"):
            raise RuntimeError(f"Info lists no satellite: {info}")
        return info

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after STOP_GRACE_S; idempotent."""
        self._child.stop()  # the satellite's commands are in its group too
        with self._lock:
            log, self._log = self._log, None
        if log is not None:
            log.close()

    # --- driving it -----------------------------------------------------------------

    def _write_speech(self, pcm16k: bytes) -> None:
        tmp = self.speech_file.with_suffix(".tmp")
        tmp.write_bytes(wav_bytes(pcm16k, STT_RATE))
        tmp.replace(self.speech_file)  # the mic never reads half a file

    def trigger(self, wav_pcm16k: bytes | None = None) -> None:
        """Say the wake word; the mic then says `wav_pcm16k` (default: the one given)."""
        if wav_pcm16k is not None:
            self._write_speech(wav_pcm16k)
        self.wake_file.touch()

    def speaker_audio(self) -> bytes:
        """Everything the speaker got so far: raw 22.05 kHz s16le mono."""
        try:
            return self.speaker_file.read_bytes()
        except FileNotFoundError:
            return b""

    @property
    def played(self) -> int:
        """How many responses were played to the end (the speaker command ended)."""
        try:
            return len(self.played_file.read_text().splitlines())
        except FileNotFoundError:
            return 0

    # --- its log --------------------------------------------------------------------

    def log(self) -> str:
        """The satellite's whole log so far (its commands' stderr included)."""
        with self._lock:
            return "".join(self._lines)

    def log_count(self, marker: str) -> int:
        """Lines of the log that contain `marker`."""
        with self._lock:
            return sum(marker in line for line in self._lines)

    def _events(self, pattern: re.Pattern[str]) -> list[str]:
        texts = []
        for line in self.log().splitlines():
            if match := pattern.search(line):
                with contextlib.suppress(ValueError, SyntaxError):
                    texts.append(str(ast.literal_eval(match.group(1)).get("text", "")))
        return texts

    def transcripts(self) -> list[str]:
        """What Home Assistant told the satellite it heard, in order."""
        return self._events(_TRANSCRIPT)

    def spoken_texts(self) -> list[str]:
        """The answers Home Assistant told the satellite it would speak, in order."""
        return self._events(_SYNTHESIZE)

    async def async_wait(self, condition: Callable[[], bool], what: str, wait_s: float) -> None:
        """Poll `condition` until true; TimeoutError with the log tail after `wait_s`."""
        try:
            async with asyncio.timeout(wait_s):
                while not condition():
                    self._check_alive(what)
                    await asyncio.sleep(0.05)
        except TimeoutError:
            message = f"timed out after {wait_s:.0f} s waiting for {what}"
            raise TimeoutError(message + self.stderr_tail()) from None

    def _check_alive(self, what: str) -> None:
        if not self._child.running:
            raise RuntimeError(f"the satellite died waiting for {what}" + self.stderr_tail())

    async def async_wait_armed(self, count: int = 1, wait_s: float = 15.0) -> None:
        """Wait until it logged "Waiting for wake word" `count` times in all.

        The first time means Home Assistant connected and sent RunSatellite; then
        once per transcript.
        """
        await self.async_wait(
            lambda: self.log_count(ARMED_MARKER) >= count, f"{ARMED_MARKER!r} x{count}", wait_s
        )

    async def async_wait_played(self, count: int = 1, wait_s: float = 30.0) -> None:
        """Wait until `count` responses in all were played to the end."""
        await self.async_wait(lambda: self.played >= count, f"{count} response(s) played", wait_s)


__all__ = ["SPEAKER_RATE", "SatelliteUnavailable", "WyomingSatellite"]
