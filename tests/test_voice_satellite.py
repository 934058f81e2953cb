"""A real voice satellite, end to end: wyoming-satellite 1.0.0 -> Home Assistant -> Majordome.

The satellite is the real program (its own venv, scripts/setup-voice) with a fake mic
(piper's recording of the command, in real time), a fake local wake word (a file we
touch) and a speaker that is a file. Home Assistant's own `wyoming` integration
connects to it as to any satellite and runs the preferred pipeline: the real whisper
STT, Majordome on the scripted model, the real piper TTS, whose answer (converted by
ffmpeg) goes back to the satellite's speaker. The speech servers start once per run
(conftest).

Home Assistant 2025.4 sends the answer's audio once the agent has answered. 2026.10 may
start sooner: a reply past 60 characters is spoken from the chat log's deltas as they
stream (pipeline_helpers.VOICE.streams_replies), and HA's wyoming satellite starts
sending its audio then, before the agent has finished. Either way the speaker must get
the whole answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterator
import os
from pathlib import Path
import sys
from typing import Any

import numpy as np
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events
import pytest_socket

from custom_components.majordome.const import EVENT_UTTERANCE_IGNORED
from custom_components.majordome.memory import Onboarding
from devtools.satellite import SPEAKER_RATE, SatelliteUnavailable, WyomingSatellite
from devtools.scripted_server import ScriptedServer, text, tool_calls
from devtools.voice_servers import (
    STT_RATE,
    PiperServer,
    WhisperServer,
    async_transcribe,
    resample_pcm16,
    silence,
    spoken_command,
)
from homeassistant.components.assist_pipeline.pipeline import KEY_ASSIST_PIPELINE
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er

from .helpers import user_messages
from .pipeline_helpers import (
    VOICE,
    VOICE_ENTRY_OPTIONS,
    async_add_wyoming,
    async_add_wyoming_entry,
    async_create_pipeline,
    async_setup_voice,
    state,
    words,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
KITCHEN = "light.kitchen_light"
REPLY = "The kitchen light is on."
# Past the 60 characters after which 2026.10's pipeline speaks the reply as it streams.
LONG_REPLY = "The kitchen light is on, and every other light in the house is off."
HALLUCINATION = "Thanks for watching!"  # what whisper makes of noise, said outright
SATELLITE_ENTITY = "assist_satellite.test_sat"
TURN_TIMEOUT_S = 30.0  # wake word -> the answer played


@pytest.fixture(scope="module")
def spoken_hallucination(piper_server: PiperServer) -> bytes:
    """A classic whisper hallucination, spoken clearly so that whisper hears it."""
    pytest_socket.enable_socket()  # a module fixture may first run after a test's guard
    return spoken_command(piper_server, HALLUCINATION)


# --- the satellite process and Home Assistant around it ----------------------------------


@pytest.fixture
def satellite_process(
    socket_enabled: None, tmp_path: Path, spoken_kitchen_command: bytes
) -> Iterator[WyomingSatellite]:
    """The real wyoming-satellite on 127.0.0.1; its mic says the command when triggered."""
    satellite = WyomingSatellite(tmp_path / "satellite", spoken_kitchen_command)
    try:
        satellite.start()
    except SatelliteUnavailable as err:
        pytest.skip(str(err))
    try:
        yield satellite
    finally:
        satellite.stop()


@pytest.fixture
def entry_options() -> dict[str, Any]:
    """The voice tests' options."""
    return dict(VOICE_ENTRY_OPTIONS)


@pytest.fixture
async def pipeline(
    hass: HomeAssistant,
    *,
    socket_enabled: None,
    tmp_path: Path,
    entry: MockConfigEntry,
    piper_server: PiperServer,
    whisper_server: WhisperServer,
) -> None:
    """The demo house and the preferred pipeline, which satellites use:
    whisper -> Majordome -> piper."""
    await async_create_pipeline(
        hass,
        conversation_engine=await async_setup_voice(hass, entry, tmp_path),
        stt_engine=await async_add_wyoming(hass, whisper_server.port, "stt"),
        tts_engine=await async_add_wyoming(hass, piper_server.port, "tts"),
        tts_voice="en_US-joe-medium",  # piper lists all its voices; only this one is installed
        preferred=True,
    )


@pytest.fixture
async def satellite(
    hass: HomeAssistant, pipeline: None, satellite_process: WyomingSatellite
) -> AsyncGenerator[tuple[WyomingSatellite, str]]:
    """The satellite, connected to Home Assistant and waiting for its wake word.

    Yields it with its device id in Home Assistant.
    """
    sat_entry = await async_add_wyoming_entry(hass, satellite_process.port)
    try:
        entity = er.async_get(hass).async_get(SATELLITE_ENTITY)
        assert entity is not None, [e.entity_id for e in er.async_get(hass).entities.values()]
        assert entity.device_id is not None
        await satellite_process.async_wait_armed()  # HA connected and sent RunSatellite
        yield satellite_process, entity.device_id
    finally:
        # Home Assistant lets go first: a dead satellite would make it retry on a timer.
        assert await hass.config_entries.async_unload(sat_entry.entry_id)
        await hass.async_block_till_done()


def pipeline_runs(hass: HomeAssistant) -> list[list[tuple[str, dict[str, Any]]]]:
    """Every pipeline run Home Assistant recorded: (event type, data) lists."""
    runs: list[list[tuple[str, dict[str, Any]]]] = []
    for by_run in hass.data[KEY_ASSIST_PIPELINE].pipeline_debug.values():
        runs.extend([(str(e.type), e.data or {}) for e in run.events] for run in by_run.values())
    return runs


def runs_text(hass: HomeAssistant) -> str:
    """The recorded pipeline runs, for a failure message."""
    lines = ["", "--- pipeline runs ---"]
    for number, run in enumerate(pipeline_runs(hass)):
        lines.extend(f"  {number} {kind} {str(data)[:300]}" for kind, data in run)
    return "\n".join(lines)


def explain(hass: HomeAssistant, satellite: WyomingSatellite) -> str:
    """What happened, for a failure message: the pipeline runs and the satellite's log."""
    return runs_text(hass) + satellite.stderr_tail()


async def async_wait_until(
    hass: HomeAssistant, satellite: WyomingSatellite, condition: Callable[[], bool], what: str
) -> None:
    """Wait up to TURN_TIMEOUT_S; a timeout fails with the pipeline runs and the log."""
    try:
        await satellite.async_wait(condition, what, TURN_TIMEOUT_S)
    except (TimeoutError, RuntimeError) as err:
        raise AssertionError(f"{err}{runs_text(hass)}") from None


def level(pcm: bytes) -> float:
    """RMS of s16le PCM, in full-scale units (0..1)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


# --- tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("reply", [REPLY, LONG_REPLY], ids=["short", "long"])
async def test_spoken_command_through_the_satellite(
    hass: HomeAssistant,
    satellite: tuple[WyomingSatellite, str],
    scripted: ScriptedServer,
    whisper_server: WhisperServer,
    reply: str,
) -> None:
    """The short reply is spoken from the agent's final speech; the long one, where the
    pipeline streams (2026.10), from the deltas, its audio sent as soon as it starts."""
    sat, device_id = satellite
    # The long reply streams in three pieces, as a model writes it.
    scripted.add(
        tool_calls(("HassTurnOn", {"name": "Kitchen Light"})), text(*reply.partition(", "))
    )
    assert state(hass, KITCHEN) == "off"

    sat.trigger()  # the wake word; the mic then says the command
    await async_wait_until(hass, sat, lambda: sat.played >= 1, "the answer played")

    # Home Assistant heard it, Majordome was asked, the light is on.
    assert "kitchen light" in words(" ".join(sat.transcripts())), explain(hass, sat)
    assert state(hass, KITCHEN) == "on", explain(hass, sat)
    assert scripted.chat_requests, explain(hass, sat)
    assert "kitchen light" in words(user_messages(scripted.chat_requests[0])[-1])
    # What HA told the satellite it would say: the final speech, even when streamed.
    assert sat.spoken_texts() == [reply]
    # The turn came from the satellite's device (Majordome screens such turns as voice).
    [run] = pipeline_runs(hass)
    [intent_start] = [data for kind, data in run if kind == "intent-start"]
    assert intent_start["device_id"] == device_id
    assert intent_start["engine"].startswith("conversation.")
    streamed = any(
        kind == "intent-progress" and data.get("tts_start_streaming") for kind, data in run
    )
    assert streamed is (VOICE.streams_replies and len(reply) > 60), explain(hass, sat)

    # The speaker got the answer: piper's voice, converted to 22.05 kHz s16le mono.
    audio = sat.speaker_audio()
    seconds = len(audio) / 2 / SPEAKER_RATE
    assert seconds > 0.5, f"{len(audio)} bytes"
    assert level(audio) > 0.01, level(audio)
    heard = await async_transcribe(
        whisper_server.host,
        whisper_server.port,
        resample_pcm16(audio, SPEAKER_RATE, STT_RATE) + silence(0.5),
    )
    assert "kitchen" in words(heard), heard
    if reply == LONG_REPLY:
        assert "house" in words(heard), heard  # its end too
    # (assist_satellite.test_sat stays "responding": 1.0.0 never sends `played`.)


async def test_the_introduction_question_is_heard_through_the_satellite(
    hass: HomeAssistant,
    satellite: tuple[WyomingSatellite, str],
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    whisper_server: WhisperServer,
) -> None:
    """Asked once, after the reply: added by Majordome after the model's stream, it must
    be streamed too, or a 2026.10 pipeline (which then speaks the deltas) never says it."""
    sat, _ = satellite
    entry.runtime_data.memory.update(onboarding=Onboarding.PENDING)
    scripted.add(tool_calls(("HassTurnOn", {"name": "Kitchen Light"})), text(REPLY))

    sat.trigger()
    await async_wait_until(hass, sat, lambda: sat.played >= 1, "the answer played")

    assert state(hass, KITCHEN) == "on", explain(hass, sat)
    [spoken] = sat.spoken_texts()
    assert spoken.startswith(REPLY), spoken
    assert "household" in words(spoken), spoken
    heard = await async_transcribe(
        whisper_server.host,
        whisper_server.port,
        resample_pcm16(sat.speaker_audio(), SPEAKER_RATE, STT_RATE) + silence(0.5),
    )
    assert "kitchen" in words(heard), heard
    assert "household" in words(heard), heard  # the question, after the reply


async def test_hallucination_through_the_satellite_is_screened(
    hass: HomeAssistant,
    satellite: tuple[WyomingSatellite, str],
    scripted: ScriptedServer,
    spoken_hallucination: bytes,
) -> None:
    """What the satellite transcribed is screened: no model call, no answer spoken."""
    sat, device_id = satellite
    ignored = async_capture_events(hass, EVENT_UTTERANCE_IGNORED)

    sat.trigger(spoken_hallucination)
    await async_wait_until(
        hass,
        sat,
        lambda: any(kind == "run-end" for run in pipeline_runs(hass) for kind, _ in run),
        "the pipeline run's end",
    )
    await hass.async_block_till_done()

    assert [event.data["device_id"] for event in ignored] == [device_id], explain(hass, sat)
    # What was heard stays out of the event (the recorder stores it); the run has it.
    assert "text" not in ignored[0].data
    [transcript] = [
        data["stt_output"]["text"]
        for run in pipeline_runs(hass)
        for kind, data in run
        if kind == "stt-end"
    ]
    assert ignored[0].data["length"] == len(transcript)
    assert "watching" in words(transcript)
    assert scripted.chat_requests == []
    assert state(hass, KITCHEN) == "off"
    assert sat.spoken_texts() == []
    assert sat.played == 0
    assert sat.speaker_audio() == b""


# --- the process itself ----------------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


async def wait_gone(pgid: int, within_s: float = 10.0) -> None:
    """Poll until the process group is empty."""
    for _ in range(int(within_s / 0.1)):
        if not group_members(pgid):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"still running after {within_s} s: {group_members(pgid)}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG")
async def test_stop_leaves_nothing_behind(satellite_process: WyomingSatellite) -> None:
    pid = satellite_process.pid
    assert pid is not None
    members = group_members(pid)  # the satellite, its mic and its wake word
    assert len(members) >= 3, members
    satellite_process.stop()
    assert satellite_process.pid is None
    # stop() SIGKILLs what is left of the group as it returns; a member may still be
    # exiting for a moment then (seen: state R, PF_EXITING, no memory left), never longer.
    await wait_gone(pid, within_s=2.0)
    satellite_process.stop()  # idempotent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG")
async def test_satellite_dies_with_its_parent(socket_enabled: None, tmp_path: Path) -> None:
    """A parent killed outright (no atexit, no stop()) takes the satellite and its commands."""
    script = (
        "import sys, time\n"
        "from devtools.satellite import WyomingSatellite\n"
        "satellite = WyomingSatellite(sys.argv[1], bytes(3200))\n"
        "satellite.start()\n"
        "print(satellite.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        str(tmp_path),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert parent.stdout is not None
        async with asyncio.timeout(40):  # may run scripts/setup-voice (cached: ~1 s)
            line = await parent.stdout.readline()
        if not line:
            pytest.skip("the satellite could not start (see scripts/setup-voice)")
        pid = int(line)
        assert len(group_members(pid)) >= 3
        parent.kill()
        await parent.wait()
        await wait_gone(pid)
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
