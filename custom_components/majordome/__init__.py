"""Majordome: an OpenAI-compatible LLM as the butler of the house."""

from __future__ import annotations

from functools import partial

import openai

from homeassistant.const import CONF_API_KEY, CONF_URL, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import config_validation as cv, llm
from homeassistant.helpers.httpx_client import get_async_client
from homeassistant.helpers.typing import ConfigType

from .backend import create_client, key_for
from .const import CONF_FAST_MODEL, CONF_FAST_URL, DEFAULT_TIMEOUT, DOMAIN, LOGGER
from .memory import MemoryStore
from .migration import VERSION, migrate_to_agents
from .models import MajordomeConfigEntry, MajordomeData, agent_settings, agents_of
from .services import async_register_services
from .tools import MajordomeAPI
from .voice.endpoint import VoiceView
from .voice.panel import async_register_panel

PLATFORMS = [Platform.CONVERSATION]
CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Register, once: the tools as an LLM API for every agent, services, the voice endpoint.

    And the talking page in the sidebar, when the frontend is loaded.
    """
    llm.async_register_api(hass, MajordomeAPI(hass))
    async_register_services(hass)
    hass.http.register_view(VoiceView())
    await async_register_panel(hass)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: MajordomeConfigEntry) -> bool:
    """Set up a server's agents: one client and one memory for them all.

    The server is not probed here: while it is down the agents stay available and
    tell the user what is wrong, which a voice user hears, instead of vanishing.
    """
    client = await _async_client(hass, entry.data[CONF_URL], entry.data.get(CONF_API_KEY))
    entry.runtime_data = MajordomeData(
        client=client,
        options=dict(entry.options),
        memory=MemoryStore(hass, entry),
        agents=agent_settings(entry),
        fast_clients=await _async_fast_clients(hass, entry),
    )
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    entry.async_on_unload(entry.add_update_listener(_async_update_listener))
    return True


async def _async_client(hass: HomeAssistant, url: str, api_key: str | None) -> openai.AsyncOpenAI:
    """A client for the server at `url`, with no patience of its own (each agent sets it)."""
    return await hass.async_add_executor_job(
        partial(create_client, url, api_key, get_async_client(hass), float(DEFAULT_TIMEOUT))
    )


async def _async_fast_clients(
    hass: HomeAssistant, entry: MajordomeConfigEntry
) -> dict[str, openai.AsyncOpenAI]:
    """A client for each agent whose fast model is on a server of its own.

    The entry's API key goes to the entry's server only: another server gets the
    credentials its own URL carries, if any.
    """
    clients: dict[str, openai.AsyncOpenAI] = {}
    for agent in agents_of(entry):
        url = agent.data.get(CONF_FAST_URL)
        if not (url and agent.data.get(CONF_FAST_MODEL)):
            continue
        api_key = key_for(url, entry.data[CONF_URL], entry.data.get(CONF_API_KEY))
        clients[agent.subentry_id] = await _async_client(hass, url, api_key)
    return clients


async def async_unload_entry(hass: HomeAssistant, entry: MajordomeConfigEntry) -> bool:
    """Unload the agents."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)


async def async_migrate_entry(hass: HomeAssistant, entry: MajordomeConfigEntry) -> bool:
    """Bring an entry of an older Majordome to this version's shape."""
    if entry.version > VERSION:
        LOGGER.error(
            "Entry %s is from a newer Majordome: downgrading is not supported", entry.title
        )
        return False
    if entry.version == 1:
        migrate_to_agents(hass, entry)
    return True


async def _async_update_listener(hass: HomeAssistant, entry: MajordomeConfigEntry) -> None:
    """Reload when the options or the agents change (not on a memory write)."""
    runtime = entry.runtime_data
    if dict(entry.options) != runtime.options or agent_settings(entry) != runtime.agents:
        await hass.config_entries.async_reload(entry.entry_id)
