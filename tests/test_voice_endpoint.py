"""The streaming voice endpoint, over a real websocket on Home Assistant's HTTP server.

The model is the scripted OpenAI-compatible server and STT/TTS are a scripted
Wyoming server (real protocol, real TCP), so what is said and when is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Coroutine, Iterator
import contextlib
from contextlib import contextmanager
import json
import math
from pathlib import Path
import random
import socket
import threading
import time
from typing import Any
from unittest.mock import ANY

import aiohttp
from aiohttp.test_utils import TestClient
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockUser,
    async_capture_events,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.majordome import compat
from custom_components.majordome.const import (
    CONF_LOCAL_INTENTS,
    CONF_STT_SERVER,
    CONF_TTS_SERVER,
    CONF_TTS_VOICE,
    DOMAIN,
    EVENT_UTTERANCE_IGNORED,
    VOICE_URL,
)
from custom_components.majordome.memory import Onboarding
from custom_components.majordome.voice import endpoint, wyoming_client
from custom_components.majordome.voice.wyoming_client import SpeechErrorKind
from devtools.house import async_setup_house
from devtools.scripted_server import ScriptedServer, endless, error, text
from devtools.scripted_wyoming import ScriptedWyoming
from homeassistant.components import conversation
from homeassistant.config_entries import ConfigSubentry
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import Unauthorized
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.chat_session import ChatSession
from homeassistant.setup import async_setup_component

from .helpers import MODEL, agent_data, running_wyoming, user_messages
from .pipeline_helpers import VOICE_ENTRY_OPTIONS

THREE_SENTENCES = ("The kitchen ", "light is on. It is 21.5 ", "degrees inside. Anything else?")
TRANSLATIONS = Path(__file__).parent.parent / "custom_components/majordome/translations"
SPEECH_ERRORS = {str(kind) for kind in SpeechErrorKind}
# An error must be reported well before any of the client's own deadlines.
QUICKLY_S = 3.0


def spoken_message(key: str, language: str = "en") -> str:
    """A sentence of the `exceptions` translations, as the user hears it."""
    strings = json.loads((TRANSLATIONS / f"{language}.json").read_text(encoding="utf-8"))
    return str(strings["exceptions"][key]["message"])


@pytest.fixture
async def speech_server(socket_enabled: None) -> AsyncGenerator[ScriptedWyoming]:
    """STT and TTS in one scripted Wyoming server."""
    async with running_wyoming() as server:
        yield server


def voice_options(stt: str | None, tts: str | None) -> dict[str, Any]:
    """Voice on, background memory off (it would queue extra model requests)."""
    options = {**VOICE_ENTRY_OPTIONS, CONF_TTS_VOICE: "en_US-test-medium"}
    if stt is not None:
        options[CONF_STT_SERVER] = stt
    if tts is not None:
        options[CONF_TTS_SERVER] = tts
    return options


@pytest.fixture
def entry_options(request: pytest.FixtureRequest, speech_server: ScriptedWyoming) -> dict[str, Any]:
    """One server for STT and TTS (overrides from indirect parametrization)."""
    options = voice_options(speech_server.address, speech_server.address)
    return {**options, **getattr(request, "param", {})}


class VoiceClient:
    """The client side of the endpoint's protocol, recording everything received."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.events: list[dict[str, Any]] = []
        self.audio: list[bytes] = []
        # Everything in arrival order, with its monotonic arrival time.
        self.log: list[tuple[float, dict[str, Any] | bytes]] = []

    async def send(self, **message: Any) -> None:
        await self.socket.send_str(json.dumps(message))

    async def authenticate(self, access_token: str) -> dict[str, Any]:
        """Answer auth_required with the token; the ready event that follows."""
        await self.until("auth_required")
        await self.send(type="auth", access_token=access_token)
        await self.until("auth_ok")
        return await self.until("ready")

    async def speak(self, chunks: int = 3, language: str | None = "en") -> None:
        """An utterance: start, 100 ms audio chunks, end."""
        await self.send(type="start", language=language)
        for _ in range(chunks):
            await self.socket.send_bytes(bytes(3200))  # 100 ms of 16 kHz mono s16le
        await self.send(type="end")

    async def receive(self, wait_s: float = 10) -> dict[str, Any] | bytes:
        message = await self.socket.receive(timeout=wait_s)
        now = time.monotonic()
        if message.type is aiohttp.WSMsgType.BINARY:
            self.audio.append(message.data)
            self.log.append((now, message.data))
            return bytes(message.data)
        assert message.type is aiohttp.WSMsgType.TEXT, message
        event: dict[str, Any] = json.loads(message.data)
        self.events.append(event)
        self.log.append((now, event))
        return event

    async def until(self, kind: str, wait_s: float = 10) -> dict[str, Any]:
        """Read until an event of this type arrives; return it."""
        async with asyncio.timeout(wait_s):
            while True:
                item = await self.receive()
                if isinstance(item, dict) and item["type"] == kind:
                    return item

    async def quiet(self, seconds: float) -> None:
        """Assert that nothing at all arrives for this long."""
        arrived: list[Any] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = await self.receive(left)
            except TimeoutError:
                break
            arrived.append(item if isinstance(item, dict) else f"<{len(item)} bytes>")
        assert not arrived, arrived

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == kind]

    def mark(self) -> int:
        """A position in the log, to look at what came after it."""
        return len(self.log)

    def since(self, mark: int) -> list[dict[str, Any] | bytes]:
        return [item for _, item in self.log[mark:]]

    def time_of(self, kind: str, *, last: bool = False) -> float:
        times = [at for at, item in self.log if isinstance(item, dict) and item["type"] == kind]
        assert times, f"no {kind} event"
        return times[-1] if last else times[0]


async def assert_closed(socket: aiohttp.ClientWebSocketResponse) -> None:
    """The server closes the socket (and sends nothing else first)."""
    message = await socket.receive(timeout=5)
    assert message.type in {
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSING,
        aiohttp.WSMsgType.CLOSED,
    }, message


async def assert_auth_refused(
    client: TestClient[Any, Any], first: dict[str, Any] | str | bytes | None = None
) -> None:
    """A connection whose first message (or silence, with None) is refused, then closed."""
    async with client.ws_connect(VOICE_URL) as socket:
        assert (await socket.receive_json(timeout=5))["type"] == "auth_required"
        if isinstance(first, bytes):
            await socket.send_bytes(first)
        elif isinstance(first, str):
            await socket.send_str(first)
        elif first is not None:
            await socket.send_json(first)
        assert (await socket.receive_json(timeout=5))["type"] == "auth_invalid", first
        await assert_closed(socket)


@pytest.fixture
async def voice(
    hass_client_no_auth: ClientSessionGenerator, hass_access_token: str, entry: MockConfigEntry
) -> AsyncGenerator[VoiceClient]:
    """An authenticated connection to the endpoint (the household already introduced)."""
    entry.runtime_data.memory.update(onboarding=Onboarding.DONE)
    client = await hass_client_no_auth()
    async with client.ws_connect(VOICE_URL) as socket:
        voice = VoiceClient(socket)
        ready = await voice.authenticate(hass_access_token)
        assert ready["entry_id"] == entry.entry_id
        yield voice


def assistant_messages(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "assistant"]


def all_content(request: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content") or "") for m in request["messages"])


def assert_speech_error(event: dict[str, Any], kind: SpeechErrorKind, language: str = "en") -> None:
    assert event["type"] == "error"
    assert event["code"] in SPEECH_ERRORS
    assert event["code"] == kind
    assert event["message"] == spoken_message(str(kind), language)


async def speak_into_error(voice: VoiceClient, kind: SpeechErrorKind, language: str = "en") -> None:
    """An utterance answered, quickly, by one speech error of this kind."""
    async with asyncio.timeout(QUICKLY_S):
        await voice.speak(language=language)
        failure = await voice.until("error")
    assert_speech_error(failure, kind, language)


async def assert_answers(
    voice: VoiceClient, scripted: ScriptedServer, asked: str, reply: str
) -> dict[str, Any]:
    """A typed request gets the model's reply (the connection still works); its reply_end."""
    scripted.add(text(reply))
    await voice.send(type="text", text=asked)
    end = await voice.until("reply_end")
    assert end["text"] == reply
    return end


async def assert_answers_spoken(
    voice: VoiceClient,
    scripted: ScriptedServer,
    speech_server: ScriptedWyoming,
    said: str,
    reply: str,
    *,
    language: str = "en",
) -> None:
    """An utterance the server transcribes as `said` gets the model's reply."""
    speech_server.transcript = said
    scripted.add(text(reply))
    await voice.speak(language=language)
    assert (await voice.until("transcript"))["text"] == said
    assert (await voice.until("reply_end"))["text"] == reply


# --- Replies ------------------------------------------------------------------------


async def test_typed_request_is_spoken_sentence_by_sentence(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming
) -> None:
    scripted.add(text(*THREE_SENTENCES, chunk_delay_s=0.2))
    await voice.send(type="text", text="Is the kitchen light on?", language="en")
    end = await voice.until("reply_end")

    assert end["text"] == "".join(THREE_SENTENCES)
    sentences = [event["text"] for event in voice.of_type("sentence")]
    assert sentences == ["The kitchen light is on.", "It is 21.5 degrees inside.", "Anything else?"]
    assert [s.text for s in speech_server.synthesized] == sentences
    assert {s.voice for s in speech_server.synthesized} == {"en_US-test-medium"}
    assert voice.audio
    assert all(voice.audio)
    assert all(0.0 <= event["value"] <= 1.0 for event in voice.of_type("level"))
    assert max(event["value"] for event in voice.of_type("level")) > 0.3


async def test_the_oldest_agent_answers_unless_another_is_named(
    hass: HomeAssistant, voice: VoiceClient, scripted: ScriptedServer, entry: MockConfigEntry
) -> None:
    """The entry's voice servers speak for every agent; the one that answers can be named."""
    added = ConfigSubentry(**agent_data("other-model", VOICE_ENTRY_OPTIONS))
    hass.config_entries.async_add_subentry(entry, added)
    await hass.async_block_till_done()
    entry.runtime_data.memory.update(onboarding=Onboarding.DONE)  # reloaded: still known
    other = er.async_get(hass).async_get_entity_id(conversation.DOMAIN, DOMAIN, added.subentry_id)
    assert other is not None

    scripted.add(text("From the first."))
    await voice.send(type="text", text="Hello?")
    assert (await voice.until("reply_end"))["text"] == "From the first."
    assert scripted.chat_requests[-1]["model"] == MODEL

    scripted.add(text("From the other."))
    await voice.send(type="text", text="Hello again?", agent_id=other)
    assert (await voice.until("reply_end"))["text"] == "From the other."
    assert scripted.chat_requests[-1]["model"] == "other-model"


async def test_spoken_request_is_transcribed_then_answered(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming
) -> None:
    speech_server.transcript = "is the kitchen light on"
    scripted.add(text("It is on."))
    await voice.speak(chunks=5)
    transcript = await voice.until("transcript")
    await voice.until("reply_end")

    assert transcript["text"] == "is the kitchen light on"
    assert speech_server.audio_received == 5 * 3200
    assert scripted.chat_requests[-1]["messages"][-1]["content"] == "is the kitchen light on"
    assert [s.text for s in speech_server.synthesized] == ["It is on."]


@pytest.fixture
async def house(hass: HomeAssistant) -> None:
    """The demo house, set up before the HTTP server starts (it adds views)."""
    assert await async_setup_component(hass, "homeassistant", {})
    await async_setup_house(hass, "demo")


@pytest.mark.parametrize("entry_options", [{CONF_LOCAL_INTENTS: True}], indirect=True)
async def test_a_command_home_assistant_knows_is_answered_without_the_model(
    hass: HomeAssistant,
    house: None,
    voice: VoiceClient,
    scripted: ScriptedServer,
    speech_server: ScriptedWyoming,
) -> None:
    """The local stage at this door too: Home Assistant acts and its answer is spoken."""
    speech_server.transcript = "turn on the kitchen light"

    await voice.speak()
    end = await voice.until("reply_end")

    assert hass.states.get("light.kitchen_light").state == "on"
    assert end["text"]
    assert [s.text for s in speech_server.synthesized] == [end["text"]]
    assert scripted.chat_requests == []


async def test_a_sentence_added_after_the_stream_is_spoken_too(
    voice: VoiceClient,
    scripted: ScriptedServer,
    speech_server: ScriptedWyoming,
    entry: MockConfigEntry,
) -> None:
    """The introduction question is appended to the streamed reply: it is said last."""
    entry.runtime_data.memory.update(onboarding=Onboarding.PENDING)
    scripted.add(text("It is ", "on."))
    await voice.send(type="text", text="Is the kitchen light on?")
    end = await voice.until("reply_end")

    spoken = [s.text for s in speech_server.synthesized]
    assert spoken[0] == "It is on."
    assert len(spoken) >= 2
    assert end["text"].startswith("It is on. ")
    assert " ".join(spoken) == end["text"]


async def test_audio_events_frame_each_sentence_in_order(
    voice: VoiceClient, scripted: ScriptedServer
) -> None:
    scripted.add(text("The first lamp is on. ", "The second lamp is off. ", "The third is gone."))
    await voice.send(type="text", text="How are the lamps?")
    await voice.until("reply_end")

    # sentence i, audio_start i, (level i, <pcm>)..., audio_end i, then sentence i+1.
    shape: list[str] = []
    for _, item in voice.log:
        if isinstance(item, bytes):
            assert shape[-1] == "level"
            shape.append("pcm")
        elif item["type"] in {"sentence", "audio_start", "audio_end"}:
            shape.append(f"{item['type']} {item['index']}")
        elif item["type"] == "level":
            shape.append("level")
    compact = [s for s in shape if s not in {"level", "pcm"}]
    assert compact == [
        f"{kind} {i}" for i in range(3) for kind in ("sentence", "audio_start", "audio_end")
    ]
    start = voice.of_type("audio_start")[0]
    assert (start["rate"], start["width"], start["channels"]) == (22050, 2, 1)
    assert shape.count("pcm") == len(voice.audio) == shape.count("level")


async def test_french_reply_is_cut_at_real_sentence_ends(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming
) -> None:
    scripted.add(
        text(
            "Il fait 21,",
            "5 degrés dans le salon. Le rendez-vous est à 10 h ",
            "30. Voulez-vous ",
            "autre chose ?",
            chunk_delay_s=0.05,
        )
    )
    await voice.send(type="text", text="Quelle température fait-il ?", language="fr")
    end = await voice.until("reply_end")

    expected = [
        "Il fait 21,5 degrés dans le salon.",
        "Le rendez-vous est à 10 h 30.",
        "Voulez-vous autre chose ?",
    ]
    assert [e["text"] for e in voice.of_type("sentence")] == expected
    assert [e["index"] for e in voice.of_type("sentence")] == [0, 1, 2]
    assert [s.text for s in speech_server.synthesized] == expected
    assert [e["index"] for e in voice.of_type("audio_end")] == [0, 1, 2]
    assert end["text"] == " ".join(expected)
    assert scripted.chat_requests[0]["messages"][-1]["content"] == "Quelle température fait-il ?"


async def test_first_sentence_is_synthesized_before_the_model_finishes(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming
) -> None:
    """The model stops after its first sentence until that sentence was heard: only a
    reply spoken sentence by sentence gets there (no timing involved)."""
    reply = text("The kitchen light is on. ", "It is warm. ", "Anything ", "else?")
    reply.resume, reply.pause_after = asyncio.Event(), 2
    scripted.add(reply)
    await voice.send(type="text", text="Is the kitchen light on?")

    async with asyncio.timeout(10):  # (a reply spoken only once whole would never get here)
        while not isinstance(await voice.receive(), bytes):
            pass
    assert [s.text for s in speech_server.synthesized] == ["The kitchen light is on."]
    assert voice.of_type("reply_end") == []
    reply.resume.set()
    end = await voice.until("reply_end")

    assert end["text"] == "The kitchen light is on. It is warm. Anything else?"
    assert [s.text for s in speech_server.synthesized][1:] == ["It is warm.", "Anything else?"]
    assert end["timings"]["first_audio_s"] >= 0


# --- Authentication -------------------------------------------------------------------


async def test_wrong_token_is_refused_and_closed(
    hass_client_no_auth: ClientSessionGenerator, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    await assert_auth_refused(
        await hass_client_no_auth(), {"type": "auth", "access_token": "not-a-token"}
    )
    assert scripted.chat_requests == []


async def test_no_auth_in_time_closes(
    hass_client_no_auth: ClientSessionGenerator,
    entry: MockConfigEntry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(endpoint, "AUTH_TIMEOUT", 0.2)
    client = await hass_client_no_auth()
    started = time.monotonic()
    await assert_auth_refused(client)  # says nothing
    assert time.monotonic() - started < QUICKLY_S


UNAUTHENTICATED_FIRST_MESSAGES: list[dict[str, Any] | str | bytes] = [
    {"type": "text", "text": "Turn on the kitchen light."},
    {"type": "start", "language": "en"},
    {"type": "auth"},
    {"type": "auth", "access_token": None},
    {"type": "auth", "access_token": ["a", "list"]},
    "not json",
    b"\x00\x01" * 100,
]


async def test_unauthenticated_client_never_reaches_the_agent(
    hass_client_no_auth: ClientSessionGenerator,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    speech_server: ScriptedWyoming,
) -> None:
    scripted.add(text("I should never be asked."))
    speech_server.transcript = "turn on the kitchen light"
    client = await hass_client_no_auth()
    for first in UNAUTHENTICATED_FIRST_MESSAGES:
        await assert_auth_refused(client, first)
    await asyncio.sleep(0.1)
    assert scripted.chat_requests == []
    assert speech_server.transcribe_requests == []
    assert speech_server.audio_received == 0


async def test_inactive_user_token_is_refused(
    hass_client_no_auth: ClientSessionGenerator,
    hass_access_token: str,
    hass_admin_user: MockUser,
    entry: MockConfigEntry,
) -> None:
    hass_admin_user.is_active = False
    await assert_auth_refused(
        await hass_client_no_auth(), {"type": "auth", "access_token": hass_access_token}
    )


async def test_bearer_header_skips_the_auth_message(
    hass_client: ClientSessionGenerator,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    hass_admin_user: MockUser,
) -> None:
    entry.runtime_data.memory.update(onboarding=Onboarding.DONE)
    scripted.add(text("It is on."))
    client = await hass_client()
    async with client.ws_connect(VOICE_URL) as socket:
        voice = VoiceClient(socket)
        ready = await voice.receive()
        assert ready == {"type": "ready", "entry_id": entry.entry_id, "stt": True, "tts": True}
        await voice.send(type="text", text="Is the light on?")
        end = await voice.until("reply_end")
    assert end["text"] == "It is on."
    assert not voice.of_type("auth_required")


async def test_a_bad_bearer_header_falls_back_to_the_auth_message(
    hass_client: ClientSessionGenerator, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    await assert_auth_refused(
        await hass_client("not-a-token"), {"type": "auth", "access_token": "still-not-a-token"}
    )
    assert scripted.chat_requests == []


async def test_a_revoked_login_closes_the_connection(
    hass: HomeAssistant,
    voice: VoiceClient,
    hass_access_token: str,
    scripted: ScriptedServer,
    speech_server: ScriptedWyoming,
) -> None:
    """Like /api/websocket: the connection ends with its login, and its turn with it."""
    refresh_token = hass.auth.async_validate_access_token(hass_access_token)
    assert refresh_token is not None
    scripted.add(endless("Blah. "))
    await voice.send(type="text", text="Talk to me.")
    await voice.until("reply_delta")
    hass.auth.async_remove_refresh_token(refresh_token)
    async with asyncio.timeout(QUICKLY_S):
        while (message := await voice.socket.receive()).type in {
            aiohttp.WSMsgType.TEXT,
            aiohttp.WSMsgType.BINARY,
        }:
            pass
    assert message.type in {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED}
    await scripted.wait_for_streams_ended(1, timeout_s=QUICKLY_S)


async def test_a_refused_login_counts_towards_an_ip_ban(
    hass_client_no_auth: ClientSessionGenerator,
    entry: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counted by Home Assistant's own `process_wrong_login`, which bans past its threshold."""
    monkeypatch.setattr(endpoint, "AUTH_TIMEOUT", 0.2)
    client = await hass_client_no_auth()
    for first in ({"type": "auth", "access_token": "not-a-token"}, "[" * 100_000, None):
        caplog.clear()
        await assert_auth_refused(client, first)
        assert [
            record.message
            for record in caplog.records
            if record.name == "homeassistant.components.http.ban"
        ] == [ANY], first
        assert "Login attempt or request with invalid authentication" in caplog.text
        assert not [r for r in caplog.records if r.levelname in {"ERROR", "CRITICAL"}]


# --- What is not sent to the model ----------------------------------------------------


@pytest.mark.parametrize(
    ("hallucination", "language"),
    [("Thank you.", "en"), ("Sous-titres réalisés par la communauté d'Amara.org", "fr")],
)
async def test_hallucinated_transcript_is_ignored_and_leaves_no_trace(
    *,
    hass: HomeAssistant,
    voice: VoiceClient,
    scripted: ScriptedServer,
    speech_server: ScriptedWyoming,
    hallucination: str,
    language: str,
) -> None:
    ignored_events = async_capture_events(hass, EVENT_UTTERANCE_IGNORED)
    speech_server.transcript = hallucination
    await voice.speak(language=language)
    transcript = await voice.until("transcript")
    ignored = await voice.until("ignored")

    assert transcript["text"] == hallucination
    assert ignored["text"] == hallucination
    assert scripted.chat_requests == []
    assert speech_server.synthesized == []
    assert not voice.of_type("sentence")
    assert voice.audio == []
    await hass.async_block_till_done()
    assert len(ignored_events) == 1
    assert ignored_events[0].data["length"] == len(hallucination)
    assert ignored_events[0].data["reason"] == "hallucination"

    # The next, real request: its history does not hold the hallucination.
    await assert_answers_spoken(
        voice,
        scripted,
        speech_server,
        "turn on the kitchen light",
        "The kitchen light is on.",
        language=language,
    )
    assert len(scripted.chat_requests) == 1
    assert user_messages(scripted.chat_requests[0]) == ["turn on the kitchen light"]
    assert hallucination not in all_content(scripted.chat_requests[0])
    assert [s.text for s in speech_server.synthesized] == ["The kitchen light is on."]


@pytest.mark.parametrize("said", ["Stop.", "Arrête !"])
async def test_spoken_stop_is_not_sent_to_the_model(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming, said: str
) -> None:
    speech_server.transcript = said
    await voice.speak()
    assert (await voice.until("transcript"))["text"] == said
    await voice.until("stopped")
    await voice.quiet(0.2)
    assert scripted.chat_requests == []
    assert speech_server.synthesized == []


async def test_typed_stop_is_not_sent_to_the_model(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming
) -> None:
    await voice.send(type="text", text="Stop")
    await voice.until("stopped")
    await voice.send(type="stop")
    await voice.until("stopped")
    await voice.quiet(0.2)
    assert scripted.chat_requests == []
    assert speech_server.synthesized == []
    # Nothing was being said: nothing was interrupted.
    assert not voice.of_type("interrupted")


async def test_empty_typed_text_is_ignored(voice: VoiceClient, scripted: ScriptedServer) -> None:
    for typed in ("", " \n\t "):
        await voice.send(type="text", text=typed)
        assert (await voice.until("ignored"))["text"] == typed
    await voice.quiet(0.2)
    assert scripted.chat_requests == []


async def test_empty_transcript_is_ignored(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming
) -> None:
    speech_server.transcript = ""
    await voice.speak()
    assert (await voice.until("transcript"))["text"] == ""
    await voice.until("ignored")
    assert scripted.chat_requests == []


# --- Stopping and barging in -------------------------------------------------------------

LONG_QUESTION = "Tell me three things."
LONG_REPLY = ("First sentence of the reply. ", "Second sentence of the reply. ", "Third one.")


async def hear_long_reply_start(
    voice: VoiceClient,
    scripted: ScriptedServer,
    speech_server: ScriptedWyoming,
    *,
    synth_delay_s: float = 0.2,
    chunk_delay_s: float = 0.0,
) -> None:
    """Ask LONG_QUESTION; return when the first sentence of LONG_REPLY has been heard.

    With synth_delay_s per synthesis, the rest of the reply is still to be said then.
    """
    speech_server.synth_delay_s = synth_delay_s
    scripted.add(text(*LONG_REPLY, chunk_delay_s=chunk_delay_s))
    await voice.send(type="text", text=LONG_QUESTION)
    await voice.until("audio_end")


def assert_history_after_long_reply(scripted: ScriptedServer, asked: str) -> None:
    """The last request carried the whole first exchange, then `asked`."""
    history = scripted.chat_requests[-1]
    assert user_messages(history) == [LONG_QUESTION, asked]
    assert assistant_messages(history) == ["".join(LONG_REPLY)]


async def test_stop_while_speaking_silences_the_reply_but_keeps_the_turn(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming
) -> None:
    await hear_long_reply_start(voice, scripted, speech_server)
    await voice.send(type="stop")
    await voice.until("interrupted")
    after = voice.mark()
    await voice.until("stopped")
    await voice.quiet(0.5)  # longer than a synthesis: the reply would have gone on

    late = [
        item
        for item in voice.since(after)
        if isinstance(item, bytes)
        or item["type"] in {"sentence", "audio_start", "level", "audio_end", "reply_end"}
    ]
    assert late == []
    assert "Third one." not in [s.text for s in speech_server.synthesized]
    assert not voice.of_type("reply_end")

    # The turn was stored whole: the next request carries the first exchange.
    speech_server.synth_delay_s = 0
    await assert_answers(voice, scripted, "Thanks, that is enough.", "You are welcome.")
    assert_history_after_long_reply(scripted, "Thanks, that is enough.")


async def test_spoken_stop_while_speaking_interrupts(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming
) -> None:
    await hear_long_reply_start(voice, scripted, speech_server)
    speech_server.transcript = "Stop."
    await voice.speak()
    await voice.until("interrupted")  # at "start", as soon as the user speaks
    after = voice.mark()
    await voice.until("stopped")
    await voice.quiet(0.5)
    assert [
        item
        for item in voice.since(after)
        if isinstance(item, bytes) or item["type"] not in {"transcript", "stopped"}
    ] == []
    assert len(scripted.chat_requests) == 1
    assert "Third one." not in [s.text for s in speech_server.synthesized]


async def test_barge_in_silences_the_reply_and_answers_the_new_utterance(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming
) -> None:
    await hear_long_reply_start(voice, scripted, speech_server)

    speech_server.synth_delay_s = 0
    speech_server.transcript = "what time is it"
    scripted.add(text("It is ten.", " Anything else?"))
    await voice.send(type="start", language="en")
    await voice.until("interrupted")
    after = voice.mark()
    for _ in range(3):
        await voice.socket.send_bytes(bytes(3200))
    await voice.send(type="end")
    assert (await voice.until("transcript"))["text"] == "what time is it"
    end = await voice.until("reply_end")
    await voice.quiet(0.5)  # nothing of the old reply comes after

    assert end["text"] == "It is ten. Anything else?"
    new_reply = voice.since(after)
    sentences = [
        item["text"] for item in new_reply if isinstance(item, dict) and item["type"] == "sentence"
    ]
    assert sentences == ["It is ten.", "Anything else?"]
    # The new reply's sentences are numbered from 0 and framed by their own events.
    assert [
        item["index"]
        for item in new_reply
        if isinstance(item, dict) and item["type"] == "audio_start"
    ] == [0, 1]
    assert "Third one." not in [s.text for s in speech_server.synthesized]
    assert speech_server.audio_received == 3 * 3200
    assert_history_after_long_reply(scripted, "what time is it")


async def test_typed_text_while_speaking_also_interrupts(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming
) -> None:
    await hear_long_reply_start(voice, scripted, speech_server)
    scripted.add(text("Sure."))
    await voice.send(type="text", text="Something else.")
    await voice.until("interrupted")
    after = voice.mark()
    end = await voice.until("reply_end")
    assert end["text"] == "Sure."
    sentences = [
        i["text"] for i in voice.since(after) if isinstance(i, dict) and i["type"] == "sentence"
    ]
    assert sentences == ["Sure."]


async def test_the_chat_session_is_opened_for_the_user(
    voice: VoiceClient,
    scripted: ScriptedServer,
    hass_admin_user: MockUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The user's context opens the session: Home Assistant 2026.11 makes them its owner."""
    owners: list[str | None] = []
    open_session = compat.chat_session_for

    @contextmanager
    def recording(
        hass: HomeAssistant, conversation_id: str | None, context: Context
    ) -> Iterator[ChatSession]:
        owners.append(context.user_id)
        with open_session(hass, conversation_id, context) as session:
            yield session

    monkeypatch.setattr(compat, "chat_session_for", recording)
    await assert_answers(voice, scripted, "Is the light on?", "It is on.")
    await assert_answers(voice, scripted, "And the fan?", "It is off.")
    assert owners == [hass_admin_user.id, hass_admin_user.id]


class _Busy(Exception):
    """Stands for Home Assistant 2026.11's ConversationBusyError, on every release."""


@pytest.fixture
def busy_for(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The endpoint's next N turns find the conversation busy (another client's turn).

    The returned list holds N; set it to change how many. Like 2026.11, the error is
    raised when the turn opens the conversation's chat log.
    """
    remaining = [0]
    open_chat_log = conversation.async_get_chat_log

    @contextmanager
    def busy_chat_log(*args: Any, **kwargs: Any) -> Iterator[conversation.ChatLog]:
        if kwargs.get("chat_log_delta_listener") is not None and remaining[0] > 0:
            remaining[0] -= 1
            raise _Busy("This conversation is busy with another message")
        with open_chat_log(*args, **kwargs) as chat_log:
            yield chat_log

    monkeypatch.setattr(compat, "BUSY_ERRORS", (*compat.BUSY_ERRORS, _Busy))
    monkeypatch.setattr(conversation, "async_get_chat_log", busy_chat_log)
    monkeypatch.setattr(endpoint, "BUSY_RETRY_S", 0.05)
    return remaining


async def test_a_conversation_busy_for_a_moment_is_answered(
    voice: VoiceClient,
    scripted: ScriptedServer,
    busy_for: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    busy_for[0] = 3
    await assert_answers(voice, scripted, "Is the light on?", "It is on.")
    assert busy_for == [0]
    assert len(scripted.chat_requests) == 1
    assert not voice.of_type("error")
    assert not [r for r in caplog.records if r.levelname in {"ERROR", "CRITICAL"}]


@pytest.mark.parametrize("language", ["en", "fr"])
async def test_a_conversation_that_stays_busy_is_a_clear_error(
    *,
    voice: VoiceClient,
    scripted: ScriptedServer,
    speech_server: ScriptedWyoming,
    busy_for: list[int],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    language: str,
) -> None:
    monkeypatch.setattr(endpoint, "BUSY_WAIT_S", 0.3)
    busy_for[0] = 1000
    started = time.monotonic()
    await voice.send(type="text", text="Is the light on?", language=language)
    failure = await voice.until("error")
    assert 0.3 <= time.monotonic() - started < QUICKLY_S
    assert failure == {
        "type": "error",
        "code": "conversation_busy",
        "message": spoken_message("conversation_busy", language),
    }
    await voice.quiet(0.2)
    assert scripted.chat_requests == []
    assert speech_server.synthesized == []
    assert not [r for r in caplog.records if r.levelname in {"ERROR", "CRITICAL"}]

    busy_for[0] = 0  # the other client's turn has ended
    await assert_answers(voice, scripted, "Is the light on?", "It is on.")


# --- Failures -----------------------------------------------------------------------------


class TestSeparateServers:
    """STT and TTS on two servers, so that one can fail while the other works."""

    @pytest.fixture
    async def stt_server(self, socket_enabled: None) -> AsyncGenerator[ScriptedWyoming]:
        async with running_wyoming(tts=False) as server:
            yield server

    @pytest.fixture
    async def tts_server(self, socket_enabled: None) -> AsyncGenerator[ScriptedWyoming]:
        async with running_wyoming(asr=False) as server:
            yield server

    @pytest.fixture
    def entry_options(
        self, stt_server: ScriptedWyoming, tts_server: ScriptedWyoming
    ) -> dict[str, Any]:
        return voice_options(stt_server.address, tts_server.address)

    async def test_stt_down_at_start(
        self,
        voice: VoiceClient,
        scripted: ScriptedServer,
        stt_server: ScriptedWyoming,
        tts_server: ScriptedWyoming,
    ) -> None:
        await stt_server.stop()
        await speak_into_error(voice, SpeechErrorKind.CANNOT_CONNECT)
        assert scripted.chat_requests == []

        # The connection still works for what does not need STT.
        await assert_answers(voice, scripted, "Are you there?", "Here.")
        assert [s.text for s in tts_server.synthesized] == ["Here."]
        assert len(voice.of_type("error")) == 1

    async def test_stt_down_error_is_in_the_utterance_language(
        self, voice: VoiceClient, stt_server: ScriptedWyoming
    ) -> None:
        await stt_server.stop()
        await speak_into_error(voice, SpeechErrorKind.CANNOT_CONNECT, "fr")

    async def test_tts_down_still_sends_the_text(
        self,
        voice: VoiceClient,
        scripted: ScriptedServer,
        stt_server: ScriptedWyoming,
        tts_server: ScriptedWyoming,
    ) -> None:
        await tts_server.stop()
        stt_server.transcript = "is the light on"
        scripted.add(text(*THREE_SENTENCES))
        async with asyncio.timeout(QUICKLY_S):
            await voice.speak()
            end = await voice.until("reply_end")
        assert end["text"] == "".join(THREE_SENTENCES)
        errors = voice.of_type("error")
        assert len(errors) == 1  # once per reply, not once per sentence
        assert_speech_error(errors[0], SpeechErrorKind.CANNOT_CONNECT)
        assert voice.audio == []
        # The text of every sentence still reached the client.
        assert len(voice.of_type("sentence")) == 3

        # Still usable.
        await assert_answers_spoken(
            voice, scripted, stt_server, "what about the garage", "You are welcome."
        )


# How a scripted server fails a request: it hangs up, or it answers an `error` event.
SERVER_FAILURES = ["die_during", "error_during"]


@pytest.mark.parametrize("failure", SERVER_FAILURES, ids=["dies", "error_event"])
async def test_stt_server_failure_mid_transcription(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming, failure: str
) -> None:
    setattr(speech_server, failure, "transcribe")
    await speak_into_error(voice, SpeechErrorKind.SERVER_ERROR)
    assert not voice.of_type("transcript")
    assert scripted.chat_requests == []

    setattr(speech_server, failure, None)
    await assert_answers_spoken(voice, scripted, speech_server, "is the light on", "It is on.")


async def test_stt_silent_times_out(
    voice: VoiceClient,
    scripted: ScriptedServer,
    speech_server: ScriptedWyoming,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wyoming_client, "TRANSCRIPT_TIMEOUT", 0.3)
    speech_server.transcribe_delay_s = 5
    await speak_into_error(voice, SpeechErrorKind.TIMEOUT)
    assert scripted.chat_requests == []


@pytest.mark.parametrize("failure", SERVER_FAILURES, ids=["dies", "error_event"])
async def test_tts_server_failure_mid_synthesis_text_still_arrives(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming, failure: str
) -> None:
    setattr(speech_server, failure, "synthesize")
    scripted.add(text(*THREE_SENTENCES))
    async with asyncio.timeout(QUICKLY_S):
        await voice.send(type="text", text="Is the light on?")
        end = await voice.until("reply_end")
    assert end["text"] == "".join(THREE_SENTENCES)
    errors = voice.of_type("error")
    assert len(errors) == 1
    assert_speech_error(errors[0], SpeechErrorKind.SERVER_ERROR)
    # Speech stopped at the first failure instead of failing once per sentence.
    assert len(speech_server.synthesized) == 1
    assert [e["text"] for e in voice.of_type("sentence")] == [
        "The kitchen light is on.",
        "It is 21.5 degrees inside.",
        "Anything else?",
    ]

    setattr(speech_server, failure, None)
    await assert_answers(voice, scripted, "And now?", "Fine.")
    assert len(voice.of_type("error")) == 1
    assert speech_server.synthesized[-1].text == "Fine."


@pytest.mark.parametrize(
    ("language", "asked"), [("en", "Is the light on?"), ("fr", "La lumière est allumée ?")]
)
async def test_model_error_is_apologised_aloud(
    voice: VoiceClient,
    scripted: ScriptedServer,
    speech_server: ScriptedWyoming,
    language: str,
    asked: str,
) -> None:
    scripted.add(error(500, "model crashed"))
    async with asyncio.timeout(QUICKLY_S):
        await voice.send(type="text", text=asked, language=language)
        end = await voice.until("reply_end")
    apology = spoken_message("server_error", language)
    assert end["text"] == apology
    assert [s.text for s in speech_server.synthesized] == [apology]
    assert [e["text"] for e in voice.of_type("sentence")] == [apology]
    assert voice.audio

    await assert_answers(voice, scripted, asked, "It is on.")


# --- Robustness -----------------------------------------------------------------------------


def invented_names(size: int) -> str:
    """Made-up words, nearly all distinct: text no screening rule drops."""
    rng = random.Random(7)
    syllables = ["ka", "lo", "mi", "ran", "tel", "vo", "pes", "dur", "an", "ix", "or", "ble"]
    words: list[str] = []
    length = 0
    while length < size:
        words.append("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
        length += len(words[-1]) + 1
    return " ".join(words)


async def test_a_100_kb_message_is_refused(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming
) -> None:
    """Over MAX_UTTERANCE_CHARS: a clear answer, no model call, the connection goes on."""
    big = f"Please remember these names: {invented_names(100_000)}."
    assert len(big.encode()) > 100_000
    async with asyncio.timeout(10):
        await voice.send(type="text", text=big)
        end = await voice.until("reply_end")
    assert end["text"].startswith("That message is too long for me")
    assert scripted.chat_requests == []

    await assert_answers(voice, scripted, "Are you there?", "Still here.")
    assert big not in json.dumps(scripted.chat_requests[-1]["messages"])


async def test_a_100_kb_repetitive_message_ends_cleanly(
    voice: VoiceClient, scripted: ScriptedServer
) -> None:
    """The length is refused before the screening reads it; the connection stays."""
    big = " ".join(f"item{n} is on the shopping list," for n in range(4000))
    assert len(big.encode()) > 100_000
    async with asyncio.timeout(10):
        await voice.send(type="text", text=big)
        end = await voice.until("reply_end")
    assert end["text"].startswith("That message is too long for me")
    assert scripted.chat_requests == []

    scripted.add(text("Still here."))
    await voice.send(type="text", text="Are you there?")
    await voice.until("reply_delta")  # past anything the refused turn still sent
    assert (await voice.until("reply_end"))["text"] == "Still here."


INVALID_MESSAGES = [
    "{not json",
    "[1, 2]",
    "42",
    "null",
    '"text"',
    "{}",
    '{"type": "dance"}',
    '{"type": 5}',
    '{"type": ["text"]}',
]


async def test_invalid_messages_are_refused_and_the_connection_stays(
    voice: VoiceClient, scripted: ScriptedServer
) -> None:
    for raw in INVALID_MESSAGES:
        await voice.socket.send_str(raw)
        failure = await voice.until("error")
        assert failure["code"] == "invalid_message", raw
        assert failure["message"]
    assert len(voice.of_type("error")) == len(INVALID_MESSAGES)

    await assert_answers(voice, scripted, "How are you?", "Fine.")
    assert scripted.chat_requests[0]["messages"][-1]["content"] == "How are you?"


async def test_text_without_text_is_invalid(voice: VoiceClient, scripted: ScriptedServer) -> None:
    await voice.send(type="text", text=None)
    assert (await voice.until("error"))["code"] == "invalid_message"
    await voice.send(type="text")
    assert (await voice.until("error"))["code"] == "invalid_message"
    assert scripted.chat_requests == []


async def test_audio_without_start_is_ignored_silently(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming
) -> None:
    for _ in range(3):
        await voice.socket.send_bytes(bytes(3200))
    await voice.send(type="end")  # an end without start too
    await voice.quiet(0.3)
    assert speech_server.audio_received == 0
    assert speech_server.transcribe_requests == []

    await assert_answers_spoken(voice, scripted, speech_server, "hello", "Hello.")
    assert speech_server.audio_received == 3 * 3200
    assert not voice.of_type("error")


async def test_audio_after_a_failed_start_is_ignored(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming
) -> None:
    await speech_server.stop()
    await voice.speak()
    await voice.until("error")
    await voice.quiet(0.3)  # one error, no second one for the audio or the end
    assert len(voice.of_type("error")) == 1


async def test_a_second_start_replaces_the_unfinished_utterance(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming
) -> None:
    speech_server.transcript = "the second one"
    scripted.add(text("Answered."))
    await voice.send(type="start", language="en")
    await voice.socket.send_bytes(bytes(3200))
    await voice.speak(chunks=2)
    assert (await voice.until("transcript"))["text"] == "the second one"
    await voice.until("reply_end")
    await voice.quiet(0.3)
    assert len(voice.of_type("transcript")) == 1
    assert len(scripted.chat_requests) == 1
    assert speech_server.transcribe_requests == ["en", "en"]


async def test_client_leaving_mid_reply_stops_speech_but_not_the_turn(
    *,
    hass: HomeAssistant,
    voice: VoiceClient,
    scripted: ScriptedServer,
    speech_server: ScriptedWyoming,
    entry: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    speech_server.synth_delay_s = 0.2
    scripted.add(text(*LONG_REPLY, chunk_delay_s=0.05))
    await voice.send(type="text", text=LONG_QUESTION)
    await voice.until("sentence")
    await voice.socket.close()
    await asyncio.sleep(0.6)  # what the reply would have needed to be spoken whole
    await hass.async_block_till_done()

    assert len(scripted.chat_requests) == 1
    # Nobody listens any more: the rest of the reply is not synthesized.
    assert "Third one." not in [s.text for s in speech_server.synthesized]
    # The turn itself ran to its end, without error.
    trace = entry.runtime_data.last_turn
    assert trace is not None
    assert trace.error is None
    assert trace.total_s > 0
    assert not [r for r in caplog.records if r.levelname in {"ERROR", "CRITICAL"}]


@pytest.mark.parametrize(
    "message",
    [
        {"type": "text", "text": "Hello?", "language": 123},
        {"type": "start", "language": ["en"]},
        {"type": "text", "text": "Hello?", "entry_id": {"id": 1}},
        {"type": "text", "text": "Hello?", "agent_id": 5},
        {"type": "text", "text": "Hello?", "conversation_id": True},
        {"type": "text", "text": "Hello?", "conversation_id": "x" * 10_000},
        {"type": "text", "text": 42},
    ],
    ids=["language", "start_language", "entry_id", "agent_id", "conversation_id", "long", "text"],
)
async def test_a_field_of_the_wrong_type_is_invalid(
    voice: VoiceClient, scripted: ScriptedServer, message: dict[str, Any]
) -> None:
    await voice.send(**message)
    failure = await voice.until("error")
    assert failure["code"] == "invalid_message"
    assert failure["message"]
    await voice.quiet(0.2)
    assert scripted.chat_requests == []

    end = await assert_answers(voice, scripted, "How are you?", "Fine.")
    assert end["conversation_id"] != message.get("conversation_id")


async def test_deeply_nested_json_is_invalid_not_a_traceback(
    voice: VoiceClient, scripted: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    for deep in ("[" * 100_000, '{"type": "text", "text": ' + "[" * 100_000 + "]" * 100_000 + "}"):
        await voice.socket.send_str(deep)
        assert (await voice.until("error"))["code"] == "invalid_message"
    assert not [r for r in caplog.records if r.levelname in {"ERROR", "CRITICAL"}]
    await assert_answers(voice, scripted, "How are you?", "Fine.")


async def send_while_reading(
    url: str, access_token: str | None, frame: str
) -> tuple[list[dict[str, Any]], int | None]:
    """A client sending `frame` while it reads, as a browser does: what it read, its close code.

    It logs in first with `access_token` (else its frame is the first); what it read is
    what came after.
    """
    async with (
        asyncio.timeout(QUICKLY_S),
        aiohttp.ClientSession() as session,
        session.ws_connect(url) as socket,
    ):
        assert (await socket.receive_json())["type"] == "auth_required"
        if access_token is not None:
            await socket.send_json({"type": "auth", "access_token": access_token})
            assert [(await socket.receive_json())["type"] for _ in "12"] == ["auth_ok", "ready"]
        read: list[dict[str, Any]] = []

        async def read_all() -> None:
            async for message in socket:
                if message.type is aiohttp.WSMsgType.TEXT:
                    read.append(json.loads(message.data))

        reading = asyncio.create_task(read_all())
        # (Its own write may fail once the server hangs up: what it read says if it was answered.)
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await socket.send_str(frame)
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await reading
        return read, socket.close_code


async def run_in_a_thread[T](hass: HomeAssistant, work: Coroutine[Any, Any, T]) -> T:
    """Run `work` on a loop of its own in a thread, as another process's client would."""
    done: asyncio.Future[T] = hass.loop.create_future()

    def run() -> None:
        try:
            result = asyncio.run(work)
        except BaseException as err:  # noqa: BLE001 - handed over to the test
            hass.loop.call_soon_threadsafe(done.set_exception, err)
        else:
            hass.loop.call_soon_threadsafe(done.set_result, result)

    thread = threading.Thread(target=run, name="outside client")
    thread.start()
    try:
        return await done
    finally:
        thread.join()


@pytest.mark.parametrize("size", [1_500_000, 10_000_000])
@pytest.mark.parametrize("authenticated", [True, False], ids=["after_auth", "first_frame"])
async def test_a_frame_over_1_mib_is_answered_then_closed_with_1009(
    *,
    hass: HomeAssistant,
    hass_client_no_auth: ClientSessionGenerator,
    hass_access_token: str,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    caplog: pytest.LogCaptureFixture,
    authenticated: bool,
    size: int,
) -> None:
    """An `error` event (once logged in), then the close with 1009; no trace in the log.

    The client, in a thread of its own, reads while it writes. The server reads and
    discards the rest of the frame (within bounds) before it hangs up: a socket closed
    with unread data resets the connection, and the client could lose the answer (newer
    aiohttp refuses the frame from its header, so most of it is still coming).
    """
    url = str((await hass_client_no_auth()).make_url(VOICE_URL))
    frame = json.dumps({"type": "text", "text": "x" * size, "language": "fr"})
    token = hass_access_token if authenticated else None
    read, close_code = await run_in_a_thread(hass, send_while_reading(url, token, frame))
    # The frame was not read: its language is unknown, Home Assistant's is used.
    refusal = {
        "type": "error",
        "code": "message_too_big",
        "message": spoken_message("message_too_big"),
    }
    assert (read, close_code) == (
        [refusal] if authenticated else [],
        aiohttp.WSCloseCode.MESSAGE_TOO_BIG,
    )
    assert scripted.chat_requests == []
    assert not [r for r in caplog.records if r.levelname in {"ERROR", "CRITICAL"}]


@pytest.mark.parametrize("sending", [True, False], ids=["without_end", "nothing"])
async def test_what_follows_a_refused_frame_is_dropped_within_bounds(
    socket_enabled: None, monkeypatch: pytest.MonkeyPatch, sending: bool
) -> None:
    """At most LINGER_BYTES, for at most LINGER_S: a client may neither send nor wait forever.

    (Over a real socket pair; the client that hangs up is the test above.)
    """
    monkeypatch.setattr(endpoint, "LINGER_BYTES", 1 << 20)
    monkeypatch.setattr(endpoint, "LINGER_S", 60.0 if sending else 0.2)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        theirs.setblocking(False)
        loop = asyncio.get_running_loop()

        async def send_without_end() -> None:
            while True:
                await loop.sock_sendall(theirs, bytes(1 << 16))

        sender = asyncio.create_task(send_without_end())
        if not sending:
            sender.cancel()
        try:
            async with asyncio.timeout(10):  # does not hang (the byte bound ends it, not time)
                await endpoint.async_drop_input(ours)
            assert sender.done() is not sending  # still sending when it was cut off
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender


# --- Limits per connection ------------------------------------------------------------


async def test_a_flood_of_messages_is_rate_limited_and_runs_one_turn_at_a_time(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming
) -> None:
    """50 requests 20 ms apart: past the burst, refused; each one accepted cancels the last."""
    started = time.monotonic()
    for n in range(50):
        scripted.add(endless(f"Answer {n}. ", chunk_delay_s=0.05))
        await voice.send(type="text", text=f"Request number {n}.")
        await asyncio.sleep(0.02)
    # At most the burst, and what the rate refilled meanwhile, was accepted. "Meanwhile"
    # runs until the server has read the flood, later than the last send on a loaded
    # machine: the refills are counted up to each answer read.
    refused = [e for e in voice.events if e["type"] == "error"]

    def refills() -> int:
        return math.ceil((time.monotonic() - started) * endpoint.RATE_PER_S)

    async with asyncio.timeout(QUICKLY_S + (50 - endpoint.RATE_BURST) / endpoint.RATE_PER_S):
        while len(refused) < 50 - endpoint.RATE_BURST - refills():
            if (
                (item := await voice.receive())
                and isinstance(item, dict)
                and item["type"] == "error"
            ):
                refused.append(item)
    assert {e["code"] for e in refused} == {"rate_limited"}
    assert {e["message"] for e in refused} == {spoken_message("too_many_messages")}
    assert len(refused) <= 50 - endpoint.RATE_BURST

    assert len(scripted.chat_requests) <= 50 - len(refused)
    # Each superseded turn's model call ended with it: only the last one may still run.
    await scripted.wait_for_streams_ended(len(scripted.chat_requests) - 1)


@pytest.mark.parametrize("language", ["en", "fr"])
async def test_rate_limited_is_said_in_the_request_language(
    voice: VoiceClient, scripted: ScriptedServer, language: str
) -> None:
    for _ in range(endpoint.RATE_BURST + 5):  # faster than RATE_PER_S refills the burst
        await voice.send(type="stop", language=language)
    assert await voice.until("error") == {
        "type": "error",
        "code": "rate_limited",
        "message": spoken_message("too_many_messages", language),
    }


@pytest.mark.parametrize(
    ("frame_bytes", "frames"),
    [(64_000, 40), (320, 400)],  # 2 s frames: 80 s of audio; 10 ms frames, all at once
    ids=["too_much_audio", "too_many_frames"],
)
async def test_an_endless_utterance_is_cut(
    voice: VoiceClient,
    scripted: ScriptedServer,
    speech_server: ScriptedWyoming,
    frame_bytes: int,
    frames: int,
) -> None:
    await voice.send(type="start", language="fr")
    for _ in range(frames):
        await voice.socket.send_bytes(bytes(frame_bytes))
    await voice.send(type="end")
    assert await voice.until("error") == {
        "type": "error",
        "code": "utterance_too_long",
        "message": spoken_message("utterance_too_long", "fr"),
    }
    await voice.quiet(0.3)  # the rest of its audio and its end are ignored
    assert len(voice.of_type("error")) == 1
    assert speech_server.audio_received <= endpoint.MAX_UTTERANCE_S * 32_000
    assert speech_server.audio_received < frames * frame_bytes
    assert scripted.chat_requests == []
    assert speech_server.open_connections == 0

    await assert_answers_spoken(voice, scripted, speech_server, "hello", "Hello.")


@pytest.mark.parametrize("new_request", ["spoken", "typed"])
async def test_a_new_request_cancels_the_turn_in_flight(
    voice: VoiceClient, scripted: ScriptedServer, speech_server: ScriptedWyoming, new_request: str
) -> None:
    """One turn in flight: the model call of the one superseded ends, the new one answers."""
    scripted.add(endless("Blah blah. ", chunk_delay_s=0.05))
    await voice.send(type="text", text=LONG_QUESTION)
    await voice.until("audio_end")  # speaking, and the model writes on

    speech_server.transcript = "what time is it"
    scripted.add(text("It is ten."))
    if new_request == "spoken":
        await voice.speak()
    else:
        await voice.send(type="text", text="what time is it")
    await voice.until("interrupted")
    end = await voice.until("reply_end")
    assert end["text"] == "It is ten."
    assert not voice.of_type("error")
    assert len(scripted.streamed_bytes) >= 1  # the endless stream ended: it was cancelled
    assert user_messages(scripted.chat_requests[-1])[-1] == "what time is it"
    await voice.quiet(0.3)
    assert [e["text"] for e in voice.of_type("reply_end")] == ["It is ten."]


async def test_the_client_leaving_cancels_everything(
    *,
    hass: HomeAssistant,
    voice: VoiceClient,
    scripted: ScriptedServer,
    speech_server: ScriptedWyoming,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The model call and the speech servers' streams end with the connection."""
    speech_server.synth_delay_s = 0.3
    scripted.add(endless("Blah blah. ", chunk_delay_s=0.05))
    await voice.send(type="text", text=LONG_QUESTION)
    await voice.until("sentence")
    await voice.send(type="start", language="en")  # and an utterance begun
    await voice.socket.send_bytes(bytes(3200))
    await asyncio.sleep(0.1)
    assert speech_server.open_connections >= 1
    await voice.socket.close()

    await scripted.wait_for_streams_ended(1, timeout_s=QUICKLY_S)
    await speech_server.wait_for_no_connections(QUICKLY_S)
    await hass.async_block_till_done()
    assert not [r for r in caplog.records if r.levelname in {"ERROR", "CRITICAL"}]


@pytest.mark.parametrize("max_pending", [None, 64], ids=["buffers", "both_limits"])
async def test_a_client_that_stops_reading_is_disconnected(
    *,
    hass: HomeAssistant,
    voice: VoiceClient,
    scripted: ScriptedServer,
    speech_server: ScriptedWyoming,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    max_pending: int | None,
) -> None:
    """Audio for a client that reads nothing fills the buffers: the connection ends.

    Whichever limit trips first (the send deadline, the outbox: `both_limits` makes the
    outbox overflow while a send waits) says so, once.
    """
    monkeypatch.setattr(endpoint, "SEND_TIMEOUT", 0.5)
    if max_pending is not None:
        monkeypatch.setattr(endpoint, "MAX_PENDING", max_pending)
    speech_server.seconds_per_char = 5.0  # a sentence of 30 characters: 150 s, 6.6 MB
    scripted.add(text(*LONG_REPLY))
    await voice.send(type="text", text=LONG_QUESTION)
    await voice.until("audio_start")  # and then nothing is read any more
    await speech_server.wait_for_no_connections(10)
    await asyncio.sleep(1)  # past SEND_TIMEOUT: the connection is gone
    # What was buffered before the end still arrives, then the end, and no reply_end.
    async with asyncio.timeout(10):
        while (message := await voice.socket.receive()).type in {
            aiohttp.WSMsgType.TEXT,
            aiohttp.WSMsgType.BINARY,
        }:
            assert message.type is aiohttp.WSMsgType.BINARY or '"reply_end"' not in message.data
    await hass.async_block_till_done()
    assert [r.message for r in caplog.records if "A voice client" in r.message] == [ANY], (
        "disconnected, and said so"
    )
    assert not [r for r in caplog.records if r.levelname in {"ERROR", "CRITICAL"}]


async def test_a_conversation_of_another_user_starts_a_new_one(
    voice: VoiceClient,
    scripted: ScriptedServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Home Assistant 2026.11 refuses another user's conversation (Unauthorized)."""
    open_session = compat.chat_session_for

    @contextmanager
    def owned_sessions(
        hass: HomeAssistant, conversation_id: str | None, context: Context
    ) -> Iterator[ChatSession]:
        if conversation_id == "someone-elses":
            raise Unauthorized(context=context)
        with open_session(hass, conversation_id, context) as session:
            yield session

    monkeypatch.setattr(compat, "NOT_OWNER_ERRORS", (Unauthorized,))
    monkeypatch.setattr(compat, "chat_session_for", owned_sessions)
    scripted.add(text("It is on."))
    await voice.send(type="text", text="Is the light on?", conversation_id="someone-elses")
    end = await voice.until("reply_end")
    assert end["text"] == "It is on."
    assert end["conversation_id"] != "someone-elses"
    assert not voice.of_type("error")
    assert not [r for r in caplog.records if r.levelname in {"ERROR", "CRITICAL"}]

    # The new conversation goes on.
    end2 = await assert_answers(voice, scripted, "And the fan?", "It is off.")
    assert end2["conversation_id"] == end["conversation_id"]
    assert user_messages(scripted.chat_requests[-1]) == ["Is the light on?", "And the fan?"]


class TestNoStt:
    """An entry with TTS but no STT server."""

    @pytest.fixture
    def entry_options(self, speech_server: ScriptedWyoming) -> dict[str, Any]:
        return voice_options(None, speech_server.address)

    async def test_start_says_stt_not_configured(
        self,
        voice: VoiceClient,
        entry: MockConfigEntry,
        scripted: ScriptedServer,
        speech_server: ScriptedWyoming,
    ) -> None:
        [ready] = voice.of_type("ready")
        assert ready == {"type": "ready", "entry_id": entry.entry_id, "stt": False, "tts": True}

        await voice.speak()
        failure = await voice.until("error")
        assert failure["code"] == "stt_not_configured"
        assert failure["message"]
        await voice.quiet(0.3)
        assert speech_server.transcribe_requests == []

        # Typed requests still work, and are spoken.
        await assert_answers(voice, scripted, "Hello?", "Typed works.")
        assert [s.text for s in speech_server.synthesized] == ["Typed works."]


class TestBlankStt:
    """A blank STT server (stored by the options flow as typed) means no STT."""

    @pytest.fixture
    def entry_options(self, speech_server: ScriptedWyoming) -> dict[str, Any]:
        return voice_options("  ", speech_server.address)

    async def test_start_says_stt_not_configured(
        self, voice: VoiceClient, scripted: ScriptedServer
    ) -> None:
        await voice.speak()
        failure = await voice.until("error")
        assert failure["code"] == "stt_not_configured"
        await assert_answers(voice, scripted, "Hello?", "Still here.")


class TestNoVoice:
    """An entry without any speech server: typed requests get text only."""

    @pytest.fixture
    def entry_options(self) -> dict[str, Any]:
        return voice_options(None, None)

    async def test_typed_request_gets_text_without_audio(
        self, voice: VoiceClient, scripted: ScriptedServer
    ) -> None:
        scripted.add(text("Only ", "text."))
        await voice.send(type="text", text="Hello?")
        end = await voice.until("reply_end")
        assert end["text"] == "Only text."
        assert "".join(e["text"] for e in voice.of_type("reply_delta")) == "Only text."
        assert voice.audio == []
        assert not voice.of_type("sentence")
        assert not voice.of_type("error")
