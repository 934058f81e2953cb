"""The talking page: registered as a sidebar panel and served, only with a frontend."""

from __future__ import annotations

import hashlib
from http import HTTPStatus
from pathlib import Path

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator, WebSocketGenerator

from custom_components.majordome.const import (
    DOMAIN,
    PANEL_ELEMENT,
    PANEL_MODULE_URL,
    PANEL_URL_PATH,
    VOICE_URL,
)
from custom_components.majordome.voice import panel
from homeassistant.components.frontend import DATA_PANELS
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component

MODULE = Path(panel.__file__).parent / "www" / f"{PANEL_ELEMENT}.js"


def expected_module_url() -> str:
    """The URL the frontend loads: the file's path, with a hash of its content."""
    return f"{PANEL_MODULE_URL}?v={hashlib.sha256(MODULE.read_bytes()).hexdigest()[:12]}"


@pytest.fixture
async def frontend(hass: HomeAssistant) -> None:
    """Home Assistant's frontend, set up before Majordome (as after_dependencies orders it).

    Tests list it before `entry`: pytest sets fixtures up in the order they are asked for.
    """
    assert await async_setup_component(hass, "frontend", {})


async def test_panel_registered_and_module_served_with_frontend(
    hass: HomeAssistant,
    frontend: None,
    entry: MockConfigEntry,
    *,
    hass_client: ClientSessionGenerator,
    hass_ws_client: WebSocketGenerator,
    hass_read_only_access_token: str,
) -> None:
    assert entry.state is ConfigEntryState.LOADED

    registered = hass.data[DATA_PANELS][PANEL_URL_PATH].to_response()
    assert registered["component_name"] == "custom"
    assert registered["title"] == "Majordome"
    assert registered["icon"] == "mdi:account-voice"
    assert registered["require_admin"] is False
    custom = registered["config"]["_panel_custom"]
    assert custom["name"] == PANEL_ELEMENT
    assert custom["module_url"] == expected_module_url()
    assert custom["embed_iframe"] is False

    # What a user who is not an admin gets from the frontend's own panel list.
    ws = await hass_ws_client(hass, hass_read_only_access_token)
    await ws.send_json_auto_id({"type": "get_panels"})
    answer = await ws.receive_json()
    assert answer["success"], answer
    assert answer["result"][PANEL_URL_PATH]["config"]["_panel_custom"] == custom

    client = await hass_client()
    response = await client.get(custom["module_url"])
    assert response.status == HTTPStatus.OK
    assert "javascript" in response.headers["Content-Type"]
    assert "max-age" in response.headers.get("Cache-Control", "")  # the ?v= busts it
    body = await response.text()
    assert body == MODULE.read_text(encoding="utf-8")
    assert f'customElements.define("{PANEL_ELEMENT}"' in body
    assert VOICE_URL in body


async def test_no_frontend_no_panel_and_majordome_still_loads(
    hass: HomeAssistant, entry: MockConfigEntry, hass_client: ClientSessionGenerator
) -> None:
    assert entry.state is ConfigEntryState.LOADED
    assert "frontend" not in hass.config.components
    assert PANEL_URL_PATH not in hass.data.get(DATA_PANELS, {})

    client = await hass_client()
    response = await client.get(PANEL_MODULE_URL)
    assert response.status == HTTPStatus.NOT_FOUND


async def test_register_panel_is_idempotent(hass: HomeAssistant, frontend: None) -> None:
    assert await async_setup_component(hass, "homeassistant", {})
    assert await async_setup_component(hass, DOMAIN, {})
    assert PANEL_URL_PATH in hass.data[DATA_PANELS]
    # A second call (a second setup path) must not raise "Overwriting panel".
    assert await panel.async_register_panel(hass)
    assert list(hass.data[DATA_PANELS]).count(PANEL_URL_PATH) == 1


def test_module_version_follows_content(tmp_path: Path) -> None:
    module = tmp_path / "module.js"
    module.write_text("export const a = 1;\n")
    first = panel.module_version(module)
    module.write_text("export const a = 2;\n")
    assert panel.module_version(module) != first
    assert panel.module_version() == expected_module_url().rsplit("=", 1)[1]
