"""A scripted Wyoming server on 127.0.0.1: deterministic STT and TTS for tests.

It speaks the real protocol over real TCP (wyoming 1.5.4's framing), like the
scripted OpenAI-compatible server does for the model; the real faster-whisper and
piper servers are for the end-to-end tests. What it answers is set per test:

    server = ScriptedWyoming(asr=True, tts=True)
    await server.start()
    server.transcript = "turn on the kitchen light"
    server.synth_delay_s = 0.2          # per sentence, before its audio
    server.die_during = "synthesize"    # hang up mid-answer
    server.deaf = True                  # accept connections, then never read them
    ... server.address, server.synthesized, server.audio_received
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
import functools
import math
import struct
import time
from typing import Literal

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import async_read_event, async_write_event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.tts import Synthesize

TTS_RATE = 22050
SAMPLES_PER_CHUNK = 1024


def tone(seconds: float, rate: int = TTS_RATE, frequency: int = 220) -> bytes:
    """A sine wave as 16-bit mono PCM: audio with a level to measure.

    A whole number of hertz repeats each second: one second is made, then repeated.
    """
    second = _one_second(rate, frequency)
    count = int(seconds * rate)
    return (second * (count // rate + 1))[: count * 2]


@functools.cache
def _one_second(rate: int, frequency: int) -> bytes:
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * frequency * n / rate)))
        for n in range(rate)
    )


@dataclass
class Synthesis:
    """One Synthesize request as the server saw it."""

    text: str
    voice: str | None
    at: float  # monotonic time it arrived


@dataclass
class ScriptedWyoming:
    """STT and/or TTS with scripted answers, recording what it was sent."""

    asr: bool = True
    tts: bool = True
    voices: tuple[str, ...] = ("en_US-test-medium",)
    transcript: str = ""
    transcribe_delay_s: float = 0.0
    synth_delay_s: float = 0.0
    seconds_per_char: float = 0.01  # length of the audio made for a text
    die_during: Literal["transcribe", "synthesize"] | None = None
    error_during: Literal["transcribe", "synthesize"] | None = None
    deaf: bool = False
    audio_received: int = 0  # bytes of audio sent for transcription
    transcribe_requests: list[str | None] = field(default_factory=list)
    synthesized: list[Synthesis] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _connections: set[asyncio.Task[None]] = field(default_factory=set)
    _hung_up: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        self._server = await asyncio.start_server(self._async_handle, "127.0.0.1", 0)

    async def stop(self) -> None:
        """Stop listening and hang up on every client."""
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    @property
    def open_connections(self) -> int:
        """How many clients are connected now."""
        return len(self._connections)

    async def wait_for_no_connections(self, timeout_s: float = 10.0) -> None:
        """Return once every client has hung up (TimeoutError after timeout_s)."""
        async with asyncio.timeout(timeout_s), self._hung_up:
            await self._hung_up.wait_for(lambda: not self._connections)

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        """The "host:port" to put in Majordome's options."""
        return f"127.0.0.1:{self.port}"

    def _info(self) -> Info:
        attribution = Attribution(name="tests", url="")
        asr = [
            AsrProgram(
                name="scripted-asr",
                attribution=attribution,
                installed=True,
                description=None,
                version=None,
                models=[
                    AsrModel(
                        name="scripted",
                        attribution=attribution,
                        installed=True,
                        description=None,
                        version=None,
                        languages=["en", "fr"],
                    )
                ],
            )
        ]
        tts = [
            TtsProgram(
                name="scripted-tts",
                attribution=attribution,
                installed=True,
                description=None,
                version=None,
                voices=[
                    TtsVoice(
                        name=name,
                        attribution=attribution,
                        installed=True,
                        description=None,
                        version=None,
                        languages=["en"],
                    )
                    for name in self.voices
                ],
            )
        ]
        return Info(asr=asr if self.asr else [], tts=tts if self.tts else [])

    async def _async_handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if self.deaf:
                await asyncio.Event().wait()  # the socket's buffers fill up, then writes wait
            while (event := await async_read_event(reader)) is not None:
                if Describe.is_type(event.type):
                    await async_write_event(self._info().event(), writer)
                elif Transcribe.is_type(event.type) and self.asr:
                    self.transcribe_requests.append(Transcribe.from_event(event).language)
                elif AudioChunk.is_type(event.type):
                    self.audio_received += len(AudioChunk.from_event(event).audio)
                elif AudioStop.is_type(event.type) and self.asr:
                    if not await self._async_transcribe(writer):
                        return
                elif Synthesize.is_type(event.type) and self.tts:
                    request = Synthesize.from_event(event)
                    self.synthesized.append(
                        Synthesis(
                            request.text,
                            request.voice.name if request.voice else None,
                            time.monotonic(),
                        )
                    )
                    if not await self._async_synthesize(request.text, writer):
                        return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            async with self._hung_up:
                self._hung_up.notify_all()

    async def _async_transcribe(self, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(self.transcribe_delay_s)
        if self.die_during == "transcribe":
            return False
        if self.error_during == "transcribe":
            await async_write_event(Error("scripted failure", "test").event(), writer)
            return True
        await async_write_event(Transcript(text=f" {self.transcript}").event(), writer)
        return True

    async def _async_synthesize(self, text: str, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(self.synth_delay_s)
        if self.error_during == "synthesize":
            await async_write_event(Error("scripted failure", "test").event(), writer)
            return True
        await async_write_event(AudioStart(TTS_RATE, 2, 1).event(), writer)
        audio = tone(max(0.05, len(text) * self.seconds_per_char))
        step = SAMPLES_PER_CHUNK * 2
        for offset in range(0, len(audio), step):
            await async_write_event(
                AudioChunk(TTS_RATE, 2, 1, audio[offset : offset + step]).event(), writer
            )
            if self.die_during == "synthesize":
                return False  # one chunk out, then gone
        await async_write_event(AudioStop().event(), writer)
        return True
