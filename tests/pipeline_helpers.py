"""Home Assistant's own Assist pipeline around Majordome, for the voice tests.

The speech engines are Home Assistant's own `wyoming` integration (one config entry
per Wyoming server); Majordome is the pipeline's conversation engine. A run is fed
16 kHz mono s16le PCM in 20 ms chunks, as a satellite streams it, and its events are
recorded with the time they came. The real satellite (test_voice_satellite) goes
through the same set-up and the preferred pipeline.

The tests run on two Home Assistant releases whose voice stacks differ; `VOICE` says
which behaviour the installed one has, found in its code (see VoiceFeatures).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
import importlib
import io
from pathlib import Path
import re
import time
from typing import Any
from unittest.mock import patch
import wave

import imageio_ffmpeg
from pytest_homeassistant_custom_component.common import MockConfigEntry
from wyoming.error import Error as WyomingErrorEvent

from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import CONF_LOCAL_INTENTS, CONF_MEMORY_EVERY
from custom_components.majordome.memory import Onboarding
from devtools.bench_voice import STT_METADATA
from devtools.house import async_setup_house
from homeassistant.components.assist_pipeline import (
    PipelineEvent,
    PipelineEventType,
    async_create_default_pipeline,
    async_pipeline_from_audio_stream,
    async_update_pipeline,
)
from homeassistant.components.assist_pipeline.pipeline import async_get_pipeline
from homeassistant.components.tts import (
    ResultStream,
    async_get_media_source_audio,
    async_get_stream,
)
from homeassistant.components.tts.const import DATA_TTS_MANAGER
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component

_VARYING = frozenset({"stt-vad-start", "stt-vad-end", "intent-progress"})
CHUNK_BYTES = 640  # 20 ms of 16 kHz s16le mono
PIPELINE_TIMEOUT_S = 30.0
SPOKEN_COMMAND = "turn on the kitchen light"  # what piper says for the tests (conftest)
# No background memory summary: it would take replies meant for the turns. The model
# takes every turn (not Home Assistant's own sentences: test_local).
VOICE_ENTRY_OPTIONS: dict[str, Any] = {
    **DEFAULT_OPTIONS,
    CONF_MEMORY_EVERY: 0,
    CONF_LOCAL_INTENTS: False,
}


@dataclass(frozen=True)
class VoiceFeatures:
    """What the installed Home Assistant's voice stack does, read from its code (never
    from its version number). Home Assistant 2025.4 has none of these; 2026.10 has all.

    streams_replies: the pipeline can hand TTS the chat log's deltas while the agent is
        still answering (`ResultStream.async_set_message_stream`). It does once the
        assistant's text passes 60 characters, or when text came before a tool call;
        what is spoken is then those deltas, not the agent's final speech. A shorter
        reply is still spoken from the final speech, as before.
    media_id_is_stream: tts-end's media_id names the run's result stream
        (media-source://tts/-stream-/<token>), no longer the message and its options.
    wyoming_stt_errors / wyoming_tts_errors: HA's wyoming STT / TTS client ends on a
        server's `error` event (STT: a failed transcription, so a pipeline error;
        TTS: a failed synthesis), where older ones skip it and wait for a transcript
        or audio that never comes.
    """

    streams_replies: bool
    media_id_is_stream: bool
    wyoming_stt_errors: bool
    wyoming_tts_errors: bool

    @classmethod
    def detect(cls) -> VoiceFeatures:
        """Read the features off the installed Home Assistant."""

        def reads_error_events(module: str) -> bool:
            # The client module imports wyoming's Error only to test events against it.
            imported = importlib.import_module(f"homeassistant.components.wyoming.{module}")
            return getattr(imported, "Error", None) is WyomingErrorEvent

        return cls(
            streams_replies=hasattr(ResultStream, "async_set_message_stream"),
            media_id_is_stream=hasattr(ResultStream, "media_source_id"),
            wyoming_stt_errors=reads_error_events("stt"),
            wyoming_tts_errors=reads_error_events("tts"),
        )


VOICE = VoiceFeatures.detect()


async def async_reply_audio(hass: HomeAssistant, tts_output: dict[str, Any]) -> tuple[str, bytes]:
    """(extension, audio) of a run's reply, from its tts-end output, as HA's media source
    gives it; a failed synthesis raises what HA raised.

    With a message media id (VOICE.media_id_is_stream false) HA makes the audio again
    from the message, through its cache. A stream media id is the run's own result, read
    from its stream: HA's `tts.async_get_media_source_audio` cannot read the id whole
    (it parses "media-source://tts/-stream-/..." as a message id: "No message specified.").
    """
    media_id, token = tts_output["media_id"], tts_output["token"]
    if not VOICE.media_id_is_stream:
        assert media_id.startswith("media-source://tts/tts."), media_id
        return await async_get_media_source_audio(hass, media_id)
    stream = async_get_stream(hass, token)
    assert stream is not None, f"no result stream for {token}"
    # (getattr: 2025.4's ResultStream has no media_source_id.)
    assert media_id == getattr(stream, "media_source_id", None)
    assert media_id == f"media-source://tts/-stream-/{token}"
    data = b"".join([chunk async for chunk in stream.async_stream_result()])
    return stream.extension, data


def entity_of(hass: HomeAssistant, config_entry_id: str, domain: str) -> str | None:
    """The entity id a config entry registered in a domain (stt, tts, conversation)."""
    for entity in er.async_entries_for_config_entry(er.async_get(hass), config_entry_id):
        if entity.domain == domain:
            return entity.entity_id
    return None


def state(hass: HomeAssistant, entity_id: str) -> str:
    """The state of an entity that must exist."""
    current = hass.states.get(entity_id)
    assert current is not None, entity_id
    return current.state


def words(text: str) -> str:
    """A transcript's words, lower case, without punctuation."""
    return " ".join(re.findall(r"[a-z']+", text.lower()))


async def async_setup_voice(hass: HomeAssistant, entry: MockConfigEntry, tts_cache: Path) -> str:
    """The demo house, ffmpeg, assist_pipeline and Majordome; Majordome's entity id.

    TTS's file cache goes to `tts_cache` (the test's folder), not the plugin's
    testing_config: HA caches every synthesis on disk, and a hit left by an earlier
    run would answer without asking the server at all.
    """
    await async_setup_house(hass, "demo")
    # HA's wyoming and tts depend on ffmpeg: set it up first, with a binary that exists here.
    assert await async_setup_component(
        hass, "ffmpeg", {"ffmpeg": {"ffmpeg_bin": imageio_ffmpeg.get_ffmpeg_exe()}}
    )
    # assist_pipeline sets up tts, which reads its cache folder once, then.
    with patch("homeassistant.components.tts._init_tts_cache_dir", return_value=str(tts_cache)):
        assert await async_setup_component(hass, "assist_pipeline", {})
        await hass.async_block_till_done()
    assert hass.data[DATA_TTS_MANAGER].cache_dir == str(tts_cache)
    # The household was introduced already: no question is added to the replies.
    entry.runtime_data.memory.update(onboarding=Onboarding.DONE)
    entity_id = entity_of(hass, entry.entry_id, "conversation")
    assert entity_id is not None
    return entity_id


async def async_add_wyoming_entry(hass: HomeAssistant, port: int) -> MockConfigEntry:
    """A config entry of HA's wyoming integration for a server (or satellite) on loopback."""
    entry = MockConfigEntry(
        domain="wyoming",
        data={"host": "127.0.0.1", "port": port},
        title=f"wyoming 127.0.0.1:{port}",
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


async def async_add_wyoming(hass: HomeAssistant, port: int, domain: str) -> str:
    """Set up HA's wyoming integration for a server on loopback; its stt or tts entity."""
    entry = await async_add_wyoming_entry(hass, port)
    entity_id = entity_of(hass, entry.entry_id, domain)
    assert entity_id is not None, f"the server on port {port} gave no {domain} entity"
    return entity_id


async def async_create_pipeline(
    hass: HomeAssistant,
    *,
    conversation_engine: str,
    stt_engine: str,
    tts_engine: str,
    tts_voice: str | None = None,
    preferred: bool = False,
) -> str:
    """A pipeline Majordome -> wyoming STT/TTS; returns its id.

    Name the voice for wyoming-piper: the default pipeline takes the first voice the
    server lists, and piper lists all of its voices as installed (174 of them, only
    one of which is), so it would ask for en_US-amy-low and get no audio.

    `preferred`: rather than a new pipeline, the preferred one, which satellites use.
    It was made when assist_pipeline was set up, before these engines existed, so it
    is pointed at them, in English.
    """
    changes: dict[str, Any] = {"conversation_engine": conversation_engine}
    if preferred:
        pipeline = async_get_pipeline(hass)
        changes |= {
            "language": "en",
            "conversation_language": "en",
            "stt_engine": stt_engine,
            "stt_language": "en",
            "tts_engine": tts_engine,
            "tts_language": "en_US",
        }
    else:
        created = await async_create_default_pipeline(
            hass, stt_engine_id=stt_engine, tts_engine_id=tts_engine, pipeline_name="Majordome"
        )
        assert created is not None, "the engines do not support the pipeline's language"
        pipeline = created
    if tts_voice is not None:
        changes["tts_voice"] = tts_voice
    await async_update_pipeline(hass, pipeline, **changes)
    return pipeline.id


@dataclass
class PipelineRunRecord:
    """The events of one run, with the seconds since the run was started."""

    events: list[tuple[float, PipelineEvent]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    duration_s: float = 0.0

    def on_event(self, event: PipelineEvent) -> None:
        self.events.append((time.monotonic() - self.started, event))

    @property
    def types(self) -> list[str]:
        """Every event type, in order."""
        return [str(event.type) for _, event in self.events]

    @property
    def milestones(self) -> list[str]:
        """The event types without VAD marks and intent progress (whose count varies)."""
        return [t for t in self.types if t not in _VARYING]

    def data(self, event_type: PipelineEventType) -> dict[str, Any]:
        """The data of the one event of this type."""
        [found] = [e.data or {} for _, e in self.events if e.type == event_type]
        return found

    def at(self, event_type: PipelineEventType) -> float:
        """Seconds from the start of the run to the first event of this type."""
        return next(t for t, e in self.events if e.type == event_type)


async def pcm_chunks(pcm: bytes) -> AsyncGenerator[bytes]:
    """The audio as a satellite streams it: 20 ms chunks."""
    for offset in range(0, len(pcm), CHUNK_BYTES):
        yield pcm[offset : offset + CHUNK_BYTES]


async def async_run_pipeline(
    hass: HomeAssistant,
    pipeline_id: str,
    pcm: bytes,
    *,
    device_id: str | None = None,
    tts_audio_output: str | dict[str, Any] | None = None,
    time_limit: float = PIPELINE_TIMEOUT_S,
    record: PipelineRunRecord | None = None,
) -> PipelineRunRecord:
    """Run the pipeline from STT to TTS on the audio; a hang raises TimeoutError.

    Pass `record` to keep the events of a run that times out.
    """
    record = record or PipelineRunRecord()
    record.started = time.monotonic()
    async with asyncio.timeout(time_limit):
        await async_pipeline_from_audio_stream(
            hass,
            context=Context(),
            event_callback=record.on_event,
            stt_metadata=STT_METADATA,
            stt_stream=pcm_chunks(pcm),
            pipeline_id=pipeline_id,
            device_id=device_id,
            tts_audio_output=tts_audio_output,
        )
    record.duration_s = time.monotonic() - record.started
    return record


def wav_info(data: bytes) -> tuple[int, int, int, float]:
    """(rate, channels, sample width, seconds) of a WAV file, its seconds those of the
    frames there are (see wav_pcm)."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
    return rate, channels, width, len(wav_pcm(data)) / (rate * channels * width)


_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


def wav_pcm(data: bytes) -> bytes:
    """The frames of a WAV file.

    A WAV streamed as it is made (from a TTS engine that streams, and ffmpeg after it)
    cannot know its length: its data chunk's size is a placeholder, 0 or 0xFFFFFFFF, and
    the frames are all that follows.
    """
    assert (data[:4], data[8:12]) == (b"RIFF", b"WAVE"), data[:12]
    offset = 12
    while offset + 8 <= len(data):
        kind = data[offset : offset + 4]
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        if kind == b"data":
            frames = data[offset + 8 :]
            return frames if size in _UNKNOWN_SIZES else frames[:size]
        offset += 8 + size + (size & 1)
    raise AssertionError(f"no data chunk in {len(data)} bytes of WAV")
