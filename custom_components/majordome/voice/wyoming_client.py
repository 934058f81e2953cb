"""Wyoming speech servers: describe, transcribe a stream, synthesize a sentence.

wyoming 1.5.4 (Home Assistant 2025.4's pin) has no timeouts of its own and its
read_event() returns None when the peer hangs up: every read here has a deadline
and every way a server can fail becomes a SpeechError with a kind the user hears.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
import contextlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Self

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

CONNECT_TIMEOUT = 5.0
DESCRIBE_TIMEOUT = 5.0
# A transcript comes ~1 s after the audio ends on a small CPU; a long utterance
# on a loaded machine may take several.
TRANSCRIPT_TIMEOUT = 30.0
# Between two audio events of a synthesis (piper sends a sentence's audio at once).
SYNTHESIS_TIMEOUT = 30.0

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
    """One TCP connection to a Wyoming server, with deadlines on every step."""

    def __init__(self, address: ServerAddress) -> None:
        self._address = address
        self._client = AsyncTcpClient(address.host, address.port)

    async def __aenter__(self) -> Self:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self._client.connect()
        except TimeoutError as err:
            raise SpeechError(SpeechErrorKind.TIMEOUT, f"connecting to {self._address}") from err
        except OSError as err:
            raise SpeechError(SpeechErrorKind.CANNOT_CONNECT, f"{self._address}: {err}") from err
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with contextlib.suppress(OSError):  # the server already hung up
            await self._client.disconnect()

    async def write(self, event: Event) -> None:
        try:
            await self._client.write_event(event)
        except OSError as err:
            raise SpeechError(SpeechErrorKind.SERVER_ERROR, f"{self._address}: {err}") from err

    async def read(self, deadline_s: float) -> Event:
        """Return the next event; an `error` event or a hang-up raises."""
        try:
            async with asyncio.timeout(deadline_s):
                event = await self._client.read_event()
        except TimeoutError as err:
            raise SpeechError(SpeechErrorKind.TIMEOUT, f"{self._address} is silent") from err
        except (OSError, ValueError) as err:  # reset, or a garbled header
            raise SpeechError(SpeechErrorKind.SERVER_ERROR, f"{self._address}: {err}") from err
        if event is None:
            raise SpeechError(SpeechErrorKind.SERVER_ERROR, f"{self._address} hung up")
        if Error.is_type(event.type):
            error = Error.from_event(event)
            raise SpeechError(SpeechErrorKind.SERVER_ERROR, f"{error.code}: {error.text}")
        return event


async def async_describe(address: ServerAddress) -> Info:
    """Ask a server what it offers (used to validate the options)."""
    async with _Connection(address) as connection:
        await connection.write(Describe().event())
        while True:
            event = await connection.read(DESCRIBE_TIMEOUT)
            if Info.is_type(event.type):
                return Info.from_event(event)


def installed_voices(info: Info) -> list[str]:
    """Names of the voices a TTS server can actually speak with."""
    return [voice.name for program in info.tts for voice in program.voices if voice.installed]


class Transcription:
    """Audio streamed to an STT server while the user speaks; the text at the end.

    Chunks go out as they arrive, so the server has everything the moment speech
    ends and only the recognition itself is left to wait for.
    """

    def __init__(self, address: ServerAddress, language: str | None) -> None:
        """Prepare; nothing is sent before start()."""
        self._connection = _Connection(address)
        self._language = language
        self._started = False

    async def start(self) -> None:
        """Connect and announce the audio."""
        await self._connection.__aenter__()
        self._started = True
        await self._connection.write(Transcribe(language=self._language).event())
        await self._connection.write(AudioStart(MIC_RATE, MIC_WIDTH, MIC_CHANNELS).event())

    async def send(self, pcm: bytes) -> None:
        """Forward 16 kHz mono 16-bit audio."""
        await self._connection.write(AudioChunk(MIC_RATE, MIC_WIDTH, MIC_CHANNELS, pcm).event())

    async def finish(self) -> str:
        """End the audio and wait for the transcript."""
        try:
            await self._connection.write(AudioStop().event())
            while True:
                event = await self._connection.read(TRANSCRIPT_TIMEOUT)
                if Transcript.is_type(event.type):
                    # faster-whisper puts a space in front of every transcript.
                    return str(Transcript.from_event(event).text).strip()
        finally:
            await self.close()

    async def close(self) -> None:
        """Hang up (also when the utterance is abandoned)."""
        if self._started:
            self._started = False
            await self._connection.__aexit__(None, None, None)


async def async_synthesize(
    address: ServerAddress, text: str, voice: str | None
) -> AsyncGenerator[tuple[AudioFormat, bytes]]:
    """Yield the audio of one sentence, chunk by chunk, with its format."""
    async with _Connection(address) as connection:
        await connection.write(
            Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event()
        )
        audio_format: AudioFormat | None = None
        while True:
            event = await connection.read(SYNTHESIS_TIMEOUT)
            if AudioStart.is_type(event.type):
                start = AudioStart.from_event(event)
                audio_format = AudioFormat(start.rate, start.width, start.channels)
            elif AudioChunk.is_type(event.type):
                chunk = AudioChunk.from_event(event)
                yield (
                    audio_format or AudioFormat(chunk.rate, chunk.width, chunk.channels),
                    (chunk.audio),
                )
            elif AudioStop.is_type(event.type):
                return
