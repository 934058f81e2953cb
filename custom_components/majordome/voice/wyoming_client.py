"""Wyoming speech servers: describe, transcribe a stream, synthesize a sentence.

wyoming (1.5.4 in Home Assistant 2025.4, 1.10 later) has no timeouts of its own and
reads whatever length a server announces. Here every step has one deadline for the
whole of it (connecting, writing and every read of one description, transcript or
synthesis), events and the audio of a sentence have a size limit, and every way a
server can fail becomes a SpeechError with a kind the user hears.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
import contextlib
from dataclasses import dataclass
from enum import StrEnum
import json
from typing import Any, Self

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

CONNECT_TIMEOUT = 5.0
# Connecting, asking and reading the answer, all in all.
DESCRIBE_TIMEOUT = 5.0
# From the end of the audio to the transcript: ~1 s on a small CPU; a long utterance
# on a loaded machine may take several.
TRANSCRIPT_TIMEOUT = 30.0
# One sentence's whole synthesis, from connecting to its last chunk (piper sends a
# sentence's audio at once).
SYNTHESIS_TIMEOUT = 30.0
# Writing one event (a chunk of the user's audio): a server that stops reading fills
# the socket's buffers, and a write would wait for it forever.
WRITE_TIMEOUT = 5.0
# What a server may send: one event's header line and its data (piper describes every
# voice it knows: ~250 kB), one payload (a chunk of audio), and the audio of one
# sentence (~6 minutes at 22 kHz).
MAX_EVENT_BYTES = 64 * 1024
MAX_DATA_BYTES = 2 * 1024 * 1024
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
MAX_SYNTHESIS_BYTES = 16 * 1024 * 1024

MIC_RATE = 16000  # what STT servers expect and what the endpoint accepts
MIC_WIDTH = 2
MIC_CHANNELS = 1


class SpeechErrorKind(StrEnum):
    """How a speech server failed; each has a sentence in the translations."""

    CANNOT_CONNECT = "speech_cannot_connect"
    TIMEOUT = "speech_timeout"
    SERVER_ERROR = "speech_server_error"


class SpeechError(Exception):
    """A Wyoming server could not be reached or did not answer as it should."""

    def __init__(self, kind: SpeechErrorKind, detail: str = "") -> None:
        """Keep the kind for the user and the detail for the log."""
        super().__init__(f"{kind}: {detail}" if detail else str(kind))
        self.kind = kind


@dataclass(frozen=True)
class ServerAddress:
    """Where a Wyoming server listens, from the "host:port" the user typed."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse "host:port" (IPv6 in brackets); ValueError when it is not one."""
        text = text.strip().removeprefix("tcp://")
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if (
            not sep
            or not host
            or any(c.isspace() or c in "/@?#" for c in host)  # a URL, not an address
            or not port.isdigit()
            or not 0 < int(port) < 65536
        ):
            raise ValueError(f"not host:port: {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        """Return "host:port"."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class AudioFormat:
    """The shape of raw PCM audio."""

    rate: int
    width: int
    channels: int


class _Connection:
    """One TCP connection to a Wyoming server; each call has a deadline (loop time)."""

    def __init__(self, address: ServerAddress) -> None:
        self._address = address
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self, deadline: float) -> None:
        """Connect, by the deadline and within CONNECT_TIMEOUT."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(min(deadline, loop.time() + CONNECT_TIMEOUT)):
                self._reader, self._writer = await asyncio.open_connection(
                    self._address.host, self._address.port, limit=MAX_EVENT_BYTES
                )
        except TimeoutError as err:
            raise SpeechError(SpeechErrorKind.TIMEOUT, f"connecting to {self._address}") from err
        except OSError as err:
            raise SpeechError(SpeechErrorKind.CANNOT_CONNECT, f"{self._address}: {err}") from err

    async def close(self) -> None:
        """Hang up, without waiting on a server that does not read any more."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1):
                    await writer.wait_closed()

    async def write(self, event: Event, deadline: float) -> None:
        """Send one event by the deadline."""
        assert self._writer is not None
        try:
            async with asyncio.timeout_at(deadline):
                await async_write_event(event, self._writer)
        except TimeoutError as err:
            raise SpeechError(
                SpeechErrorKind.TIMEOUT, f"{self._address} does not read what it is sent"
            ) from err
        except (OSError, RuntimeError) as err:  # reset, or written after the hang-up
            raise SpeechError(SpeechErrorKind.SERVER_ERROR, f"{self._address}: {err}") from err

    async def read(self, deadline: float) -> Event:
        """Return the next event by the deadline; an `error` event or a hang-up raises."""
        try:
            async with asyncio.timeout_at(deadline):
                event = await self._read_event()
        except TimeoutError as err:
            raise SpeechError(SpeechErrorKind.TIMEOUT, f"{self._address} is too slow") from err
        except (OSError, TypeError, ValueError, RecursionError, asyncio.IncompleteReadError) as err:
            # Reset, hung up mid-event, garbled, nested too deep or oversized.
            raise SpeechError(SpeechErrorKind.SERVER_ERROR, f"{self._address}: {err}") from err
        if event is None:
            raise SpeechError(SpeechErrorKind.SERVER_ERROR, f"{self._address} hung up")
        if Error.is_type(event.type):
            error = Error.from_event(event)
            raise SpeechError(SpeechErrorKind.SERVER_ERROR, f"{error.code}: {error.text}")
        return event

    async def _read_event(self) -> Event | None:
        """Read an event in wyoming's framing, with the lengths a server announces checked first.

        A header line longer than MAX_EVENT_BYTES makes readline() raise ValueError.
        """
        assert self._reader is not None
        line = await self._reader.readline()
        if not line:
            return None
        header = json.loads(line)
        if not isinstance(header, dict) or not isinstance(header.get("type"), str):
            raise TypeError("not a Wyoming event")
        data: dict[str, Any] = header.get("data") or {}
        data_length = _length(header, "data_length", MAX_DATA_BYTES)
        if data_length:
            extra = json.loads(await self._reader.readexactly(data_length))
            if not isinstance(data, dict) or not isinstance(extra, dict):
                raise TypeError("event data is not an object")
            data = {**data, **extra}
        payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
        payload = await self._reader.readexactly(payload_length) if payload_length else None
        return Event(type=header["type"], data=data, payload=payload)


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    """A length the header announces; ValueError when it is not one, or too long."""
    value = header.get(key) or 0
    if not isinstance(value, int) or not 0 <= value <= limit:
        raise ValueError(f"{key} {value!r} is not a length up to {limit}")
    return value


def _deadline(seconds: float) -> float:
    """The loop time `seconds` from now."""
    return asyncio.get_running_loop().time() + seconds


async def async_describe(address: ServerAddress) -> Info:
    """Ask a server what it offers (used to validate the options)."""
    deadline = _deadline(DESCRIBE_TIMEOUT)
    connection = _Connection(address)
    await connection.open(deadline)
    try:
        await connection.write(Describe().event(), deadline)
        while True:
            event = await connection.read(deadline)
            if Info.is_type(event.type):
                return Info.from_event(event)
    finally:
        await connection.close()


def installed_voices(info: Info) -> list[str]:
    """Names of the voices a TTS server can actually speak with."""
    return [voice.name for program in info.tts for voice in program.voices if voice.installed]


class Transcription:
    """Audio streamed to an STT server while the user speaks; the text at the end.

    Chunks go out as they arrive, so the server has everything the moment speech
    ends and only the recognition itself is left to wait for. Each step has its
    deadline: connecting, each chunk written, and the end (the rest written and the
    transcript read).
    """

    def __init__(self, address: ServerAddress, language: str | None) -> None:
        """Prepare; nothing is sent before start()."""
        self._connection = _Connection(address)
        self._language = language
        self._started = False

    async def start(self) -> None:
        """Connect and announce the audio."""
        deadline = _deadline(CONNECT_TIMEOUT + WRITE_TIMEOUT)
        self._started = True
        await self._connection.open(deadline)
        await self._connection.write(Transcribe(language=self._language).event(), deadline)
        await self._connection.write(
            AudioStart(MIC_RATE, MIC_WIDTH, MIC_CHANNELS).event(), deadline
        )

    async def send(self, pcm: bytes) -> None:
        """Forward 16 kHz mono 16-bit audio."""
        await self._connection.write(
            AudioChunk(MIC_RATE, MIC_WIDTH, MIC_CHANNELS, pcm).event(), _deadline(WRITE_TIMEOUT)
        )

    async def finish(self) -> str:
        """End the audio and wait for the transcript."""
        deadline = _deadline(TRANSCRIPT_TIMEOUT)
        try:
            await self._connection.write(AudioStop().event(), deadline)
            while True:
                event = await self._connection.read(deadline)
                if Transcript.is_type(event.type):
                    # faster-whisper puts a space in front of every transcript.
                    return str(Transcript.from_event(event).text).strip()
        finally:
            await self.close()

    async def close(self) -> None:
        """Hang up (also when the utterance is abandoned)."""
        if self._started:
            self._started = False
            await self._connection.close()


async def async_synthesize(
    address: ServerAddress, text: str, voice: str | None
) -> AsyncGenerator[tuple[AudioFormat, bytes]]:
    """Yield the audio of one sentence, chunk by chunk, with its format.

    The whole synthesis has one deadline (time spent by the caller between two
    chunks included) and at most MAX_SYNTHESIS_BYTES of audio.
    """
    deadline = _deadline(SYNTHESIS_TIMEOUT)
    connection = _Connection(address)
    await connection.open(deadline)
    try:
        await connection.write(
            Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event(),
            deadline,
        )
        audio_format: AudioFormat | None = None
        received = 0
        while True:
            event = await connection.read(deadline)
            if AudioStart.is_type(event.type):
                start = AudioStart.from_event(event)
                audio_format = AudioFormat(start.rate, start.width, start.channels)
            elif AudioChunk.is_type(event.type):
                chunk = AudioChunk.from_event(event)
                received += len(chunk.audio)
                if received > MAX_SYNTHESIS_BYTES:
                    raise SpeechError(
                        SpeechErrorKind.SERVER_ERROR,
                        f"{address} sent more than {MAX_SYNTHESIS_BYTES} bytes of audio",
                    )
                yield (
                    audio_format or AudioFormat(chunk.rate, chunk.width, chunk.channels),
                    chunk.audio,
                )
            elif AudioStop.is_type(event.type):
                return
    finally:
        await connection.close()
