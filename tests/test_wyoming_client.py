"""The Wyoming client (deadlines, failures as SpeechError) and the loudness of audio chunks.

Servers are real TCP listeners on loopback: the scripted Wyoming server for the
protocol, and bare asyncio servers that misbehave (silent, hanging up, garbled).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
import contextlib
import json
import math
import socket
import struct
import time

import pytest
from wyoming.audio import AudioChunk, AudioStart
from wyoming.event import Event, async_write_event
from wyoming.info import Attribution, Info, TtsProgram, TtsVoice

from custom_components.majordome.voice import wyoming_client
from custom_components.majordome.voice.speaker import audio_level
from custom_components.majordome.voice.wyoming_client import (
    AudioFormat,
    ServerAddress,
    SpeechError,
    SpeechErrorKind,
    Transcription,
    async_describe,
    async_synthesize,
    installed_voices,
)
from devtools.scripted_wyoming import TTS_RATE, ScriptedWyoming, tone

from .helpers import running_wyoming

type Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def speech_server(socket_enabled: None) -> AsyncGenerator[ScriptedWyoming]:
    """STT and TTS in one scripted Wyoming server."""
    async with running_wyoming(voices=("en_US-test-medium", "fr_FR-test-low")) as server:
        yield server


@pytest.fixture
async def raw_server(
    socket_enabled: None,
) -> AsyncGenerator[Callable[[Handler], Awaitable[ServerAddress]]]:
    """Start bare TCP servers with a given connection handler; stop them afterwards."""
    servers: list[asyncio.Server] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(handler: Handler) -> ServerAddress:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(server)
        return ServerAddress("127.0.0.1", server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, read everything, say nothing."""
    while await reader.read(65536):
        pass
    await asyncio.Event().wait()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and close at once."""
    writer.close()


async def garble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer a line that is no Wyoming header."""
    await reader.readline()
    writer.write(b"<html>not wyoming</html>\n")
    await writer.drain()
    await asyncio.Event().wait()


def closed_port() -> int:
    """A loopback port on which nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every deadline of the client at 0.2 s."""
    for name in ("CONNECT_TIMEOUT", "DESCRIBE_TIMEOUT", "TRANSCRIPT_TIMEOUT", "SYNTHESIS_TIMEOUT"):
        monkeypatch.setattr(wyoming_client, name, 0.2)


async def synthesize_all(
    address: ServerAddress,
    text: str,
    voice: str | None = None,
    into: list[tuple[AudioFormat, bytes]] | None = None,
) -> list[tuple[AudioFormat, bytes]]:
    """Every chunk of a synthesis; `into` keeps those received before an error."""
    chunks = [] if into is None else into
    async for item in async_synthesize(address, text, voice):
        chunks.append(item)
    return chunks


async def assert_speech_error(call: Awaitable[object], kind: SpeechErrorKind) -> SpeechError:
    """The call raises a SpeechError of this kind; the error."""
    with pytest.raises(SpeechError) as caught:
        await call
    assert caught.value.kind is kind
    return caught.value


# What a client asks a server that answers nothing, by name.
REQUESTS: dict[str, Callable[[ServerAddress], Awaitable[object]]] = {
    "describe": async_describe,
    "synthesis": lambda address: synthesize_all(address, "Hello."),
}


# --- ServerAddress ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:10300", "127.0.0.1", 10300),
        ("whisper.local:10300", "whisper.local", 10300),
        ("  piper:10200  ", "piper", 10200),
        ("tcp://127.0.0.1:10200", "127.0.0.1", 10200),
        ("[::1]:10300", "::1", 10300),
        ("tcp://[fe80::1]:1", "fe80::1", 1),
        ("host:65535", "host", 65535),
    ],
)
def test_parse_valid_addresses(text: str, host: str, port: int) -> None:
    address = ServerAddress.parse(text)
    assert address == ServerAddress(host, port)


def test_address_prints_as_host_port() -> None:
    assert str(ServerAddress.parse("tcp://piper:10200")) == "piper:10200"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "nonsense",
        "host:99999",
        "host:65536",
        "host:0",
        "host:",
        ":10300",
        "host:port",
        "host:-1",
        "host:10.5",
        "[::1]",
        "tcp://",
        "host:10300/path",
    ],
)
def test_parse_rejects_what_is_not_host_port(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the contract is a bare ValueError
        ServerAddress.parse(text)


# --- Failures become SpeechError ---------------------------------------------------


async def test_nothing_listening_is_cannot_connect(socket_enabled: None) -> None:
    await assert_speech_error(
        async_describe(ServerAddress("127.0.0.1", closed_port())), SpeechErrorKind.CANNOT_CONNECT
    )


@pytest.mark.parametrize("request_name", list(REQUESTS))
async def test_silent_server_times_out(
    raw_server: Callable[[Handler], Awaitable[ServerAddress]],
    short_deadlines: None,
    request_name: str,
) -> None:
    address = await raw_server(never_answer)
    started = time.monotonic()
    await assert_speech_error(REQUESTS[request_name](address), SpeechErrorKind.TIMEOUT)
    assert time.monotonic() - started < 2


async def test_silent_server_transcript_times_out(
    raw_server: Callable[[Handler], Awaitable[ServerAddress]], short_deadlines: None
) -> None:
    address = await raw_server(never_answer)
    transcription = Transcription(address, "en")
    await transcription.start()
    await transcription.send(bytes(3200))
    started = time.monotonic()
    await assert_speech_error(transcription.finish(), SpeechErrorKind.TIMEOUT)
    assert time.monotonic() - started < 2


async def test_server_hanging_up_is_server_error(
    raw_server: Callable[[Handler], Awaitable[ServerAddress]], short_deadlines: None
) -> None:
    address = await raw_server(hang_up)
    for request in REQUESTS.values():
        await assert_speech_error(request(address), SpeechErrorKind.SERVER_ERROR)


async def test_garbled_answer_is_server_error(
    raw_server: Callable[[Handler], Awaitable[ServerAddress]], short_deadlines: None
) -> None:
    address = await raw_server(garble)
    await assert_speech_error(async_describe(address), SpeechErrorKind.SERVER_ERROR)


async def test_error_event_is_server_error(speech_server: ScriptedWyoming) -> None:
    address = ServerAddress.parse(speech_server.address)
    speech_server.error_during = "synthesize"
    failure = await assert_speech_error(
        synthesize_all(address, "Hello."), SpeechErrorKind.SERVER_ERROR
    )
    assert "scripted failure" in str(failure)

    speech_server.error_during = "transcribe"
    transcription = Transcription(address, "en")
    await transcription.start()
    await assert_speech_error(transcription.finish(), SpeechErrorKind.SERVER_ERROR)


async def test_server_dying_mid_synthesis_is_server_error(speech_server: ScriptedWyoming) -> None:
    speech_server.die_during = "synthesize"
    chunks: list[tuple[AudioFormat, bytes]] = []
    address = ServerAddress.parse(speech_server.address)
    await assert_speech_error(
        synthesize_all(address, "A long enough sentence.", into=chunks),
        SpeechErrorKind.SERVER_ERROR,
    )
    assert len(chunks) == 1  # what came before the hang-up was yielded


# --- Whole-step deadlines and size limits -----------------------------------------


async def chatter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read everything, and answer an event nobody asked for every 50 ms, forever."""

    async def drain() -> None:
        while await reader.read(65536):
            pass

    draining = asyncio.create_task(drain())
    try:
        with contextlib.suppress(ConnectionError):  # until the client hangs up
            while True:
                await async_write_event(Event("ping"), writer)
                await asyncio.sleep(0.05)
    finally:
        draining.cancel()


async def transcribe(address: ServerAddress) -> str:
    transcription = Transcription(address, "en")
    await transcription.start()
    await transcription.send(bytes(3200))
    return await transcription.finish()


@pytest.mark.parametrize("request_name", ["describe", "synthesis", "transcript"], ids=str)
async def test_a_server_that_never_finishes_ends_at_the_step_deadline(
    raw_server: Callable[[Handler], Awaitable[ServerAddress]],
    short_deadlines: None,
    request_name: str,
) -> None:
    """Each read is quick, the answer never comes: the step's deadline ends it."""
    address = await raw_server(chatter)
    request = {**REQUESTS, "transcript": transcribe}[request_name]
    started = time.monotonic()
    async with asyncio.timeout(5):
        await assert_speech_error(request(address), SpeechErrorKind.TIMEOUT)
    assert time.monotonic() - started < 2


async def test_a_slow_endless_synthesis_ends_at_the_step_deadline(
    raw_server: Callable[[Handler], Awaitable[ServerAddress]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Audio trickles in forever, each chunk well within a read's time."""
    monkeypatch.setattr(wyoming_client, "SYNTHESIS_TIMEOUT", 0.5)

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        await async_write_event(AudioStart(TTS_RATE, 2, 1).event(), writer)
        with contextlib.suppress(ConnectionError):  # until the client hangs up
            while True:
                await async_write_event(AudioChunk(TTS_RATE, 2, 1, bytes(512)).event(), writer)
                await asyncio.sleep(0.05)

    address = await raw_server(trickle)
    chunks: list[tuple[AudioFormat, bytes]] = []
    started = time.monotonic()
    async with asyncio.timeout(5):
        await assert_speech_error(
            synthesize_all(address, "Hello.", into=chunks), SpeechErrorKind.TIMEOUT
        )
    assert time.monotonic() - started < 2
    assert chunks  # what came in time was played


@pytest.mark.parametrize(
    "header",
    [
        {"type": "audio-chunk", "payload_length": 10**10},
        {"type": "audio-chunk", "data_length": 10**9},
        {"type": "audio-chunk", "payload_length": "many"},
        {"type": "x" * 200_000},
        "[" * 50_000,
    ],
    ids=["payload", "data", "not_a_length", "long_header", "deep_header"],
)
async def test_an_oversized_or_garbled_event_is_server_error(
    raw_server: Callable[[Handler], Awaitable[ServerAddress]],
    short_deadlines: None,
    header: dict[str, object] | str,
) -> None:
    """Refused as soon as the header says so, not read (nor waited for) to the end."""
    line = header if isinstance(header, str) else json.dumps(header)

    async def announce(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(line.encode() + b"\n")
        await writer.drain()
        await asyncio.Event().wait()

    address = await raw_server(announce)
    async with asyncio.timeout(5):
        await assert_speech_error(synthesize_all(address, "Hello."), SpeechErrorKind.SERVER_ERROR)


async def test_too_much_audio_for_a_sentence_is_server_error(
    raw_server: Callable[[Handler], Awaitable[ServerAddress]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wyoming_client, "MAX_SYNTHESIS_BYTES", 1 << 20)

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        await async_write_event(AudioStart(TTS_RATE, 2, 1).event(), writer)
        with contextlib.suppress(ConnectionError):  # until the client hangs up
            while True:
                await async_write_event(AudioChunk(TTS_RATE, 2, 1, bytes(65536)).event(), writer)

    address = await raw_server(flood)
    chunks: list[tuple[AudioFormat, bytes]] = []
    async with asyncio.timeout(5):
        failure = await assert_speech_error(
            synthesize_all(address, "Hello.", into=chunks), SpeechErrorKind.SERVER_ERROR
        )
    assert "bytes of audio" in str(failure)
    assert sum(len(pcm) for _, pcm in chunks) <= 1 << 20


async def test_a_server_that_stops_reading_times_out(
    socket_enabled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audio for a deaf server fills the socket's buffers: a write ends at its deadline."""
    monkeypatch.setattr(wyoming_client, "WRITE_TIMEOUT", 0.3)
    async with running_wyoming(deaf=True) as server:
        transcription = Transcription(ServerAddress.parse(server.address), "en")
        await transcription.start()

        async def talk_on() -> None:
            for _ in range(10_000):  # 640 MB: far more than any socket buffers
                await transcription.send(bytes(65536))

        started = time.monotonic()
        async with asyncio.timeout(10):
            await assert_speech_error(talk_on(), SpeechErrorKind.TIMEOUT)
        assert time.monotonic() - started < 5
        await transcription.close()
        assert server.audio_received == 0


# --- The protocol, against the scripted server --------------------------------------


async def test_describe_and_installed_voices(speech_server: ScriptedWyoming) -> None:
    info = await async_describe(ServerAddress.parse(speech_server.address))
    assert info.asr
    assert info.tts
    assert installed_voices(info) == ["en_US-test-medium", "fr_FR-test-low"]


def test_installed_voices_skips_voices_not_installed() -> None:
    attribution = Attribution(name="t", url="")

    def voice(name: str, installed: bool) -> TtsVoice:
        return TtsVoice(
            name=name,
            attribution=attribution,
            installed=installed,
            description=None,
            version=None,
            languages=["en"],
        )

    def program(name: str, *voices: TtsVoice) -> TtsProgram:
        return TtsProgram(
            name=name,
            attribution=attribution,
            installed=True,
            description=None,
            version=None,
            voices=list(voices),
        )

    info = Info(
        tts=[
            program("piper", voice("en_US-a", True), voice("en_US-b", False)),
            program("other", voice("fr_FR-c", True)),
        ]
    )
    assert installed_voices(info) == ["en_US-a", "fr_FR-c"]
    assert installed_voices(Info()) == []


async def test_synthesize_yields_chunks_with_their_format(speech_server: ScriptedWyoming) -> None:
    text = "The kitchen light is on."
    chunks = await synthesize_all(
        ServerAddress.parse(speech_server.address), text, "fr_FR-test-low"
    )
    assert len(chunks) > 1
    assert {audio_format for audio_format, _ in chunks} == {AudioFormat(TTS_RATE, 2, 1)}
    assert b"".join(pcm for _, pcm in chunks) == tone(len(text) * speech_server.seconds_per_char)
    assert [(s.text, s.voice) for s in speech_server.synthesized] == [(text, "fr_FR-test-low")]


async def test_synthesize_without_voice_sends_none(speech_server: ScriptedWyoming) -> None:
    await synthesize_all(ServerAddress.parse(speech_server.address), "Hello.", None)
    assert [(s.text, s.voice) for s in speech_server.synthesized] == [("Hello.", None)]


async def test_transcription_streams_audio_and_strips_the_transcript(
    speech_server: ScriptedWyoming,
) -> None:
    speech_server.transcript = "turn on the light "
    transcription = Transcription(ServerAddress.parse(speech_server.address), "fr")
    await transcription.start()
    for _ in range(3):
        await transcription.send(bytes(3200))
    assert await transcription.finish() == "turn on the light"
    assert speech_server.audio_received == 3 * 3200
    assert speech_server.transcribe_requests == ["fr"]
    await transcription.close()  # closing twice is harmless


async def test_transcription_to_nothing_is_cannot_connect(socket_enabled: None) -> None:
    transcription = Transcription(ServerAddress("127.0.0.1", closed_port()), "en")
    await assert_speech_error(transcription.start(), SpeechErrorKind.CANNOT_CONNECT)
    await transcription.close()  # nothing to close, no error


# --- audio_level ------------------------------------------------------------------------


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def sine(amplitude: int, count: int = 2205) -> bytes:
    return pcm(*(int(amplitude * math.sin(2 * math.pi * 440 * n / 22050)) for n in range(count)))


def test_silence_is_zero() -> None:
    assert audio_level(bytes(4096), 2) == 0.0


def test_loud_tone_is_near_one() -> None:
    assert audio_level(sine(32767), 2) >= 0.95
    assert audio_level(pcm(*[32767, -32768] * 100), 2) == 1.0


def test_level_grows_with_loudness_and_stays_in_range() -> None:
    levels = [audio_level(sine(amplitude), 2) for amplitude in (100, 1000, 4000, 8000)]
    assert levels == sorted(levels)
    assert len(set(levels)) == len(levels)
    assert all(0.0 < level <= 1.0 for level in levels)
    # A constant 2048 (1/16 of full scale) is 0.0625 RMS, stretched by 4.
    assert audio_level(pcm(2048, -2048) * 50, 2) == pytest.approx(0.25, abs=0.001)


def test_level_reads_little_endian() -> None:
    # 0x0800 little-endian is 2048; read big-endian it would be 8, near silence.
    assert audio_level(b"\x00\x08" * 100, 2) == pytest.approx(0.25, abs=0.001)


@pytest.mark.parametrize("data", [b"", b"\x01", b"\xff"])
def test_short_buffers_are_silent(data: bytes) -> None:
    assert audio_level(data, 2) == 0.0


def test_odd_buffer_ignores_the_last_byte() -> None:
    assert audio_level(pcm(2048, -2048) + b"\x7f", 2) == audio_level(pcm(2048, -2048), 2)


def test_other_widths_are_silent_not_an_error() -> None:
    assert audio_level(bytes([0x7F] * 300), 1) == 0.0
    assert audio_level(bytes([0x7F] * 300), 4) == 0.0
