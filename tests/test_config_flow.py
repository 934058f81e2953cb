"""The server, household and agent flows, against a real scripted server over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
import logging
import socket
from typing import Any
from unittest.mock import patch

from aiohttp import web
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
import voluptuous as vol

from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import (
    CONF_ALLOWED_SCRIPTS,
    CONF_FAST_MODEL,
    CONF_FAST_URL,
    CONF_LLM_HASS_API,
    CONF_LOCAL_INTENTS,
    CONF_MAX_HISTORY,
    CONF_MAX_ITERATIONS,
    CONF_MAX_TOKENS,
    CONF_MEMORY_EVERY,
    CONF_PROFILE,
    CONF_PROMPT,
    CONF_SCREEN_LLM,
    CONF_SCREEN_TYPED,
    CONF_SCREEN_VOICE,
    CONF_TEMPERATURE,
    CONF_TIMEOUT,
    DOMAIN,
    LLM_API_NONE,
    MEMORY_KEY,
    SUBENTRY_AGENT,
)
from custom_components.majordome.conversation import MajordomeConversationEntity
from custom_components.majordome.memory import Onboarding
from custom_components.majordome.migration import VERSION
from custom_components.majordome.models import MajordomeData
from custom_components.majordome.prompt import default_instructions
from devtools.scripted_server import ScriptedServer
from homeassistant.components import conversation
from homeassistant.config_entries import (
    SOURCE_RECONFIGURE,
    SOURCE_USER,
    ConfigEntry,
    ConfigEntryState,
    ConfigSubentry,
)
from homeassistant.const import CONF_API_KEY, CONF_MODEL, CONF_NAME, CONF_URL
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResult, FlowResultType
from homeassistant.helpers import entity_registry as er, selector
from homeassistant.setup import async_setup_component

from .helpers import MODEL, agent_of, majordome_entry

API_KEY = "sk-right-key"


@pytest.fixture(autouse=True)
async def setup_homeassistant(hass: HomeAssistant) -> None:
    """Entries created by the flows are set up for real; they need the core integration."""
    assert await async_setup_component(hass, "homeassistant", {})


@pytest.fixture
async def keyed(socket_enabled: None) -> AsyncGenerator[ScriptedServer]:
    """A second scripted server that requires an API key."""
    server = ScriptedServer(models=["keyed-b", "keyed-a"], api_key=API_KEY)
    await server.start()
    yield server
    await server.stop()


class SlowModelsServer(ScriptedServer):
    """A scripted server whose /v1/models answers only once released."""

    def __init__(self) -> None:
        """Hold the listing until `release` is set."""
        super().__init__(models=[MODEL])
        self.release = asyncio.Event()

    async def _models(self, request: web.Request) -> web.Response:
        await self.release.wait()
        return await super()._models(request)

    async def stop(self) -> None:
        """Let a held request finish so the server stops at once."""
        self.release.set()
        await super().stop()


class GarbageModelsServer(ScriptedServer):
    """A scripted server whose /v1/models answers 200 with a body that is no listing."""

    async def _models(self, request: web.Request) -> web.Response:
        return web.Response(text="<html>not json</html>", content_type="text/html")


def closed_port_url() -> str:
    """A loopback URL on which nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def field_selector(result: FlowResult, name: str) -> Any:
    """The selector of a form field."""
    schema = result["data_schema"]
    assert schema is not None
    for key, value in schema.schema.items():
        if key == name:
            return value
    raise AssertionError(f"no field {name} in the form")


def field_marker(result: FlowResult, name: str) -> vol.Marker:
    """The schema marker (default, suggested value) of a form field."""
    schema = result["data_schema"]
    assert schema is not None
    for key in schema.schema:
        if key == name:
            return key
    raise AssertionError(f"no field {name} in the form")


def suggested(result: FlowResult, name: str) -> Any:
    """The suggested value of a form field."""
    description = field_marker(result, name).description or {}
    return description.get("suggested_value")


def default(result: FlowResult, name: str) -> Any:
    """The default of a form field."""
    marker = field_marker(result, name)
    return marker.default() if callable(marker.default) else marker.default


async def configure(hass: HomeAssistant, result: FlowResult, data: dict[str, Any]) -> FlowResult:
    """Submit the current step of a config flow."""
    return await hass.config_entries.flow.async_configure(result["flow_id"], data)


def only_agent(entry: ConfigEntry) -> ConfigSubentry:
    """The one agent of an entry."""
    [agent] = entry.subentries.values()
    assert agent.subentry_type == SUBENTRY_AGENT
    return agent


async def start(hass: HomeAssistant) -> FlowResult:
    """Start a user flow and check its first form."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {}
    return result


# --- The user flow: the server, then its first agent's model ----------------------


async def test_user_flow_picks_a_listed_model(hass: HomeAssistant, keyed: ScriptedServer) -> None:
    result = await start(hass)
    assert suggested(result, CONF_URL) == "http://localhost:11434/v1"

    result = await configure(hass, result, {CONF_URL: f"  {keyed.url}  ", CONF_API_KEY: API_KEY})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "model"
    assert result["errors"] == {}
    assert result["description_placeholders"] == {"url": keyed.url}
    field = field_selector(result, CONF_MODEL)
    assert isinstance(field, selector.SelectSelector)
    assert field.config["options"] == ["keyed-a", "keyed-b"]  # sorted
    assert field.config["custom_value"] is True
    assert default(result, CONF_MODEL) == "keyed-a"
    # The server was asked for its models, with the key.
    assert [r.path for r in keyed.requests] == ["/v1/models"]
    assert keyed.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"

    result = await configure(hass, result, {CONF_MODEL: "keyed-b"})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    # The server entry...
    assert result["title"] == keyed.url
    assert result["data"] == {CONF_URL: keyed.url, CONF_API_KEY: API_KEY}
    assert result["options"] == {}
    entry = result["result"]
    assert entry.version == VERSION
    assert entry.unique_id is None  # servers are told apart by their URL
    assert entry.state is ConfigEntryState.LOADED
    # ... with its first agent, on the model picked, ready to answer.
    agent = only_agent(entry)
    assert agent.title == "keyed-b"
    assert dict(agent.data) == {CONF_MODEL: "keyed-b", **DEFAULT_OPTIONS}
    entity_id = er.async_get(hass).async_get_entity_id(
        conversation.DOMAIN, DOMAIN, agent.subentry_id
    )
    assert entity_id is not None
    assert isinstance(conversation.async_get_agent(hass, entity_id), MajordomeConversationEntity)


async def test_user_flow_without_key_stores_no_key(
    hass: HomeAssistant, scripted: ScriptedServer
) -> None:
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: scripted.url})
    assert result["step_id"] == "model"
    result = await configure(hass, result, {CONF_MODEL: MODEL})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {CONF_URL: scripted.url}
    assert CONF_API_KEY not in result["data"]
    assert only_agent(result["result"]).data[CONF_MODEL] == MODEL


async def test_credentials_in_the_url_never_reach_the_title(
    hass: HomeAssistant, scripted: ScriptedServer
) -> None:
    """A proxy's login in the URL is a secret: the entry's title shows the server only."""
    url = scripted.url.replace("http://", "http://alice:s3cret@") + "?token=abc"
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: url})
    # The model step names the server too: never with its login.
    assert result["step_id"] == "model"
    assert "s3cret" not in str(result["description_placeholders"])
    result = await configure(hass, result, {CONF_MODEL: MODEL})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_URL] == url  # kept to reach the server
    assert result["title"] == scripted.url
    assert "s3cret" not in str(result["result"].title)


async def test_user_flow_custom_model_typed_over_the_list(
    hass: HomeAssistant, scripted: ScriptedServer
) -> None:
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: scripted.url})
    result = await configure(hass, result, {CONF_MODEL: "  unlisted:7b  "})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    agent = only_agent(result["result"])
    assert agent.data[CONF_MODEL] == "unlisted:7b"
    assert agent.title == "unlisted:7b"


async def test_server_listing_no_models_asks_for_free_text(
    hass: HomeAssistant, scripted: ScriptedServer
) -> None:
    scripted.models = []
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: scripted.url})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "model"
    assert result["errors"] == {"base": "no_models"}
    assert isinstance(field_selector(result, CONF_MODEL), selector.TextSelector)
    assert default(result, CONF_MODEL) == ""

    result = await configure(hass, result, {CONF_MODEL: "typed-model"})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {CONF_URL: scripted.url}
    assert only_agent(result["result"]).data[CONF_MODEL] == "typed-model"


async def test_models_endpoint_404_means_free_text(
    hass: HomeAssistant, scripted: ScriptedServer
) -> None:
    scripted.models_status = 404
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: scripted.url})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "model"
    assert result["errors"] == {"base": "no_models"}
    assert isinstance(field_selector(result, CONF_MODEL), selector.TextSelector)
    assert [r.path for r in scripted.requests] == ["/v1/models"]

    result = await configure(hass, result, {CONF_MODEL: MODEL})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {CONF_URL: scripted.url}
    assert only_agent(result["result"]).data[CONF_MODEL] == MODEL


@pytest.mark.parametrize("blank", ["", "   "])
async def test_empty_model_is_refused(
    hass: HomeAssistant, scripted: ScriptedServer, blank: str
) -> None:
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: scripted.url})
    assert result["errors"] == {}
    result = await configure(hass, result, {CONF_MODEL: blank})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "model"
    assert result["errors"] == {"base": "model_required"}
    assert hass.config_entries.async_entries(DOMAIN) == []

    result = await configure(hass, result, {CONF_MODEL: MODEL})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_empty_model_after_no_models_is_refused(
    hass: HomeAssistant, scripted: ScriptedServer
) -> None:
    scripted.models = []
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: scripted.url})
    assert result["errors"] == {"base": "no_models"}
    result = await configure(hass, result, {CONF_MODEL: ""})
    assert result["errors"] == {"base": "model_required"}


async def test_cannot_connect(hass: HomeAssistant, socket_enabled: None) -> None:
    url = closed_port_url()
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: url})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {"base": "cannot_connect"}
    # The form keeps what was typed.
    assert suggested(result, CONF_URL) == url


@pytest.mark.parametrize("key", [None, "sk-wrong-key"])
async def test_invalid_auth(hass: HomeAssistant, keyed: ScriptedServer, key: str | None) -> None:
    result = await start(hass)
    user_input = {CONF_URL: keyed.url} if key is None else {CONF_URL: keyed.url, CONF_API_KEY: key}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], user_input)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {"base": "invalid_auth"}
    assert [r.path for r in keyed.requests] == ["/v1/models"]


async def test_timeout(hass: HomeAssistant, socket_enabled: None) -> None:
    server = SlowModelsServer()
    await server.start()
    try:
        result = await start(hass)
        with patch("custom_components.majordome.config_flow.CONNECT_TIMEOUT", 0.2):
            result = await asyncio.wait_for(
                hass.config_entries.flow.async_configure(result["flow_id"], {CONF_URL: server.url}),
                timeout=5,
            )
        assert result["type"] is FlowResultType.FORM
        assert result["step_id"] == "user"
        assert result["errors"] == {"base": "timeout"}
    finally:
        await server.stop()


async def test_server_error_is_unknown(hass: HomeAssistant, scripted: ScriptedServer) -> None:
    scripted.models_status = 500
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: scripted.url})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {"base": "unknown"}


async def test_garbage_listing_is_unknown(hass: HomeAssistant, socket_enabled: None) -> None:
    server = GarbageModelsServer()
    await server.start()
    try:
        result = await start(hass)
        result = await configure(hass, result, {CONF_URL: server.url})
    finally:
        await server.stop()
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {"base": "unknown"}


async def test_unexpected_exception_is_unknown(
    hass: HomeAssistant, scripted: ScriptedServer
) -> None:
    # Nothing real raises outside the backend's classification: force it.
    result = await start(hass)
    with patch(
        "custom_components.majordome.config_flow.async_list_models",
        side_effect=RuntimeError("boom"),
    ):
        result = await configure(hass, result, {CONF_URL: scripted.url})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "unknown"}


@pytest.mark.parametrize("url", ["127.0.0.1:11434/v1", "ftp://127.0.0.1/v1", "localhost"])
async def test_invalid_url(hass: HomeAssistant, scripted: ScriptedServer, url: str) -> None:
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: url})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {CONF_URL: "invalid_url"}
    assert scripted.requests == []


async def test_recovers_after_an_error(hass: HomeAssistant, keyed: ScriptedServer) -> None:
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: keyed.url, CONF_API_KEY: "sk-wrong"})
    assert result["errors"] == {"base": "invalid_auth"}
    result = await configure(hass, result, {CONF_URL: "no-scheme"})
    assert result["errors"] == {CONF_URL: "invalid_url"}

    result = await configure(hass, result, {CONF_URL: keyed.url, CONF_API_KEY: API_KEY})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "model"
    assert result["errors"] == {}
    result = await configure(hass, result, {CONF_MODEL: "keyed-a"})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {CONF_URL: keyed.url, CONF_API_KEY: API_KEY}
    assert only_agent(result["result"]).data[CONF_MODEL] == "keyed-a"


@pytest.mark.parametrize("suffix", ["", "/"])
async def test_same_server_twice_aborts(
    hass: HomeAssistant, scripted: ScriptedServer, suffix: str
) -> None:
    majordome_entry(scripted.url).add_to_hass(hass)
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: scripted.url + suffix})
    # Told before the model step: another model is another agent of that server.
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert scripted.requests == []
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1


async def test_another_server_is_a_new_entry(
    hass: HomeAssistant, scripted: ScriptedServer, keyed: ScriptedServer
) -> None:
    majordome_entry(scripted.url).add_to_hass(hass)
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: keyed.url, CONF_API_KEY: API_KEY})
    result = await configure(hass, result, {CONF_MODEL: "keyed-a"})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert len(hass.config_entries.async_entries(DOMAIN)) == 2


# --- Reconfigure the server ----------------------------------------------------------


async def test_reconfigure_changes_server_and_key(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, keyed: ScriptedServer
) -> None:
    assert entry.state is ConfigEntryState.LOADED
    before: MajordomeData = entry.runtime_data
    agent = agent_of(entry)

    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    assert suggested(result, CONF_URL) == scripted.url

    result = await configure(hass, result, {CONF_URL: keyed.url, CONF_API_KEY: API_KEY})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"

    updated = hass.config_entries.async_get_entry(entry.entry_id)
    assert updated is not None
    assert updated.data == {CONF_URL: keyed.url, CONF_API_KEY: API_KEY}
    assert updated.title == keyed.url
    assert updated.options == {}
    # The agents are the server's: untouched.
    assert updated.subentries == {agent.subentry_id: agent}
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1
    # Reloaded: a new client for the new server.
    assert updated.state is ConfigEntryState.LOADED
    assert updated.runtime_data is not before
    assert str(updated.runtime_data.client.base_url).rstrip("/") == keyed.url
    assert updated.runtime_data.client.api_key == API_KEY


async def test_reconfigure_keeps_the_memory(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, keyed: ScriptedServer
) -> None:
    store = entry.runtime_data.memory
    store.update(profile="Alice and Bob, and Miso the cat.", onboarding=Onboarding.DONE)
    store.remember("Bob takes his coffee black")
    store.update(dynamic="Planning a trip to Lyon.")
    memory = dict(entry.data[MEMORY_KEY])

    # To a server with a key, then back to one without: the key goes, the memory stays.
    for server in ({CONF_URL: keyed.url, CONF_API_KEY: API_KEY}, {CONF_URL: scripted.url}):
        result = await entry.start_reconfigure_flow(hass)
        result = await configure(hass, result, server)
        await hass.async_block_till_done()
        assert result["reason"] == "reconfigure_successful"
        assert entry.data == {**server, MEMORY_KEY: memory}

    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.memory.memory.profile == "Alice and Bob, and Miso the cat."
    assert entry.runtime_data.memory.memory.facts == ("Bob takes his coffee black",)


async def test_reconfigure_shows_errors(
    hass: HomeAssistant, entry: MockConfigEntry, keyed: ScriptedServer
) -> None:
    result = await entry.start_reconfigure_flow(hass)
    result = await configure(hass, result, {CONF_URL: keyed.url, CONF_API_KEY: "sk-wrong"})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    assert result["errors"] == {"base": "invalid_auth"}


async def test_reconfigure_onto_another_entry_aborts(
    hass: HomeAssistant, entry: MockConfigEntry, keyed: ScriptedServer
) -> None:
    majordome_entry(keyed.url, api_key=API_KEY).add_to_hass(hass)
    data_before = dict(entry.data)

    result = await entry.start_reconfigure_flow(hass)
    result = await configure(hass, result, {CONF_URL: keyed.url, CONF_API_KEY: API_KEY})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert dict(entry.data) == data_before


# --- The household's options -------------------------------------------------------


async def test_household_form_shows_the_profile_and_voice(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    entry.runtime_data.memory.update(profile="The Durands.")
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"
    assert {str(key) for key in result["data_schema"].schema} == {  # type: ignore[union-attr]
        CONF_PROFILE,
        "memory_from_automations",
        "stt_server",
        "tts_server",
        "tts_voice",
    }
    assert suggested(result, CONF_PROFILE) == "The Durands."


# --- The agents --------------------------------------------------------------------

NEW_OPTIONS: dict[str, Any] = {
    CONF_LLM_HASS_API: LLM_API_NONE,
    CONF_TEMPERATURE: 0.8,
    CONF_MAX_TOKENS: 512,
    CONF_MAX_ITERATIONS: 4,
    CONF_MAX_HISTORY: 0,
    CONF_TIMEOUT: 30,
    CONF_MEMORY_EVERY: 3,
    CONF_LOCAL_INTENTS: False,
    CONF_SCREEN_VOICE: False,
    CONF_SCREEN_TYPED: True,
    CONF_SCREEN_LLM: True,
    CONF_ALLOWED_SCRIPTS: ["Latin", "Cyrillic"],
}


async def add_agent(hass: HomeAssistant, entry: MockConfigEntry) -> FlowResult:
    """Start adding an agent to the entry."""
    return await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_AGENT), context={"source": SOURCE_USER}
    )


async def reconfigure_agent(hass: HomeAssistant, entry: MockConfigEntry) -> FlowResult:
    """Start reconfiguring the entry's first agent, and pick its model again."""
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_AGENT),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": agent_of(entry).subentry_id},
    )
    assert result["step_id"] == "model"
    return await agent_step(hass, result, {CONF_MODEL: MODEL})


async def agent_step(hass: HomeAssistant, result: FlowResult, data: dict[str, Any]) -> FlowResult:
    """Submit the current step of an agent flow."""
    return await hass.config_entries.subentries.async_configure(result["flow_id"], data)


def agent_entity(hass: HomeAssistant, entry: MockConfigEntry) -> MajordomeConversationEntity:
    """The running entity of the entry's first agent."""
    entity_id = er.async_get(hass).async_get_entity_id(
        conversation.DOMAIN, DOMAIN, agent_of(entry).subentry_id
    )
    assert entity_id is not None
    agent = conversation.async_get_agent(hass, entity_id)
    assert isinstance(agent, MajordomeConversationEntity)
    return agent


async def test_add_an_agent_on_another_model(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    first = agent_of(entry)
    result = await add_agent(hass, entry)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "model"
    assert result["description_placeholders"] == {"url": scripted.url}
    field = field_selector(result, CONF_MODEL)
    assert isinstance(field, selector.SelectSelector)
    assert field.config["options"] == ["other-model", MODEL]
    assert default(result, CONF_MODEL) == "other-model"

    result = await agent_step(hass, result, {CONF_MODEL: "other-model"})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "agent"
    assert result["description_placeholders"] == {"model": "other-model"}
    assert suggested(result, CONF_NAME) == "other-model"
    assert suggested(result, CONF_PROMPT) == default_instructions(hass.config.language)
    for key, value in DEFAULT_OPTIONS.items():
        assert suggested(result, key) == value, key

    custom = "You are Jeeves."
    result = await agent_step(
        hass, result, {CONF_NAME: " Jeeves ", CONF_PROMPT: custom, **NEW_OPTIONS}
    )
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.state is ConfigEntryState.LOADED
    added = next(sub for sub in entry.subentries.values() if sub.subentry_id != first.subentry_id)
    assert added.subentry_type == SUBENTRY_AGENT
    assert added.title == "Jeeves"
    assert dict(added.data) == {CONF_MODEL: "other-model", CONF_PROMPT: custom, **NEW_OPTIONS}
    assert entry.subentries[first.subentry_id] == first
    # Its own entity, answering with its own client settings.
    entity_id = er.async_get(hass).async_get_entity_id(
        conversation.DOMAIN, DOMAIN, added.subentry_id
    )
    assert entity_id is not None
    jeeves = conversation.async_get_agent(hass, entity_id)
    assert isinstance(jeeves, MajordomeConversationEntity)
    assert jeeves.client.timeout == 30
    assert agent_entity(hass, entry).client.timeout == DEFAULT_OPTIONS[CONF_TIMEOUT]


async def test_agent_form_suggests_current_values(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_AGENT),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": agent_of(entry).subentry_id},
    )
    # The listing is sorted ("other-model" first), but the current model is proposed.
    assert default(result, CONF_MODEL) == MODEL
    result = await agent_step(hass, result, {CONF_MODEL: MODEL})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "agent"
    assert suggested(result, CONF_NAME) == MODEL
    assert suggested(result, CONF_PROMPT) == default_instructions(hass.config.language)
    for key, value in DEFAULT_OPTIONS.items():
        assert suggested(result, key) == value, key


async def test_agent_reconfigure_changes_its_model_and_name(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    agent = agent_of(entry)
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_AGENT),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": agent.subentry_id},
    )
    result = await agent_step(hass, result, {CONF_MODEL: "other-model"})
    result = await agent_step(hass, result, {**DEFAULT_OPTIONS, CONF_NAME: "Alfred"})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert agent_of(entry).title == "Alfred"
    assert agent_of(entry).data[CONF_MODEL] == "other-model"
    # The same agent (entity), reloaded on its new model.
    assert agent_of(entry).subentry_id == agent.subentry_id
    assert agent_entity(hass, entry).options[CONF_MODEL] == "other-model"


async def test_agent_untouched_default_prompt_is_stored_empty(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    before: MajordomeData = entry.runtime_data
    result = await reconfigure_agent(hass, entry)
    result = await agent_step(
        hass,
        result,
        {
            CONF_NAME: MODEL,
            CONF_PROMPT: default_instructions(hass.config.language),
            **NEW_OPTIONS,
        },
    )
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    expected = {CONF_MODEL: MODEL, CONF_PROMPT: "", **NEW_OPTIONS}
    assert dict(agent_of(entry).data) == expected
    assert isinstance(agent_of(entry).data[CONF_MAX_TOKENS], int)
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data is not before
    assert entry.runtime_data.agents[agent_of(entry).subentry_id] == (MODEL, expected)
    # The new timeout reached the agent's client.
    assert agent_entity(hass, entry).client.timeout == 30


async def test_agent_custom_prompt_is_stored_as_written(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    before: MajordomeData = entry.runtime_data
    custom = "You are Jeeves. Answer in {{ 'one' }} sentence."
    result = await reconfigure_agent(hass, entry)
    result = await agent_step(
        hass, result, {CONF_NAME: MODEL, CONF_PROMPT: custom, **DEFAULT_OPTIONS}
    )
    await hass.async_block_till_done()
    assert result["reason"] == "reconfigure_successful"
    assert agent_of(entry).data[CONF_PROMPT] == custom
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data is not before

    # The form then suggests the stored prompt, not the default.
    result = await reconfigure_agent(hass, entry)
    assert suggested(result, CONF_PROMPT) == custom


async def test_agent_without_prompt_field(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    result = await reconfigure_agent(hass, entry)
    result = await agent_step(hass, result, {CONF_NAME: MODEL, **NEW_OPTIONS})
    await hass.async_block_till_done()
    assert result["reason"] == "reconfigure_successful"
    assert dict(agent_of(entry).data) == {CONF_MODEL: MODEL, CONF_PROMPT: "", **NEW_OPTIONS}


async def test_agent_out_of_range_is_refused(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    result = await reconfigure_agent(hass, entry)
    with pytest.raises(vol.Invalid):
        await agent_step(hass, result, {CONF_NAME: MODEL, **NEW_OPTIONS, CONF_MAX_ITERATIONS: 0})
    assert dict(agent_of(entry).data) == {CONF_MODEL: MODEL, **DEFAULT_OPTIONS}


async def test_agent_model_is_required(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    result = await add_agent(hass, entry)
    result = await agent_step(hass, result, {CONF_MODEL: "  "})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "model"
    assert result["errors"] == {"base": "model_required"}


async def test_agent_model_typed_when_the_server_lists_none(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.models_status = 404
    result = await add_agent(hass, entry)
    assert result["step_id"] == "model"
    assert result["errors"] == {"base": "no_models"}
    assert isinstance(field_selector(result, CONF_MODEL), selector.TextSelector)


@pytest.mark.parametrize(("status", "reason"), [(401, "invalid_auth"), (500, "unknown")])
async def test_agent_flow_aborts_when_the_server_fails(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, status: int, reason: str
) -> None:
    scripted.models_status = status
    result = await add_agent(hass, entry)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == reason


async def test_agent_flow_aborts_when_the_server_is_down(
    hass: HomeAssistant, socket_enabled: None
) -> None:
    entry = majordome_entry(closed_port_url())
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    result = await add_agent(hass, entry)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "cannot_connect"


async def test_agent_flow_needs_a_loaded_entry(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    assert await hass.config_entries.async_unload(entry.entry_id)
    result = await add_agent(hass, entry)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "entry_not_loaded"
    assert scripted.requests == []


# --- The agent's fast model: its server is checked as the main one ----------------

FAST_USER, FAST_PASSWORD, FAST_QUERY_KEY = "fastuser", "fast-secret-pw", "fast-query-key-9"


def with_credentials(url: str) -> str:
    """`url` carrying a user, a password and a query key."""
    url = url.replace("http://", f"http://{FAST_USER}:{FAST_PASSWORD}@")
    return f"{url}?api_key={FAST_QUERY_KEY}"


async def fast_model_form(
    hass: HomeAssistant, entry: MockConfigEntry, model: str, url: str = ""
) -> FlowResult:
    """Reconfigure the entry's agent with a fast model on `url` (empty: the entry's)."""
    result = await reconfigure_agent(hass, entry)
    return await agent_step(
        hass,
        result,
        {**DEFAULT_OPTIONS, CONF_NAME: MODEL, CONF_FAST_MODEL: model, CONF_FAST_URL: url},
    )


async def test_agent_fast_server_down_is_said_on_the_form(
    hass: HomeAssistant, entry: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = dict(agent_of(entry).data)
    result = await fast_model_form(hass, entry, "fast-model", with_credentials(closed_port_url()))
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "agent"
    assert result["errors"] == {CONF_FAST_URL: "fast_cannot_connect"}
    assert dict(agent_of(entry).data) == before  # nothing saved
    for secret in (FAST_PASSWORD, FAST_QUERY_KEY):
        assert secret not in caplog.text
        assert secret not in str(result["errors"]) + str(result["description_placeholders"])


async def test_agent_fast_server_failing_is_said_on_the_form(
    hass: HomeAssistant, entry: MockConfigEntry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fast = ScriptedServer(models=["fast-model"])
    fast.models_status = 500
    await fast.start()
    try:
        result = await fast_model_form(hass, entry, "fast-model", with_credentials(fast.url))
    finally:
        await fast.stop()
    assert result["errors"] == {CONF_FAST_URL: "fast_unknown"}
    assert [r.query for r in fast.requests] == [{"api_key": FAST_QUERY_KEY}]
    assert "Unexpected answer listing models" in caplog.text
    for secret in (FAST_PASSWORD, FAST_QUERY_KEY):
        assert secret not in caplog.text


async def test_agent_fast_server_timeout_is_said_on_the_form(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    fast = SlowModelsServer()
    await fast.start()
    try:
        with patch("custom_components.majordome.config_flow.CONNECT_TIMEOUT", 0.2):
            result = await asyncio.wait_for(fast_model_form(hass, entry, MODEL, fast.url), 5)
    finally:
        await fast.stop()
    assert result["errors"] == {CONF_FAST_URL: "fast_timeout"}


async def test_agent_fast_model_must_be_listed(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    result = await fast_model_form(hass, entry, "no-such-model")
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_FAST_MODEL: "fast_model_not_listed"}
    assert result["description_placeholders"] == {
        "model": MODEL,
        "fast_models": f"other-model, {MODEL}",
    }
    assert CONF_FAST_MODEL not in agent_of(entry).data

    result = await agent_step(
        hass, result, {**DEFAULT_OPTIONS, CONF_NAME: MODEL, CONF_FAST_MODEL: "other-model"}
    )
    await hass.async_block_till_done()
    assert result["reason"] == "reconfigure_successful"
    assert agent_of(entry).data[CONF_FAST_MODEL] == "other-model"


async def test_agent_fast_model_typed_when_its_server_lists_none(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    fast = ScriptedServer(models=[])
    fast.models_status = 404
    await fast.start()
    try:
        result = await fast_model_form(hass, entry, "typed-model", fast.url)
    finally:
        await fast.stop()
    await hass.async_block_till_done()
    assert result["reason"] == "reconfigure_successful"
    assert agent_of(entry).data[CONF_FAST_MODEL] == "typed-model"
    assert [r.path for r in fast.requests] == ["/v1/models"]


@pytest.mark.parametrize("own_url", ["", "same"])
async def test_agent_fast_model_on_the_entry_server_is_checked_with_its_key(
    hass: HomeAssistant, keyed: ScriptedServer, own_url: str
) -> None:
    entry = majordome_entry(keyed.url, model="keyed-a", api_key=API_KEY)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    url = f"{keyed.url}/" if own_url else ""
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_AGENT),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": agent_of(entry).subentry_id},
    )
    result = await agent_step(hass, result, {CONF_MODEL: "keyed-a"})
    form = {**DEFAULT_OPTIONS, CONF_NAME: "keyed-a", CONF_FAST_URL: url}
    result = await agent_step(hass, result, {**form, CONF_FAST_MODEL: "nope"})
    assert result["errors"] == {CONF_FAST_MODEL: "fast_model_not_listed"}
    keyed.requests.clear()

    result = await agent_step(hass, result, {**form, CONF_FAST_MODEL: "keyed-b"})
    await hass.async_block_till_done()
    assert result["reason"] == "reconfigure_successful"
    assert agent_of(entry).data[CONF_FAST_MODEL] == "keyed-b"
    assert keyed.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"


async def test_agent_fast_model_on_another_server_gets_no_entry_key(
    hass: HomeAssistant, keyed: ScriptedServer, scripted: ScriptedServer
) -> None:
    entry = majordome_entry(keyed.url, model="keyed-a", api_key=API_KEY)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_AGENT),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": agent_of(entry).subentry_id},
    )
    result = await agent_step(hass, result, {CONF_MODEL: "keyed-a"})
    form = {**DEFAULT_OPTIONS, CONF_NAME: "keyed-a", CONF_FAST_MODEL: "keyed-b"}
    # Another server wanting the same key does not get it: refused.
    other = ScriptedServer(models=["keyed-b"], api_key=API_KEY)
    await other.start()
    try:
        result = await agent_step(hass, result, {**form, CONF_FAST_URL: other.url})
    finally:
        await other.stop()
    assert result["errors"] == {CONF_FAST_URL: "fast_invalid_auth"}

    result = await agent_step(
        hass, result, {**form, CONF_FAST_MODEL: MODEL, CONF_FAST_URL: scripted.url}
    )
    await hass.async_block_till_done()
    assert result["reason"] == "reconfigure_successful"
    [listing] = [r for r in scripted.requests if r.path == "/v1/models"]
    assert API_KEY not in str(listing.headers)
