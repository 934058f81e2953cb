"""Majordome behind Home Assistant's own Assist pipeline, with real Wyoming servers.

What a voice satellite does: audio -> HA's wyoming STT (faster-whisper tiny.en) ->
Majordome (the scripted model) -> HA's wyoming TTS (piper) -> a WAV to play. The speech
servers are real and start once per run (conftest); scripted Wyoming servers stand in where a
failure must be deterministic (a hallucinated transcript, a server that hangs up).

The tests run on Home Assistant 2025.4 and on the newest release (2026.10). Where the two
differ, each test checks what the installed one does, told by its code (pipeline_helpers
.VOICE), not by its version.

What both pipelines do, pinned down here:
- TTS is lazy: tts-end carries a media id / URL as soon as the agent has answered, and
  the synthesis runs in the background. A TTS failure is never a pipeline `error`
  event; it shows when the audio is fetched (HTTP 500 on the tts_proxy URL).
- An empty agent reply skips TTS: no tts-start at all.

Where 2025.4 and 2026.10 differ:
- Media id. 2025.4's names the message and its options: fetched by it, the audio is made
  again, through HA's cache (a failed synthesis is not cached: each fetch asks the server
  again). 2026.10's names the run's result stream (media-source://tts/-stream-/<token>):
  the run's one synthesis, its failure included.
- Streaming. 2026.10's pipeline can speak the chat log's deltas while the agent is still
  answering (piper 2.5 takes text as a stream): once the assistant's text passes 60
  characters, or when text came before a tool call (intent-progress `tts_start_streaming`).
  What is spoken is then those deltas, not the agent's final speech (tts-start still shows
  the final speech). A shorter reply is spoken from the final speech, as on 2025.4, which
  never streams. A WAV made as it streams has no length in its header.
- A Wyoming server's `error` event. 2025.4's wyoming client ignores it and waits for a
  transcript or audio that never comes: STT then hangs the run, TTS hangs the audio
  fetch. 2026.10's ends on it: STT fails the run at once (stt-stream-failed), and the
  audio fetch fails at once (HTTP 500).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.majordome.const import CONF_SCREEN_TYPED, EVENT_UTTERANCE_IGNORED
from devtools.scripted_server import Reply, ScriptedServer, text, tool_calls
from devtools.scripted_wyoming import ScriptedWyoming
from devtools.voice_servers import (
    STT_RATE,
    PiperServer,
    WhisperServer,
    async_transcribe,
    resample_pcm16,
    silence,
)
from homeassistant.components import tts
from homeassistant.components.assist_pipeline import PipelineEventType
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr

from .helpers import running_wyoming, user_messages
from .pipeline_helpers import (
    VOICE,
    VOICE_ENTRY_OPTIONS,
    PipelineRunRecord,
    async_add_wyoming,
    async_create_pipeline,
    async_reply_audio,
    async_run_pipeline,
    async_setup_voice,
    state,
    wav_info,
    wav_pcm,
    words,
)

KITCHEN = "light.kitchen_light"
REPLY = "The kitchen light is on."
# Past the 60 characters after which 2026.10's pipeline speaks the reply as it streams.
LONG_REPLY = "The kitchen light is on, and every other light in the house is off."
# How long a run that should have answered may stay silent before we call it a hang.
# The scripted servers answer within milliseconds, so one second is plenty.
HANG_S = 1.0


@pytest.fixture
def spoken(spoken_kitchen_command: bytes) -> bytes:
    """The command spoken by piper (conftest), 0.3 s of silence first."""
    # A satellite streams from the wake word on, so a little silence comes first.
    # Piper's synthesis varies from run to run; without that lead-in tiny.en now and
    # then loses the first word ("on the kitchen light.").
    return silence(0.3) + spoken_kitchen_command


def noise(seconds: float, level: int = 300) -> bytes:
    """White noise, 16 kHz mono s16le: a room where nobody speaks."""
    rng = np.random.default_rng(4)
    samples = rng.normal(0, level, int(seconds * STT_RATE)).clip(-32768, 32767)
    return bytes(samples.astype("<i2").tobytes())


# --- Home Assistant with the voice stack ----------------------------------------------


@pytest.fixture
def entry_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The voice tests' options, changed by the test's parameter if any."""
    return {**VOICE_ENTRY_OPTIONS, **getattr(request, "param", {})}


@pytest.fixture
async def agent(
    hass: HomeAssistant, socket_enabled: None, tmp_path: Path, entry: MockConfigEntry
) -> str:
    """The house, ffmpeg, assist_pipeline and Majordome; Majordome's entity id."""
    return await async_setup_voice(hass, entry, tmp_path)


@pytest.fixture
async def real_stt(hass: HomeAssistant, agent: str, whisper_server: WhisperServer) -> str:
    """HA's wyoming STT entity on the real whisper server."""
    return await async_add_wyoming(hass, whisper_server.port, "stt")


@pytest.fixture
async def real_tts(hass: HomeAssistant, agent: str, piper_server: PiperServer) -> str:
    """HA's wyoming TTS entity on the real piper server."""
    return await async_add_wyoming(hass, piper_server.port, "tts")


@pytest.fixture
async def real_pipeline(
    hass: HomeAssistant, agent: str, real_stt: str, real_tts: str, piper_server: PiperServer
) -> str:
    """whisper -> Majordome -> piper; the pipeline id."""
    return await async_create_pipeline(
        hass,
        conversation_engine=agent,
        stt_engine=real_stt,
        tts_engine=real_tts,
        tts_voice=piper_server.paths.voice,
    )


@pytest.fixture
async def scripted_stt(hass: HomeAssistant, agent: str) -> AsyncGenerator[ScriptedWyoming]:
    """A scripted Wyoming STT server, stopped before hass: it hangs up on a waiting client."""
    async with running_wyoming(asr=True, tts=False) as server:
        yield server


@pytest.fixture
async def stt_pipeline(
    hass: HomeAssistant,
    agent: str,
    scripted_stt: ScriptedWyoming,
    real_tts: str,
    piper_server: PiperServer,
) -> str:
    """scripted STT -> Majordome -> piper; the pipeline id."""
    return await async_create_pipeline(
        hass,
        conversation_engine=agent,
        stt_engine=await async_add_wyoming(hass, scripted_stt.port, "stt"),
        tts_engine=real_tts,
        tts_voice=piper_server.paths.voice,
    )


@pytest.fixture
async def scripted_tts(hass: HomeAssistant, agent: str) -> AsyncGenerator[ScriptedWyoming]:
    """A scripted Wyoming TTS server."""
    async with running_wyoming(asr=False, tts=True) as server:
        yield server


@pytest.fixture
async def tts_pipeline(
    hass: HomeAssistant, agent: str, real_stt: str, scripted_tts: ScriptedWyoming
) -> str:
    """whisper -> Majordome -> scripted TTS; the pipeline id."""
    return await async_create_pipeline(
        hass,
        conversation_engine=agent,
        stt_engine=real_stt,
        tts_engine=await async_add_wyoming(hass, scripted_tts.port, "tts"),
    )


@pytest.fixture
def satellite(hass: HomeAssistant) -> str:
    """A device in the registry, as a voice satellite has; its id."""
    owner = MockConfigEntry(domain="test_satellite")
    owner.add_to_hass(hass)
    device = dr.async_get(hass).async_get_or_create(
        config_entry_id=owner.entry_id,
        identifiers={("test_satellite", "kitchen")},
        name="Kitchen satellite",
    )
    return device.id


def tts_url(run: PipelineRunRecord) -> str:
    """Where a satellite fetches the reply's audio."""
    return str(run.data(PipelineEventType.TTS_END)["tts_output"]["url"])


async def async_run_audio(hass: HomeAssistant, run: PipelineRunRecord) -> tuple[str, bytes]:
    """The reply's audio as HA's media source gives it for the run's media id."""
    return await async_reply_audio(hass, run.data(PipelineEventType.TTS_END)["tts_output"])


def started_streaming(run: PipelineRunRecord) -> bool:
    """Whether the pipeline started speaking the reply from the chat log's deltas."""
    return any(
        (event.data or {}).get("tts_start_streaming")
        for _, event in run.events
        if event.type == PipelineEventType.INTENT_PROGRESS
    )


async def async_heard(whisper_server: WhisperServer, audio: bytes) -> str:
    """What whisper hears in a WAV reply; `audio` must be a whole, non-empty WAV."""
    rate, channels, width, seconds = wav_info(audio)
    assert (channels, width) == (1, 2)
    assert seconds > 0.2, f"{seconds:.2f} s of audio"
    pcm = resample_pcm16(wav_pcm(audio), rate, STT_RATE)
    return await async_transcribe(whisper_server.host, whisper_server.port, pcm + silence(0.5))


# --- 1. a spoken command, end to end -------------------------------------------------


@pytest.mark.parametrize(
    ("from_satellite", "tts_audio_output", "rate"),
    [
        # The Assist dialog's microphone: no device; the WAV piper made, untouched.
        (False, {tts.ATTR_PREFERRED_FORMAT: "wav"}, 22050),
        # A satellite: its device id; "wav" means 16 kHz mono, which ffmpeg makes.
        (True, "wav", 16000),
    ],
    ids=["no-device", "satellite"],
)
async def test_spoken_command_turns_the_light_on_and_is_answered_aloud(
    hass: HomeAssistant,
    *,
    real_pipeline: str,
    scripted: ScriptedServer,
    spoken: bytes,
    satellite: str,
    piper_server: PiperServer,
    whisper_server: WhisperServer,
    from_satellite: bool,
    tts_audio_output: str | dict[str, Any],
    rate: int,
) -> None:
    ignored = async_capture_events(hass, EVENT_UTTERANCE_IGNORED)
    device_id = satellite if from_satellite else None
    assert state(hass, KITCHEN) == "off"
    scripted.add(tool_calls(("HassTurnOn", {"name": "Kitchen Light"})), text(REPLY))

    run = await async_run_pipeline(
        hass, real_pipeline, spoken, device_id=device_id, tts_audio_output=tts_audio_output
    )

    assert run.milestones == [
        "run-start",
        "stt-start",
        "stt-end",
        "intent-start",
        "intent-end",
        "tts-start",
        "tts-end",
        "run-end",
    ]
    assert "stt-vad-start" in run.types
    # Both releases report the chat log's deltas: the call, its result, the text.
    assert run.types.count("intent-progress") >= 3
    transcript = run.data(PipelineEventType.STT_END)["stt_output"]["text"]
    assert "kitchen light" in transcript.lower()
    # Majordome got the transcript, with the device id, and the model acted on it.
    intent_start = run.data(PipelineEventType.INTENT_START)
    assert (intent_start["intent_input"], intent_start["device_id"]) == (transcript, device_id)
    first, _ = scripted.chat_requests
    assert user_messages(first)[-1] == transcript
    assert state(hass, KITCHEN) == "on"
    assert not ignored  # screened (satellite) or not, a command passes
    speech = run.data(PipelineEventType.INTENT_END)["intent_output"]["response"]["speech"]
    assert speech["plain"]["speech"] == REPLY
    tts_start = run.data(PipelineEventType.TTS_START)
    assert (tts_start["tts_input"], tts_start["voice"]) == (REPLY, piper_server.paths.voice)
    # A short reply is spoken from the final speech, on either release.
    assert not started_streaming(run)

    # The run ended with the media id; the audio is made in the background.
    extension, audio = await async_run_audio(hass, run)
    assert extension == "wav"
    assert audio.startswith(b"RIFF")
    got_rate, channels, width, seconds = wav_info(audio)
    assert (got_rate, channels, width) == (rate, 1, 2)
    assert 0.8 < seconds < 5, seconds
    # And it says the reply: whisper hears it back.
    heard = await async_heard(whisper_server, audio)
    assert "kitchen light" in heard.lower(), heard


async def test_long_reply_is_spoken_as_it_streams_where_the_pipeline_streams(
    hass: HomeAssistant,
    *,
    real_pipeline: str,
    scripted: ScriptedServer,
    spoken: bytes,
    satellite: str,
    whisper_server: WhisperServer,
) -> None:
    """A reply past 60 characters, streamed in pieces: 2026.10 starts speaking it from
    the chat log's deltas before the agent has finished (a satellite hears it sooner);
    2025.4 speaks the final speech. Either way the user hears the whole reply."""
    scripted.add(
        tool_calls(("HassTurnOn", {"name": "Kitchen Light"})),
        text(*LONG_REPLY.partition(", ")),  # streamed in three pieces
    )

    run = await async_run_pipeline(
        hass, real_pipeline, spoken, device_id=satellite, tts_audio_output="wav"
    )

    assert state(hass, KITCHEN) == "on"
    assert run.milestones[-4:] == ["intent-end", "tts-start", "tts-end", "run-end"]
    speech = run.data(PipelineEventType.INTENT_END)["intent_output"]["response"]["speech"]
    assert speech["plain"]["speech"] == LONG_REPLY
    assert run.data(PipelineEventType.TTS_START)["tts_input"] == LONG_REPLY
    assert started_streaming(run) is VOICE.streams_replies
    if VOICE.streams_replies:
        # Once the text passed 60 characters, before the agent's answer ended.
        [streaming_at] = [
            index
            for index, (_, event) in enumerate(run.events)
            if (event.data or {}).get("tts_start_streaming")
        ]
        assert streaming_at < run.types.index("intent-end")
        streamed = "".join(
            (event.data or {}).get("chat_log_delta", {}).get("content") or ""
            for _, event in run.events[:streaming_at]
        )
        assert 60 < len(streamed) <= len(LONG_REPLY), streamed
    _, audio = await async_run_audio(hass, run)
    heard = words(await async_heard(whisper_server, audio))
    assert "kitchen light" in heard, heard
    assert "house" in heard, heard


async def test_answer_for_a_model_silent_after_its_tool_is_heard(
    hass: HomeAssistant,
    *,
    real_pipeline: str,
    scripted: ScriptedServer,
    spoken: bytes,
    satellite: str,
    whisper_server: WhisperServer,
) -> None:
    """A small model writes a blank line before its tool call (what is left of an empty
    <think> block), then nothing once the tool ran: Majordome answers for it ("Done.").
    The user must hear that answer. 2025.4 speaks the final speech. On 2026.10 the blank
    line (text before a tool call) started the streaming, so only deltas are spoken: an
    answer added to the chat log without streaming it never reaches TTS, piper gets the
    blank line alone and makes no audio, and a satellite plays nothing."""
    call = tool_calls(("HassTurnOn", {"name": "Kitchen Light"}))
    scripted.add(
        Reply(deltas=[{"content": "\n\n"}, *call.deltas], finish_reason="tool_calls"),
        text(""),
    )

    run = await async_run_pipeline(
        hass, real_pipeline, spoken, device_id=satellite, tts_audio_output="wav"
    )

    assert state(hass, KITCHEN) == "on"
    speech = run.data(PipelineEventType.INTENT_END)["intent_output"]["response"]["speech"]
    answer = speech["plain"]["speech"]
    assert words(answer), speech
    assert run.data(PipelineEventType.TTS_START)["tts_input"] == answer
    assert started_streaming(run) is VOICE.streams_replies
    _, audio = await async_run_audio(hass, run)  # unheard: ffmpeg finds no audio at all
    heard = words(await async_heard(whisper_server, audio))
    assert words(answer) in heard, (answer, heard)


# --- 2. silence and noise ------------------------------------------------------------


@pytest.mark.parametrize(
    "hallucination", ["Thank you.", "Sous-titres réalisés par la communauté d'Amara.org"]
)
async def test_satellite_hallucination_is_dropped_before_the_model(
    hass: HomeAssistant,
    *,
    stt_pipeline: str,
    scripted_stt: ScriptedWyoming,
    scripted: ScriptedServer,
    satellite: str,
    hallucination: str,
) -> None:
    """Whisper's stock text for a quiet room, from a satellite: no model call, no audio."""
    ignored = async_capture_events(hass, EVENT_UTTERANCE_IGNORED)
    scripted_stt.transcript = hallucination

    run = await async_run_pipeline(
        hass, stt_pipeline, noise(1.5), device_id=satellite, tts_audio_output="wav"
    )

    assert scripted_stt.audio_received > 0
    assert scripted.chat_requests == []
    [event] = ignored
    assert event.data["length"] == len(f" {hallucination}")  # wyoming keeps whisper's space
    assert "text" not in event.data  # overheard speech stays out of the recorder
    assert (event.data["reason"], event.data["device_id"]) == ("hallucination", satellite)
    # The agent's speech is empty, so the pipeline skips TTS (both releases): no
    # tts-start, and no error.
    assert run.milestones == [
        "run-start",
        "stt-start",
        "stt-end",
        "intent-start",
        "intent-end",
        "run-end",
    ]
    assert run.data(PipelineEventType.INTENT_END)["intent_output"]["response"]["speech"] == {}
    assert state(hass, KITCHEN) == "off"


@pytest.mark.parametrize(
    ("entry_options", "screened"),
    [({}, False), ({CONF_SCREEN_TYPED: True}, True)],
    indirect=["entry_options"],
    ids=["default", "screen_typed"],
)
async def test_without_a_device_the_pipeline_looks_typed(
    hass: HomeAssistant,
    *,
    stt_pipeline: str,
    scripted_stt: ScriptedWyoming,
    scripted: ScriptedServer,
    screened: bool,
) -> None:
    """A run without a device id (the Assist dialog's microphone) reaches Majordome as
    typed text would: its hallucinations are screened only with the screen_typed option."""
    ignored = async_capture_events(hass, EVENT_UTTERANCE_IGNORED)
    scripted_stt.transcript = "Thank you."
    scripted.add(text("You're welcome."))

    run = await async_run_pipeline(
        hass, stt_pipeline, noise(1.5), tts_audio_output={tts.ATTR_PREFERRED_FORMAT: "wav"}
    )

    assert len(ignored) == int(screened)
    assert len(scripted.chat_requests) == int(not screened)
    assert ("tts-start" in run.types) is not screened


async def test_real_silence_through_real_whisper(
    hass: HomeAssistant, real_pipeline: str, scripted: ScriptedServer, satellite: str
) -> None:
    """2 s of zeros: tiny.en hears nothing, and HA's pipeline stops at STT."""
    ignored = async_capture_events(hass, EVENT_UTTERANCE_IGNORED)

    run = await async_run_pipeline(
        hass, real_pipeline, silence(2.0), device_id=satellite, tts_audio_output="wav"
    )

    assert run.milestones == ["run-start", "stt-start", "error", "run-end"]
    assert run.data(PipelineEventType.ERROR)["code"] == "stt-no-text-recognized"
    assert "stt-vad-start" not in run.types  # HA's VAD heard nobody either
    assert scripted.chat_requests == []
    assert not ignored  # Majordome never saw it


async def test_real_faint_noise_never_reaches_the_model(
    hass: HomeAssistant, real_pipeline: str, scripted: ScriptedServer, satellite: str
) -> None:
    """Faint hiss. tiny.en mostly hears nothing, now and then a row of dots (". . . ."):
    either way, no model call and no audio. (Kept at 2 s: on 3-4 s of such hiss tiny.en
    takes 5-7 s to decide it heard nothing.)"""
    ignored = async_capture_events(hass, EVENT_UTTERANCE_IGNORED)

    run = await async_run_pipeline(
        hass, real_pipeline, noise(2.0, level=100), device_id=satellite, tts_audio_output="wav"
    )

    assert scripted.chat_requests == []
    assert "tts-start" not in run.types
    if "error" in run.types:
        assert run.data(PipelineEventType.ERROR)["code"] == "stt-no-text-recognized"
        assert not ignored
    else:
        [event] = ignored
        heard = run.data(PipelineEventType.STT_END)["stt_output"]["text"]
        assert event.data["length"] == len(heard)


# --- 3. speech servers that are down or die --------------------------------------------


@pytest.mark.parametrize("failure", ["down", "dies"])
async def test_stt_server_failure_is_a_pipeline_error(
    hass: HomeAssistant,
    *,
    stt_pipeline: str,
    scripted_stt: ScriptedWyoming,
    scripted: ScriptedServer,
    spoken: bytes,
    satellite: str,
    failure: str,
) -> None:
    """Down (nothing listens any more) or hanging up instead of answering: an error
    event at once, and Majordome is never asked."""
    if failure == "down":
        await scripted_stt.stop()
    else:
        scripted_stt.die_during = "transcribe"

    run = await async_run_pipeline(hass, stt_pipeline, spoken, device_id=satellite)

    assert run.milestones == ["run-start", "stt-start", "error", "run-end"]
    assert run.data(PipelineEventType.ERROR)["code"] == "stt-stream-failed"
    assert run.duration_s < 5
    assert scripted_stt.audio_received == (0 if failure == "down" else len(spoken) // 320 * 320)
    assert scripted.chat_requests == []


async def test_stt_error_event_hangs_the_run_or_fails_it(
    hass: HomeAssistant,
    *,
    stt_pipeline: str,
    scripted_stt: ScriptedWyoming,
    scripted: ScriptedServer,
    spoken: bytes,
    satellite: str,
) -> None:
    """A Wyoming STT server that answers with an `error` event. HA 2025.4's wyoming STT
    skips it and waits for a transcript: the run hangs for as long as the server keeps
    the connection open (HA's code, not ours: a satellite must time out by itself).
    2026.10's ends on it: a pipeline error at once. Majordome is never asked."""
    scripted_stt.error_during = "transcribe"
    run = PipelineRunRecord()

    if VOICE.wyoming_stt_errors:
        await async_run_pipeline(
            hass, stt_pipeline, spoken, device_id=satellite, time_limit=HANG_S, record=run
        )
        assert run.milestones == ["run-start", "stt-start", "error", "run-end"]
        assert run.data(PipelineEventType.ERROR)["code"] == "stt-stream-failed"
    else:
        with pytest.raises(TimeoutError):
            await async_run_pipeline(
                hass, stt_pipeline, spoken, device_id=satellite, time_limit=HANG_S, record=run
            )
        # No error event: the run-end is our cancellation's (the pipeline's finally).
        assert run.milestones == ["run-start", "stt-start", "run-end"]
    assert scripted_stt.transcribe_requests == ["en"]
    assert scripted.chat_requests == []


# HA's wyoming TTS returns on a lost connection with its wave writer still open; the
# writer's __del__ then fails on the closed buffer (harmless, HA's code).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("failure", ["down", "dies"])
async def test_tts_server_failure_after_the_turn(
    hass: HomeAssistant,
    *,
    hass_client_no_auth: ClientSessionGenerator,
    tts_pipeline: str,
    scripted_tts: ScriptedWyoming,
    scripted: ScriptedServer,
    spoken: bytes,
    satellite: str,
    failure: str,
) -> None:
    """The turn happened (the light is on); the reply cannot be heard. No pipeline error
    reports it: tts-end carries a URL, and fetching it fails. Fetched by its media id,
    2025.4 asks the server again (a failure is not cached); 2026.10 gives the run's
    stream, whose one synthesis failed."""
    if failure == "down":
        await scripted_tts.stop()
    else:
        scripted_tts.die_during = "synthesize"  # one chunk of audio, then gone
    scripted.add(tool_calls(("HassTurnOn", {"name": "Kitchen Light"})), text(REPLY))

    run = await async_run_pipeline(
        hass, tts_pipeline, spoken, device_id=satellite, tts_audio_output="wav"
    )

    assert state(hass, KITCHEN) == "on"
    assert len(scripted.chat_requests) == 2
    assert run.milestones[-4:] == ["intent-end", "tts-start", "tts-end", "run-end"]
    assert "error" not in run.types
    # What a satellite gets from the URL, then what HA's own media source says.
    client = await hass_client_no_auth()
    response = await client.get(tts_url(run))
    assert response.status == HTTPStatus.INTERNAL_SERVER_ERROR
    # HA names the engine by its entity id (2025.4) or by its name (2026.10).
    no_tts = r"No TTS from (tts\.scripted_tts|scripted-tts) for 'The kitchen light is on\.'"
    with pytest.raises(HomeAssistantError, match=no_tts):
        await async_run_audio(hass, run)
    # 2025.4: a failed synthesis leaves no cache entry, so each fetch asks the server
    # again. 2026.10: the stream keeps its failure; the server was asked once.
    fetches = 1 if VOICE.media_id_is_stream else 2
    assert [s.text for s in scripted_tts.synthesized] == (
        [] if failure == "down" else [REPLY] * fetches
    )


async def test_tts_error_event_hangs_the_audio_or_fails_it(
    hass: HomeAssistant,
    *,
    hass_client_no_auth: ClientSessionGenerator,
    tts_pipeline: str,
    scripted_tts: ScriptedWyoming,
    scripted: ScriptedServer,
    spoken: bytes,
    satellite: str,
) -> None:
    """A Wyoming TTS server that answers with an `error` event; the run ends normally
    either way. HA 2025.4's wyoming TTS skips the event and waits for audio: a satellite
    fetching the reply waits as long as the server is silent. 2026.10's ends on it: the
    fetch fails at once (HTTP 500), with the server's message."""
    scripted_tts.error_during = "synthesize"
    scripted.add(tool_calls(("HassTurnOn", {"name": "Kitchen Light"})), text(REPLY))

    run = await async_run_pipeline(
        hass, tts_pipeline, spoken, device_id=satellite, tts_audio_output="wav"
    )

    assert state(hass, KITCHEN) == "on"
    assert run.milestones[-3:] == ["tts-start", "tts-end", "run-end"]
    client = await hass_client_no_auth()
    if VOICE.wyoming_tts_errors:
        async with asyncio.timeout(HANG_S):
            response = await client.get(tts_url(run))
        assert response.status == HTTPStatus.INTERNAL_SERVER_ERROR
        with pytest.raises(HomeAssistantError, match=r"Wyoming service: scripted failure"):
            async with asyncio.timeout(HANG_S):
                await async_run_audio(hass, run)
    else:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(HANG_S):
                await client.get(tts_url(run))
    assert [s.text for s in scripted_tts.synthesized] == [REPLY]
