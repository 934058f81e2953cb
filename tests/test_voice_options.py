"""The voice fields of the household's options, checked with a Wyoming Describe over real TCP."""

from __future__ import annotations

from collections.abc import AsyncGenerator
import socket
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.majordome.const import (
    CONF_PROFILE,
    CONF_STT_SERVER,
    CONF_TTS_SERVER,
    CONF_TTS_VOICE,
    MEMORY_KEY,
)
from devtools.scripted_wyoming import ScriptedWyoming
from homeassistant.config_entries import ConfigFlowResult
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType

from .helpers import running_wyoming

VOICES = ("en_US-lessac-medium", "fr_FR-siwis-low")


@pytest.fixture
async def both(socket_enabled: None) -> AsyncGenerator[ScriptedWyoming]:
    """A server offering STT and TTS."""
    async with running_wyoming(voices=VOICES) as server:
        yield server


@pytest.fixture
async def tts_only(socket_enabled: None) -> AsyncGenerator[ScriptedWyoming]:
    """A server offering TTS only (like wyoming-piper)."""
    async with running_wyoming(asr=False, voices=VOICES) as server:
        yield server


def closed_port_address() -> str:
    """A loopback host:port on which nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def suggested(result: ConfigFlowResult, name: str) -> Any:
    """The suggested value of a form field."""
    schema = result["data_schema"]
    assert schema is not None
    for key in schema.schema:
        if key == name:
            return (key.description or {}).get("suggested_value")
    raise AssertionError(f"no field {name} in the form")


async def submit(
    hass: HomeAssistant, entry: MockConfigEntry, voice: dict[str, Any]
) -> ConfigFlowResult:
    """Open the household's options and submit these voice fields."""
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    result = await hass.config_entries.options.async_configure(result["flow_id"], voice)
    await hass.async_block_till_done()
    return result


async def submit_refused(
    hass: HomeAssistant, entry: MockConfigEntry, voice: dict[str, Any], errors: dict[str, str]
) -> ConfigFlowResult:
    """Submit these voice fields: the form comes back with these errors, the options unchanged."""
    before = dict(entry.options)
    result = await submit(hass, entry, voice)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"
    assert result["errors"] == errors
    assert dict(entry.options) == before
    return result


async def test_valid_stt_tts_and_voice_are_saved(
    hass: HomeAssistant, entry: MockConfigEntry, both: ScriptedWyoming, tts_only: ScriptedWyoming
) -> None:
    voice = {
        CONF_STT_SERVER: both.address,
        CONF_TTS_SERVER: tts_only.address,
        CONF_TTS_VOICE: "fr_FR-siwis-low",
    }
    result = await submit(hass, entry, voice)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == voice
    assert entry.options == result["data"]


async def test_one_server_for_both_is_saved(
    hass: HomeAssistant, entry: MockConfigEntry, both: ScriptedWyoming
) -> None:
    voice = {CONF_STT_SERVER: both.address, CONF_TTS_SERVER: f"tcp://{both.address}"}
    result = await submit(hass, entry, voice)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options[CONF_TTS_SERVER] == f"tcp://{both.address}"


async def test_empty_voice_fields_save_with_voice_off(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    result = await submit(
        hass, entry, {CONF_STT_SERVER: "", CONF_TTS_SERVER: "", CONF_TTS_VOICE: ""}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert not entry.options.get(CONF_STT_SERVER)
    assert not entry.options.get(CONF_TTS_SERVER)

    result = await submit(hass, entry, {})  # the fields left out entirely
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert CONF_STT_SERVER not in entry.options


async def test_a_voice_without_tts_server_is_not_checked(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    result = await submit(hass, entry, {CONF_TTS_VOICE: "anything"})
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.parametrize("address", ["nonsense", "host:99999", "host:", "tcp://:10300"])
async def test_invalid_address(hass: HomeAssistant, entry: MockConfigEntry, address: str) -> None:
    await submit_refused(
        hass,
        entry,
        {CONF_STT_SERVER: address, CONF_TTS_SERVER: address},
        {CONF_STT_SERVER: "invalid_address", CONF_TTS_SERVER: "invalid_address"},
    )


async def test_nothing_listening_is_speech_cannot_connect(
    hass: HomeAssistant, entry: MockConfigEntry, both: ScriptedWyoming, socket_enabled: None
) -> None:
    for field, other in ((CONF_STT_SERVER, CONF_TTS_SERVER), (CONF_TTS_SERVER, CONF_STT_SERVER)):
        await submit_refused(
            hass,
            entry,
            {field: closed_port_address(), other: both.address},
            {field: "speech_cannot_connect"},
        )


@pytest.mark.parametrize(
    ("offers", "voice", "errors"),
    [
        # TTS only, like wyoming-piper; STT only, like wyoming-faster-whisper.
        ({"asr": False}, {}, {CONF_STT_SERVER: "not_asr"}),
        # The voice cannot be checked on a server without TTS: only not_tts is said.
        ({"tts": False}, {CONF_TTS_VOICE: "en_US-lessac-medium"}, {CONF_TTS_SERVER: "not_tts"}),
    ],
    ids=["stt_on_a_tts_only_server_is_not_asr", "tts_on_an_stt_only_server_is_not_tts"],
)
async def test_a_server_without_the_service_is_refused(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    *,
    socket_enabled: None,
    offers: dict[str, bool],
    voice: dict[str, str],
    errors: dict[str, str],
) -> None:
    async with running_wyoming(voices=VOICES, **offers) as server:
        address = {CONF_STT_SERVER: server.address, CONF_TTS_SERVER: server.address}
        await submit_refused(hass, entry, {**address, **voice}, errors)


async def test_unknown_voice_lists_the_installed_ones(
    hass: HomeAssistant, entry: MockConfigEntry, both: ScriptedWyoming
) -> None:
    result = await submit_refused(
        hass,
        entry,
        {
            CONF_STT_SERVER: both.address,
            CONF_TTS_SERVER: both.address,
            CONF_TTS_VOICE: "de_DE-thorsten-high",
        },
        {CONF_TTS_VOICE: "voice_not_found"},
    )
    assert result["description_placeholders"] == {"voices": ", ".join(VOICES), "facts": "-"}


async def test_placeholder_is_set_on_every_showing(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    """The description uses {voices}: the first form must fill it too."""
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["description_placeholders"] == {"voices": "", "facts": "-"}


async def test_form_comes_back_with_what_was_typed(
    hass: HomeAssistant, entry: MockConfigEntry, both: ScriptedWyoming
) -> None:
    typed = {
        CONF_PROFILE: "The Durands: two adults and a cat.",
        CONF_STT_SERVER: "nonsense",
        CONF_TTS_SERVER: both.address,
        CONF_TTS_VOICE: "nobody",
    }
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(result["flow_id"], typed)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {
        CONF_STT_SERVER: "invalid_address",
        CONF_TTS_VOICE: "voice_not_found",
    }
    for key, value in typed.items():
        assert suggested(result, key) == value, key

    # Corrected, the same flow saves.
    fixed = {**typed, CONF_STT_SERVER: both.address, CONF_TTS_VOICE: VOICES[0]}
    result = await hass.config_entries.options.async_configure(result["flow_id"], fixed)
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options[CONF_STT_SERVER] == both.address
    assert entry.data[MEMORY_KEY]["profile"] == typed[CONF_PROFILE]


async def test_saved_voice_fields_are_trimmed(
    hass: HomeAssistant, entry: MockConfigEntry, both: ScriptedWyoming
) -> None:
    """What was validated stripped is what is stored: the endpoint uses it as is."""
    result = await submit(
        hass,
        entry,
        {
            CONF_STT_SERVER: "   ",
            CONF_TTS_SERVER: f" {both.address} ",
            CONF_TTS_VOICE: f" {VOICES[0]} ",
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert not entry.options.get(CONF_STT_SERVER)
    assert entry.options[CONF_TTS_SERVER] == both.address
    assert entry.options[CONF_TTS_VOICE] == VOICES[0]
