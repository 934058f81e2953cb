"""What the tests say to the agent and read back, shared by the test modules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
import importlib
import json
from typing import Any

from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import DOMAIN, HOUSEHOLD_OPTIONS, SUBENTRY_AGENT
from custom_components.majordome.migration import VERSION
from custom_components.majordome.models import default_agent
from custom_components.majordome.tools import GetTimeTool
from devtools.scripted_wyoming import ScriptedWyoming
from homeassistant.auth.models import User
from homeassistant.components import conversation
from homeassistant.config_entries import ConfigSubentry, ConfigSubentryData
from homeassistant.const import CONF_API_KEY, CONF_MODEL, CONF_URL
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import chat_session, device_registry as dr, entity_registry as er

MODEL = "scripted-model"


def agent_data(model: str = MODEL, options: dict[str, Any] | None = None) -> ConfigSubentryData:
    """An agent subentry as stored: its model and options, titled by its model."""
    return ConfigSubentryData(
        subentry_type=SUBENTRY_AGENT,
        title=model,
        data={CONF_MODEL: model, **(DEFAULT_OPTIONS if options is None else options)},
        unique_id=None,
    )


def majordome_entry(
    url: str,
    options: dict[str, Any] | None = None,
    *,
    model: str = MODEL,
    api_key: str | None = None,
) -> MockConfigEntry:
    """A server entry with one agent, as the config flow makes it.

    `options` is the whole setup, as 0.1 kept it in one place: the household's keys
    (the voice servers) go to the entry's options, the others to the agent's.
    """
    options = dict(DEFAULT_OPTIONS if options is None else options)
    household = {key: options.pop(key) for key in HOUSEHOLD_OPTIONS if key in options}
    data = {CONF_URL: url} if api_key is None else {CONF_URL: url, CONF_API_KEY: api_key}
    return MockConfigEntry(
        domain=DOMAIN,
        title=url,
        data=data,
        options=household,
        subentries_data=[agent_data(model, options)],
        version=VERSION,
    )


def agent_of(entry: MockConfigEntry) -> ConfigSubentry:
    """The entry's first agent."""
    agent = default_agent(entry)
    assert agent is not None
    return agent


def agent_entity_id(hass: HomeAssistant, entry: MockConfigEntry) -> str:
    """The conversation entity of the entry's first agent."""
    entity_id = er.async_get(hass).async_get_entity_id(
        conversation.DOMAIN, DOMAIN, agent_of(entry).subentry_id
    )
    assert entity_id is not None
    return entity_id


def device_owners(device: dr.DeviceEntry) -> dict[str, set[str | None]]:
    """The entries and subentries a device belongs to (a single pair from 2026.10)."""
    if hasattr(device, "config_subentry_id"):
        return {device.config_entry_id: {device.config_subentry_id}}
    return device.config_entries_subentries


def update_agent(hass: HomeAssistant, entry: MockConfigEntry, **changes: Any) -> None:
    """Change options of the entry's first agent (which reloads the entry)."""
    agent = agent_of(entry)
    assert hass.config_entries.async_update_subentry(entry, agent, data={**agent.data, **changes})


def _assist_tool_name(module: str, name: str) -> str | None:
    """The name of one of Assist's tools on this release, if it has it."""
    try:
        return str(getattr(importlib.import_module(module), name).name)
    except (ImportError, AttributeError):
        return None


# The clock the model reads: Home Assistant's GetDateTime where Assist offers it
# (2025.11+; `llm__GetDateTime` from 2026.9), else Majordome's own.
CLOCK_TOOL = (
    _assist_tool_name("homeassistant.components.llm.llm", "GetDateTimeTool")
    or _assist_tool_name("homeassistant.helpers.llm", "GetDateTimeTool")
    or GetTimeTool.name
)
# Assist's intent tools are prefixed with their integration from 2026.9.
TURN_ON_TOOL = "intent__HassTurnOn" if CLOCK_TOOL.startswith("llm__") else "HassTurnOn"


async def converse(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    text: str,
    conversation_id: str | None = None,
    *,
    language: str | None = "en",
    user: User | None = None,
    device_id: str | None = None,
    deltas: list[dict[str, Any]] | None = None,
) -> conversation.ConversationResult:
    """Send one message to the agent, as the Assist dialog, a satellite or an automation.

    `deltas` collects what a chat-log listener (the Assist dialog, the voice
    endpoint) sees while the reply streams.
    """
    context = Context(user_id=user.id if user else None)
    if deltas is None:
        return await conversation.async_converse(
            hass, text, conversation_id, context, language, entry.entry_id, device_id
        )
    # Opening the chat log first, as the voice endpoint and the pipeline do.
    with (
        chat_session.async_get_chat_session(hass, conversation_id) as session,
        conversation.async_get_chat_log(
            hass, session, chat_log_delta_listener=lambda _, delta: deltas.append(delta)
        ),
    ):
        return await conversation.async_converse(
            hass, text, session.conversation_id, context, language, entry.entry_id, device_id
        )


def speech(result: conversation.ConversationResult) -> str:
    """The plain speech of a result ("" when nothing is to be said)."""
    return str(result.response.speech.get("plain", {}).get("speech", ""))


def tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool results a recorded request sent back to the model."""
    return [m for m in request["messages"] if m["role"] == "tool"]


def tool_results(request: dict[str, Any]) -> list[Any]:
    """The tool results a recorded request sent back to the model, decoded."""
    return [json.loads(message["content"]) for message in tool_messages(request)]


def user_messages(request: dict[str, Any]) -> list[str]:
    """What the user said in a recorded request, in order."""
    return [str(m["content"]) for m in request["messages"] if m["role"] == "user"]


@asynccontextmanager
async def running_wyoming(**settings: Any) -> AsyncIterator[ScriptedWyoming]:
    """A scripted Wyoming server on loopback (STT and TTS unless told), stopped after."""
    server = ScriptedWyoming(**settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
