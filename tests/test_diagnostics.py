"""Config-entry diagnostics: the setup, its agents and the last turn, never a secret."""

from __future__ import annotations

from collections.abc import AsyncGenerator
import json
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.diagnostics import redact_url
from devtools.scripted_server import ScriptedServer, error, text
from homeassistant.components import conversation
from homeassistant.const import CONF_API_KEY, CONF_MODEL, CONF_URL
from homeassistant.core import Context, HomeAssistant
from homeassistant.setup import async_setup_component

from .helpers import MODEL, agent_of, majordome_entry

API_KEY = "sk-secret-4f9a1c"


@pytest.fixture
async def keyed(socket_enabled: None) -> AsyncGenerator[ScriptedServer]:
    """A scripted server that requires the API key."""
    server = ScriptedServer(models=[MODEL], api_key=API_KEY)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def keyed_entry(hass: HomeAssistant, keyed: ScriptedServer) -> MockConfigEntry:
    """A loaded entry with an API key."""
    assert await async_setup_component(hass, "homeassistant", {})
    entry = majordome_entry(keyed.url, api_key=API_KEY)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


async def test_diagnostics_before_any_turn(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    keyed_entry: MockConfigEntry,
    keyed: ScriptedServer,
) -> None:
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, keyed_entry)
    assert diagnostics["data"] == {CONF_URL: keyed.url, CONF_API_KEY: "**REDACTED**"}
    assert diagnostics["options"] == {}
    assert diagnostics["agents"] == [
        {
            "subentry_id": agent_of(keyed_entry).subentry_id,
            "title": MODEL,
            "data": {CONF_MODEL: MODEL, **DEFAULT_OPTIONS},
        }
    ]
    assert diagnostics["last_turn"] is None
    assert API_KEY not in json.dumps(diagnostics)
    # The entry itself still has its key.
    assert keyed_entry.data[CONF_API_KEY] == API_KEY


async def test_diagnostics_after_a_turn(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    keyed_entry: MockConfigEntry,
    keyed: ScriptedServer,
) -> None:
    reply = text("Hel", "lo.")
    reply.timings = {"cache_n": 120, "prompt_n": 7}
    keyed.add(reply)
    result = await conversation.async_converse(
        hass, "hi", None, Context(), agent_id=keyed_entry.entry_id
    )
    assert result.response.speech["plain"]["speech"] == "Hello."
    # The turn really went through the key-checking server.
    assert keyed.requests[-1].headers["Authorization"] == f"Bearer {API_KEY}"

    # Fetched over HTTP, as the frontend does: the whole answer is checked for the key.
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, keyed_entry)
    assert API_KEY not in json.dumps(diagnostics)
    assert diagnostics["data"][CONF_API_KEY] == "**REDACTED**"  # type: ignore[index]

    last_turn: Any = diagnostics["last_turn"]
    assert isinstance(last_turn, dict)
    assert last_turn["error"] is None
    completions = last_turn["completions"]
    assert len(completions) == 1
    completion = completions[0]
    assert completion["finish_reason"] == "stop"
    assert completion["cache_n"] == 120
    assert completion["prompt_n"] == 7
    assert completion["first_token_s"] is not None
    assert 0 <= completion["first_token_s"] <= completion["total_s"]
    for key in ("total_s", "prepare_s", "server_s", "overhead_s"):
        assert isinstance(last_turn[key], float), key
    assert last_turn["total_s"] > 0
    assert last_turn["server_s"] == pytest.approx(completion["total_s"])
    assert last_turn["overhead_s"] == pytest.approx(last_turn["total_s"] - last_turn["server_s"])
    assert last_turn["server_s"] <= last_turn["total_s"]


async def test_diagnostics_after_a_failed_turn(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    keyed_entry: MockConfigEntry,
    keyed: ScriptedServer,
) -> None:
    keyed.add(error(500, f"upstream broke, key was {API_KEY}"))
    await conversation.async_converse(hass, "hi", None, Context(), agent_id=keyed_entry.entry_id)
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, keyed_entry)
    last_turn: Any = diagnostics["last_turn"]
    assert last_turn["error"] == "server_error"
    assert API_KEY not in json.dumps(diagnostics)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:11434/v1", "http://127.0.0.1:11434/v1"),
        ("https://bob:hunter2@llm.example:8443/v1", "https://**REDACTED**@llm.example:8443/v1"),
        ("https://token@llm.example/v1", "https://**REDACTED**@llm.example/v1"),
        ("https://llm.example/v1?key=hunter2", "https://llm.example/v1?**REDACTED**"),
    ],
)
def test_url_credentials_are_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown


async def test_diagnostics_hide_credentials_in_the_url(
    hass: HomeAssistant, hass_client: ClientSessionGenerator, socket_enabled: None
) -> None:
    assert await async_setup_component(hass, "homeassistant", {})
    entry = majordome_entry("http://bob:hunter2@127.0.0.1:9/v1?key=sk-in-query")
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    dumped = json.dumps(diagnostics)
    assert "hunter2" not in dumped
    assert "sk-in-query" not in dumped
    assert diagnostics["data"][CONF_URL] == "http://**REDACTED**@127.0.0.1:9/v1?**REDACTED**"  # type: ignore[index]
