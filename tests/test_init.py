"""Setting up, unloading and reloading an entry; its agents and the LLM API they offer."""

from __future__ import annotations

import socket

from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.majordome import compat
from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import (
    CONF_MAX_TOKENS,
    CONF_STT_SERVER,
    DOMAIN,
    MAJORDOME_API_ID,
)
from custom_components.majordome.conversation import MajordomeConversationEntity
from custom_components.majordome.models import MajordomeData
from devtools.scripted_server import ScriptedServer, text
from homeassistant.components import conversation
from homeassistant.config_entries import ConfigEntryState, ConfigSubentry
from homeassistant.const import CONF_MODEL
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er, intent, llm
from homeassistant.setup import async_setup_component

from .helpers import MODEL, agent_data, agent_of, device_owners, majordome_entry, update_agent


def entity_id_of(hass: HomeAssistant, entry: MockConfigEntry) -> str:
    """The conversation entity of an entry's only agent, from the entity registry."""
    entities = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    assert len(entities) == 1
    assert entities[0].domain == conversation.DOMAIN
    assert entities[0].platform == DOMAIN
    assert entities[0].unique_id == agent_of(entry).subentry_id
    assert entities[0].config_subentry_id == agent_of(entry).subentry_id
    return entities[0].entity_id


async def test_setup_registers_the_agent(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    assert entry.state is ConfigEntryState.LOADED
    assert isinstance(entry.runtime_data, MajordomeData)
    assert entry.runtime_data.options == {}
    assert entry.runtime_data.agents == {
        agent_of(entry).subentry_id: (MODEL, {CONF_MODEL: MODEL, **DEFAULT_OPTIONS})
    }
    assert str(entry.runtime_data.client.base_url).rstrip("/") == scripted.url

    agent = conversation.async_get_agent(hass, entry.entry_id)
    assert isinstance(agent, MajordomeConversationEntity)
    entity_id = entity_id_of(hass, entry)
    assert conversation.async_get_agent(hass, entity_id) is agent
    state = hass.states.get(entity_id)
    assert state is not None
    assert state.state != "unavailable"
    # Setup does not probe the server.
    assert scripted.requests == []


async def test_unload_removes_the_agent(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    entity_id = entity_id_of(hass, entry)
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.NOT_LOADED
    assert conversation.async_get_agent(hass, entry.entry_id) is None
    assert conversation.async_get_agent(hass, entity_id) is None
    state = hass.states.get(entity_id)
    assert state is None or state.state == "unavailable"


async def test_remove_entry_removes_the_entity(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    entity_id = entity_id_of(hass, entry)
    assert await hass.config_entries.async_remove(entry.entry_id)
    await hass.async_block_till_done()
    assert er.async_get(hass).async_get(entity_id) is None
    assert conversation.async_get_agent(hass, entry.entry_id) is None


async def test_reload(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    before = entry.runtime_data
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data is not before
    assert isinstance(
        conversation.async_get_agent(hass, entry.entry_id), MajordomeConversationEntity
    )

    # The reloaded agent answers.
    scripted.add(text("Still here."))
    result = await conversation.async_converse(hass, "hi", None, Context(), agent_id=entry.entry_id)
    assert result.response.response_type is intent.IntentResponseType.ACTION_DONE
    assert result.response.speech["plain"]["speech"] == "Still here."


async def test_data_update_does_not_reload(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    before = entry.runtime_data
    assert hass.config_entries.async_update_entry(entry, data={**entry.data, "extra": 1})
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data is before


async def test_title_update_does_not_reload(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    before = entry.runtime_data
    assert hass.config_entries.async_update_entry(entry, title="Jeeves")
    await hass.async_block_till_done()
    assert entry.runtime_data is before


async def test_options_update_reloads(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    before = entry.runtime_data
    new_options = {CONF_STT_SERVER: "127.0.0.1:10300"}
    assert hass.config_entries.async_update_entry(entry, options=new_options)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data is not before
    assert entry.runtime_data.options == new_options
    assert isinstance(
        conversation.async_get_agent(hass, entry.entry_id), MajordomeConversationEntity
    )


async def test_agent_update_reloads(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    before = entry.runtime_data
    entity_id = entity_id_of(hass, entry)
    update_agent(hass, entry, **{CONF_MAX_TOKENS: 123})
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data is not before
    agent = conversation.async_get_agent(hass, entity_id)
    assert isinstance(agent, MajordomeConversationEntity)
    assert agent.options[CONF_MAX_TOKENS] == 123
    assert entity_id_of(hass, entry) == entity_id


async def test_added_agent_gets_its_entity_and_device(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    first = entity_id_of(hass, entry)
    added = ConfigSubentry(**agent_data("other-model"))
    assert hass.config_entries.async_add_subentry(entry, added)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED

    entity_id = er.async_get(hass).async_get_entity_id(
        conversation.DOMAIN, DOMAIN, added.subentry_id
    )
    assert entity_id is not None
    assert entity_id != first
    registry_entry = er.async_get(hass).async_get(entity_id)
    assert registry_entry is not None
    assert registry_entry.config_subentry_id == added.subentry_id
    device = compat.device_of(dr.async_get(hass), (DOMAIN, added.subentry_id), entry.entry_id)
    assert device is not None
    assert device.id == registry_entry.device_id
    assert device.model == "other-model"
    assert device_owners(device) == {entry.entry_id: {added.subentry_id}}

    # Each agent answers with its own model; the entry's id stays the oldest agent's.
    scripted.add(text("From the other."))
    result = await conversation.async_converse(hass, "hi", None, Context(), agent_id=entity_id)
    assert result.response.speech["plain"]["speech"] == "From the other."
    assert scripted.chat_requests[-1]["model"] == "other-model"
    scripted.add(text("From the first."))
    await conversation.async_converse(hass, "hi", None, Context(), agent_id=entry.entry_id)
    assert scripted.chat_requests[-1]["model"] == MODEL

    # Removed, its entity and device go; the first agent stays.
    assert hass.config_entries.async_remove_subentry(entry, added.subentry_id)
    await hass.async_block_till_done()
    assert er.async_get(hass).async_get(entity_id) is None
    assert compat.device_of(dr.async_get(hass), (DOMAIN, added.subentry_id), entry.entry_id) is None
    assert entity_id_of(hass, entry) == first
    assert conversation.async_get_agent(hass, entity_id) is None


async def test_setup_while_the_server_is_down(hass: HomeAssistant, socket_enabled: None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    assert await async_setup_component(hass, "homeassistant", {})
    entry = majordome_entry(url)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert isinstance(
        conversation.async_get_agent(hass, entry.entry_id), MajordomeConversationEntity
    )

    # The agent says what is wrong instead of vanishing.
    result = await conversation.async_converse(hass, "hi", None, Context(), agent_id=entry.entry_id)
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert (
        result.response.speech["plain"]["speech"]
        == "Sorry, I cannot reach the language model server."
    )


async def test_llm_api_is_registered(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    apis = {api.id: api for api in llm.async_get_apis(hass)}
    assert MAJORDOME_API_ID in apis
    assert apis[MAJORDOME_API_ID].name == "Majordome"
    # Once, even with the entry reloaded.
    assert await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    assert [api.id for api in llm.async_get_apis(hass)].count(MAJORDOME_API_ID) == 1


async def test_two_entries_two_agents(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    other = majordome_entry(scripted.url, model="other-model")
    other.add_to_hass(hass)
    assert await hass.config_entries.async_setup(other.entry_id)
    await hass.async_block_till_done()
    first = conversation.async_get_agent(hass, entry.entry_id)
    second = conversation.async_get_agent(hass, other.entry_id)
    assert isinstance(first, MajordomeConversationEntity)
    assert isinstance(second, MajordomeConversationEntity)
    assert first is not second

    scripted.add(text("From the other."))
    result = await conversation.async_converse(hass, "hi", None, Context(), agent_id=other.entry_id)
    assert result.response.speech["plain"]["speech"] == "From the other."
    assert scripted.chat_requests[-1]["model"] == "other-model"
