"""Start real Wyoming voice servers (piper TTS, faster-whisper STT) for tests and benchmarks.

    with PiperServer() as tts, WhisperServer() as stt:
        pcm = spoken_command(tts, "turn on the kitchen light")  # 16 kHz s16le mono
        text = asyncio.run(async_transcribe(stt.host, stt.port, pcm))

Each server runs from its own venv (made by scripts/setup-voice; ~30 s the first
time) because their wyoming pins differ from Home Assistant's. Everything runs
offline on 127.0.0.1: the voice (en_US-joe-medium) and the whisper model (tiny.en)
come from PyPI packages. This module needs the stdlib, numpy and wyoming 1.5.4
(the client library Home Assistant 2025.4 pins).

``start()`` blocks; call it outside an event loop (a pytest fixture) or it runs its
probes in a helper thread. The server dies with the thread that started it (Linux
parent-death signal), so start it from a long-lived thread, not an executor job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
import concurrent.futures
from dataclasses import dataclass
import functools
import io
import json
import os
from pathlib import Path
import subprocess
import time
from typing import Any, ClassVar
import wave

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

from devtools.child_process import ChildProcess, ChildServer, python_module
from devtools.ports import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUP_SCRIPT = REPO_ROOT / "scripts" / "setup-voice"

HOST = "127.0.0.1"
VOICE = "en_US-joe-medium"
STT_RATE = 16000  # what whisper (and Home Assistant's pipeline) expects
READY_TIMEOUT_S = 60.0
IO_TIMEOUT_S = 30.0  # per read: a first (cold) request takes a few seconds
STOP_GRACE_S = 5.0
CHUNK_BYTES = 3200  # 100 ms of 16 kHz s16le mono per AudioChunk


@dataclass(frozen=True)
class VoicePaths:
    """What scripts/setup-voice installed (absolute paths)."""

    piper_python: Path
    piper_data: Path
    voice: str
    whisper_python: Path
    whisper_model: Path
    whisper_data: Path
    satellite_python: Path | None  # None when wyoming-satellite could not be installed


@functools.cache
def ensure_voice() -> VoicePaths:
    """Run scripts/setup-voice and return the installed paths.

    The script's progress goes straight to our stderr so a first install does not
    look like a hang; its last stdout line is JSON. Cached: runs once per process.
    """
    proc = subprocess.Popen([str(SETUP_SCRIPT)], stdout=subprocess.PIPE, stderr=None, text=True)
    assert proc.stdout is not None
    last_line = ""
    for line in proc.stdout:
        if line.strip():
            last_line = line.strip()
    if proc.wait() != 0:
        raise RuntimeError(f"{SETUP_SCRIPT} failed with exit code {proc.returncode}")
    try:
        data = json.loads(last_line)
    except json.JSONDecodeError as err:
        raise RuntimeError(f"{SETUP_SCRIPT} did not print JSON (got {last_line!r})") from err
    satellite = data.get("satellite_python")
    paths = VoicePaths(
        piper_python=Path(data["piper_python"]),
        piper_data=Path(data["piper_data"]),
        voice=str(data["voice"]),
        whisper_python=Path(data["whisper_python"]),
        whisper_model=Path(data["whisper_model"]),
        whisper_data=Path(data["whisper_data"]),
        satellite_python=Path(satellite) if satellite else None,
    )
    for path in (paths.piper_python, paths.whisper_python, paths.whisper_model):
        if not path.exists():
            raise RuntimeError(f"{SETUP_SCRIPT} reported a missing path: {path}")
    return paths


# --- audio helpers -----------------------------------------------------------------


def resample_pcm16(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample mono s16le PCM by linear interpolation (good enough for speech to STT)."""
    if from_rate == to_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    count = max(1, round(len(samples) * to_rate / from_rate))
    positions = np.arange(count) * (from_rate / to_rate)
    resampled = np.interp(positions, np.arange(len(samples)), samples)
    return bytes(np.clip(np.rint(resampled), -32768, 32767).astype("<i2").tobytes())


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """Wrap mono s16le PCM in a WAV container."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


def silence(seconds: float, rate: int = STT_RATE) -> bytes:
    """Mono s16le zeros."""
    return bytes(2 * int(seconds * rate))


# --- wyoming client helpers ----------------------------------------------------------


async def _read(client: AsyncTcpClient, read_timeout: float) -> Event:
    """Next event, or raise: wyoming 1.5.4 has no timeouts and returns None on hang-up."""
    async with asyncio.timeout(read_timeout):
        event = await client.read_event()
    if event is None:
        raise ConnectionError("Wyoming server closed the connection")
    if Error.is_type(event.type):
        error = Error.from_event(event)
        raise RuntimeError(f"Wyoming server error {error.code}: {error.text}")
    return event


async def async_describe(host: str, port: int, read_timeout: float = IO_TIMEOUT_S) -> Info:
    """Send Describe, return the server's Info."""
    async with asyncio.timeout(read_timeout):
        client = AsyncTcpClient(host, port)
        await client.connect()
    try:
        await client.write_event(Describe().event())
        while True:
            event = await _read(client, read_timeout)
            if Info.is_type(event.type):
                return Info.from_event(event)
    finally:
        await client.disconnect()


async def async_synthesize(
    host: str, port: int, text: str, voice: str = VOICE, read_timeout: float = IO_TIMEOUT_S
) -> tuple[bytes, int]:
    """Synthesize text; return (raw mono s16le PCM, its sample rate)."""
    async with asyncio.timeout(read_timeout):
        client = AsyncTcpClient(host, port)
        await client.connect()
    try:
        await client.write_event(Synthesize(text, voice=SynthesizeVoice(name=voice)).event())
        rate, width, channels = 0, 2, 1
        audio = bytearray()
        while True:
            event = await _read(client, read_timeout)
            if AudioStart.is_type(event.type):
                start = AudioStart.from_event(event)
                rate, width, channels = start.rate, start.width, start.channels
            elif AudioChunk.is_type(event.type):
                chunk = AudioChunk.from_event(event)
                rate, width, channels = chunk.rate, chunk.width, chunk.channels
                audio += chunk.audio
            elif AudioStop.is_type(event.type):
                break
    finally:
        await client.disconnect()
    if (width, channels) != (2, 1) or not rate:
        raise RuntimeError(f"unexpected TTS audio: rate={rate} width={width} ch={channels}")
    return bytes(audio), rate


async def async_transcribe(
    host: str, port: int, pcm16k: bytes, language: str = "en", read_timeout: float = IO_TIMEOUT_S
) -> str:
    """Transcribe 16 kHz mono s16le PCM; return the text without surrounding spaces."""
    async with asyncio.timeout(read_timeout):
        client = AsyncTcpClient(host, port)
        await client.connect()
    try:
        await client.write_event(Transcribe(language=language).event())
        await client.write_event(AudioStart(rate=STT_RATE, width=2, channels=1).event())
        for offset in range(0, len(pcm16k), CHUNK_BYTES):
            chunk = pcm16k[offset : offset + CHUNK_BYTES]
            await client.write_event(
                AudioChunk(rate=STT_RATE, width=2, channels=1, audio=chunk).event()
            )
        await client.write_event(AudioStop().event())
        while True:
            event = await _read(client, read_timeout)
            if Transcript.is_type(event.type):
                return str(Transcript.from_event(event).text).strip()
    finally:
        await client.disconnect()


def _run_sync[T](coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also from inside a running loop (then in a helper thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def spoken_command(server: PiperServer, text: str, trailing_silence_s: float = 1.0) -> bytes:
    """The text spoken by piper as 16 kHz mono s16le PCM, then ~1 s of silence.

    Synchronous (asyncio.run): meant for session/module fixtures outside a loop.
    """
    pcm, rate = _run_sync(async_synthesize(server.host, server.port, text))
    return resample_pcm16(pcm, rate, STT_RATE) + silence(trailing_silence_s)


# --- servers ------------------------------------------------------------------------


class WyomingServer(ChildServer):
    """A Wyoming server child process on 127.0.0.1, as a context manager.

    Subclasses give the command; ``start()`` returns once a Describe gets an Info
    that lists ``program_kind`` and the server has been warmed up.
    """

    module: ClassVar[str]  # python -m MODULE
    program_kind: ClassVar[str]  # "asr" or "tts": what Info must list

    def __init__(
        self,
        *,
        ready_timeout: float = READY_TIMEOUT_S,
        warm_up: bool = True,
        paths: VoicePaths | None = None,
    ) -> None:
        self.ready_timeout = ready_timeout
        self.warm_up_enabled = warm_up
        self._paths = paths
        self.host = HOST
        self.port = 0
        self.info: Info | None = None
        self.ready_s = 0.0  # spawn -> Describe answered
        self.warm_up_s = 0.0  # the first (cold) request
        self._child = ChildProcess(self.module, stop_grace=STOP_GRACE_S)

    @property
    def uri(self) -> str:
        """E.g. tcp://127.0.0.1:40123."""
        return f"tcp://{self.host}:{self.port}"

    @property
    def paths(self) -> VoicePaths:
        """Installed paths (runs scripts/setup-voice on first use)."""
        if self._paths is None:
            self._paths = ensure_voice()
        return self._paths

    def _python(self) -> Path:
        raise NotImplementedError

    def _args(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _warm_up(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Spawn, wait for Describe -> Info, warm up; never leaves it running on failure."""
        if self.pid is not None:
            raise RuntimeError("server already started")
        python = self._python()
        self.port = free_port()
        started = time.monotonic()
        self._child.start(
            python_module(python, self.module, "--uri", self.uri, *self._args()), env=self._env()
        )
        try:
            self.info = self._child.wait_ready(
                self._probe, self.ready_timeout, retry_on=(OSError, TimeoutError, RuntimeError)
            )
            self.ready_s = time.monotonic() - started
            if self.warm_up_enabled:
                started = time.monotonic()
                self._warm_up()
                self.warm_up_s = time.monotonic() - started
        except BaseException:  # includes KeyboardInterrupt during the wait
            self.stop()
            raise

    def _probe(self) -> Info:
        """The server's Info once it lists our program kind (readiness probe)."""
        info = _run_sync(async_describe(self.host, self.port, read_timeout=5.0))
        if not getattr(info, self.program_kind):
            raise RuntimeError(f"Info lists no {self.program_kind} program: {info}")
        return info


class PiperServer(WyomingServer):
    """wyoming-piper TTS with the en_US-joe-medium voice (22.05 kHz output)."""

    module = "wyoming_piper"
    program_kind = "tts"

    def _python(self) -> Path:
        return self.paths.piper_python

    def _args(self) -> list[str]:
        # No sampling noise: the same text gives the same audio, byte for byte, so what
        # whisper hears in a test is the same on every run (with piper's default noise,
        # "The kitchen light is on." came back once in three as "The kitchen white").
        return [
            "--voice", self.paths.voice,
            "--data-dir", str(self.paths.piper_data),
            "--noise-scale", "0",
            "--noise-w-scale", "0",
        ]  # fmt: skip

    def _warm_up(self) -> None:
        # The voice model loads on the first request (~3 s).
        _run_sync(async_synthesize(self.host, self.port, "Ready.", voice=self.paths.voice))


class WhisperServer(WyomingServer):
    """wyoming-faster-whisper STT with whisper tiny.en (int8, 2 CPU threads), offline."""

    module = "wyoming_faster_whisper"
    program_kind = "asr"

    def _python(self) -> Path:
        return self.paths.whisper_python

    def _args(self) -> list[str]:
        return [
            "--model", str(self.paths.whisper_model),
            "--stt-library", "faster-whisper",
            "--local-files-only",
            "--language", "en",
            "--compute-type", "int8",
            "--beam-size", "1",
            "--cpu-threads", "2",
            "--data-dir", str(self.paths.whisper_data),
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        return {**super()._env(), "HF_HUB_OFFLINE": "1"}

    def _warm_up(self) -> None:
        _run_sync(async_transcribe(self.host, self.port, silence(1.0)))


__all__ = [
    "STT_RATE",
    "VOICE",
    "PiperServer",
    "VoicePaths",
    "WhisperServer",
    "WyomingServer",
    "async_describe",
    "async_synthesize",
    "async_transcribe",
    "ensure_voice",
    "resample_pcm16",
    "silence",
    "spoken_command",
    "wav_bytes",
]
