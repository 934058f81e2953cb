"""Fixtures: a scripted OpenAI-compatible server on loopback and a Majordome entry on it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import DOMAIN
from devtools.scripted_server import ScriptedServer
from homeassistant.const import CONF_MODEL, CONF_URL
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component

MODEL = "scripted-model"


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load Majordome from custom_components/."""


@pytest.fixture
async def scripted(socket_enabled: None) -> AsyncGenerator[ScriptedServer]:
    """A scripted OpenAI-compatible server on 127.0.0.1."""
    server = ScriptedServer(models=[MODEL, "other-model"])
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def entry_options() -> dict[str, Any]:
    """The options the entry is created with; tests override this fixture."""
    return dict(DEFAULT_OPTIONS)


@pytest.fixture
async def entry(
    hass: HomeAssistant, scripted: ScriptedServer, entry_options: dict[str, Any]
) -> MockConfigEntry:
    """A loaded Majordome entry talking to the scripted server."""
    assert await async_setup_component(hass, "homeassistant", {})
    config_entry = MockConfigEntry(
        domain=DOMAIN,
        title=f"{MODEL} ({scripted.url})",
        data={CONF_URL: scripted.url, CONF_MODEL: MODEL},
        options=entry_options,
        unique_id=f"{scripted.url}|{MODEL}",
    )
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    return config_entry
