"""0.1's entries (version 1: one server, one model) become a server with one agent."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import (
    CONF_MAX_TOKENS,
    CONF_PROMPT,
    CONF_SCREEN_TYPED,
    CONF_STT_SERVER,
    CONF_TEMPERATURE,
    CONF_TTS_SERVER,
    CONF_TTS_VOICE,
    DOMAIN,
    MEMORY_KEY,
    SUBENTRY_AGENT,
)
from custom_components.majordome.conversation import MajordomeConversationEntity
from custom_components.majordome.migration import VERSION
from devtools.scripted_server import ScriptedServer, text
from homeassistant.components import conversation
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_API_KEY, CONF_MODEL, CONF_URL
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.setup import async_setup_component

from .helpers import MODEL, device_owners

TITLE = "Jeeves"
ENTITY_ID = "conversation.jeeves_the_butler"  # renamed by the user: must survive
MEMORY: dict[str, Any] = {
    "profile": "Alice and Bob, and Miso the cat. Short answers, please.",
    "facts": ["Bob takes his coffee black", "The boiler is serviced in March"],
    "dynamic": "Planning a trip to Lyon.",
    "onboarding": "done",
    "profile_updated": "2025-05-01T10:00:00+00:00",
    "dynamic_updated": "2025-05-02T18:30:00+00:00",
}
AGENT_OPTIONS: dict[str, Any] = {
    **DEFAULT_OPTIONS,
    CONF_PROMPT: "You are Jeeves. {{ 'Be brief.' }}",
    CONF_TEMPERATURE: 0.55,
    CONF_MAX_TOKENS: 222,
    CONF_SCREEN_TYPED: True,
}
VOICE_OPTIONS: dict[str, Any] = {
    CONF_STT_SERVER: "127.0.0.1:10300",
    CONF_TTS_SERVER: "127.0.0.1:10200",
    CONF_TTS_VOICE: "en_GB-alan-low",
}


def stored_v1(url: str, title: str = TITLE) -> MockConfigEntry:
    """An entry as Majordome 0.1 stored it."""
    return MockConfigEntry(
        domain=DOMAIN,
        version=1,
        title=title,
        data={CONF_URL: url, CONF_API_KEY: "sk-old", CONF_MODEL: MODEL, MEMORY_KEY: MEMORY},
        options={**AGENT_OPTIONS, **VOICE_OPTIONS},
        unique_id=f"{url}|{MODEL}",
    )


@pytest.fixture
async def old_entry(hass: HomeAssistant, scripted: ScriptedServer) -> MockConfigEntry:
    """A version-1 entry, with the entity and device 0.1 registered for it (not loaded)."""
    assert await async_setup_component(hass, "homeassistant", {})
    entry = stored_v1(scripted.url)
    entry.add_to_hass(hass)
    device = dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id,
        identifiers={(DOMAIN, entry.entry_id)},
        name=TITLE,
        manufacturer="Majordome",
        model=MODEL,
        entry_type=dr.DeviceEntryType.SERVICE,
    )
    er.async_get(hass).async_get_or_create(
        conversation.DOMAIN,
        DOMAIN,
        entry.entry_id,
        config_entry=entry,
        device_id=device.id,
        suggested_object_id="jeeves_the_butler",
    )
    return entry


async def test_v1_entry_becomes_a_server_with_its_agent(
    hass: HomeAssistant, old_entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    entities, devices = er.async_get(hass), dr.async_get(hass)
    device_id = entities.async_get(ENTITY_ID).device_id  # type: ignore[union-attr]

    assert await hass.config_entries.async_setup(old_entry.entry_id)
    await hass.async_block_till_done()
    assert old_entry.state is ConfigEntryState.LOADED

    # The server entry: its URL, key and memory, every memory field intact.
    assert old_entry.version == VERSION
    assert dict(old_entry.data) == {
        CONF_URL: scripted.url,
        CONF_API_KEY: "sk-old",
        MEMORY_KEY: MEMORY,
    }
    assert dict(old_entry.options) == VOICE_OPTIONS  # the household's
    assert old_entry.title == scripted.url
    assert old_entry.unique_id is None

    # Its one agent: the old model and every agent option, under the old title.
    [agent] = old_entry.subentries.values()
    assert agent.subentry_type == SUBENTRY_AGENT
    assert agent.title == TITLE
    assert dict(agent.data) == {CONF_MODEL: MODEL, **AGENT_OPTIONS}

    # The same entity, same entity id, now the agent's; its device moved with it.
    registered = entities.async_get(ENTITY_ID)
    assert registered is not None
    assert registered.unique_id == agent.subentry_id
    assert registered.config_entry_id == old_entry.entry_id
    assert registered.config_subentry_id == agent.subentry_id
    assert registered.device_id == device_id
    assert er.async_entries_for_config_entry(entities, old_entry.entry_id) == [registered]
    device = devices.async_get(device_id)
    assert device is not None
    assert device.identifiers == {(DOMAIN, agent.subentry_id)}
    assert device_owners(device) == {old_entry.entry_id: {agent.subentry_id}}
    assert dr.async_entries_for_config_entry(devices, old_entry.entry_id) == [device]

    # It answers, under its entity id and under the entry's id, with the old setup.
    state = hass.states.get(ENTITY_ID)
    assert state is not None
    assert state.state != "unavailable"
    assert isinstance(conversation.async_get_agent(hass, ENTITY_ID), MajordomeConversationEntity)
    for agent_id in (ENTITY_ID, old_entry.entry_id):
        scripted.add(text("Very good."))
        result = await conversation.async_converse(hass, "hi", None, Context(), "en", agent_id)
        assert result.response.speech["plain"]["speech"] == "Very good."
        request = scripted.chat_requests[-1]
        assert request["model"] == MODEL
        assert request["temperature"] == 0.55
        assert request["max_tokens"] == 222
        assert scripted.requests[-1].headers["Authorization"] == "Bearer sk-old"
        system = request["messages"][0]["content"]
        assert "You are Jeeves. Be brief." in system
        assert MEMORY["profile"] in system
        assert "Bob takes his coffee black" in system


async def test_an_entity_id_that_spells_credentials_is_renamed(
    hass: HomeAssistant, scripted: ScriptedServer
) -> None:
    """0.1 named its entity after "model (URL)": a URL's password was in the entity id."""
    assert await async_setup_component(hass, "homeassistant", {})
    url = scripted.url.replace("http://", "http://bob:hunter2pass@")
    entry = stored_v1(url, title=f"{MODEL} ({url})")
    entry.add_to_hass(hass)
    entities = er.async_get(hass)
    old = entities.async_get_or_create(
        conversation.DOMAIN,
        DOMAIN,
        entry.entry_id,
        config_entry=entry,
        suggested_object_id=entry.title,
    )
    assert "hunter2pass" in old.entity_id

    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    [agent] = entry.subentries.values()
    entity_id = entities.async_get_entity_id(conversation.DOMAIN, DOMAIN, agent.subentry_id)
    assert entity_id is not None
    assert "hunter2pass" not in entity_id
    assert "bob" not in entity_id
    assert "hunter2pass" not in agent.title
    assert isinstance(conversation.async_get_agent(hass, entity_id), MajordomeConversationEntity)


async def test_v1_entry_never_loaded_migrates_too(
    hass: HomeAssistant, scripted: ScriptedServer
) -> None:
    """No entity or device registered yet: the agent gets new ones."""
    assert await async_setup_component(hass, "homeassistant", {})
    entry = stored_v1(scripted.url)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.data[MEMORY_KEY] == MEMORY
    [agent] = entry.subentries.values()
    entity_id = er.async_get(hass).async_get_entity_id(
        conversation.DOMAIN, DOMAIN, agent.subentry_id
    )
    assert entity_id is not None
    assert isinstance(conversation.async_get_agent(hass, entity_id), MajordomeConversationEntity)


async def test_v1_entry_without_options_or_memory(
    hass: HomeAssistant, scripted: ScriptedServer
) -> None:
    """An entry made before any option was saved: nothing is invented."""
    assert await async_setup_component(hass, "homeassistant", {})
    entry = MockConfigEntry(
        domain=DOMAIN, version=1, title=MODEL, data={CONF_URL: scripted.url, CONF_MODEL: MODEL}
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    assert dict(entry.data) == {CONF_URL: scripted.url}
    assert dict(entry.options) == {}
    [agent] = entry.subentries.values()
    assert dict(agent.data) == {CONF_MODEL: MODEL}


async def test_an_entry_from_a_newer_majordome_is_not_loaded(
    hass: HomeAssistant, scripted: ScriptedServer
) -> None:
    assert await async_setup_component(hass, "homeassistant", {})
    entry = MockConfigEntry(domain=DOMAIN, version=VERSION + 1, data={CONF_URL: scripted.url})
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.MIGRATION_ERROR
