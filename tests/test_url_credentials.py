"""Credentials written in the server's URL (a proxy's login, `?api_key=`) stay secret.

They reach the server and nothing else: not the entry's title, the agent's entity id or
device, the diagnostics, nor any log (Majordome's, or the clients' own debug logs and
errors, which echo the URL).
"""

from __future__ import annotations

import base64
import json
import logging

import pytest
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.majordome.backend import REDACTED
from custom_components.majordome.const import DOMAIN
from devtools.scripted_server import ScriptedServer, error, text
from homeassistant import config_entries
from homeassistant.const import CONF_MODEL, CONF_URL
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.setup import async_setup_component

from .helpers import MODEL, converse, speech

USER, PASSWORD, QUERY_KEY = "bob", "hunter2-pw", "sk-query-77"
SECRETS = (PASSWORD, f"{USER}:{PASSWORD}", QUERY_KEY)


async def test_credentials_in_the_url_show_nowhere(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    scripted: ScriptedServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Every log, the clients' debug logs too: as when a user turns debug logging on.
    caplog.set_level(logging.DEBUG)
    assert await async_setup_component(hass, "homeassistant", {})
    url = scripted.url.replace("http://", f"http://{USER}:{PASSWORD}@") + f"?api_key={QUERY_KEY}"

    # Set up through the config flow; the query reaches the server: its models are listed.
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_URL: url})
    assert result["step_id"] == "model"
    assert result["errors"] == {}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_MODEL: MODEL})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    entry = result["result"]
    assert entry.data[CONF_URL] == url  # kept, to reach the server

    # A turn: the credentials reach the server, in the query and as the proxy's login.
    scripted.add(text("Hello."))
    assert speech(await converse(hass, entry, "hi")) == "Hello."
    request = scripted.requests[-1]
    assert request.path == "/v1/chat/completions"
    assert request.query == {"api_key": QUERY_KEY}
    login = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {login}"

    # A server whose error echoes the URL, and a client error that names it.
    scripted.add(error(404, f"no model at {url}"))
    await converse(hass, entry, "hi again")

    entities = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    devices = dr.async_entries_for_config_entry(dr.async_get(hass), entry.entry_id)
    assert [entity.entity_id for entity in entities] == ["conversation.scripted_model"]
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    shown = {
        "title": entry.title,
        "entities": [(e.entity_id, e.original_name, e.name, e.unique_id) for e in entities],
        "devices": [repr(device) for device in devices],
        "diagnostics": json.dumps(diagnostics),
        "logs": caplog.text,
    }
    for place, what in shown.items():
        for secret in SECRETS:
            assert secret not in str(what), place
    assert entry.title == scripted.url
    # The logs did write the URL, and the error that echoed it: hidden.
    assert f"http://{REDACTED}@127.0.0.1:{scripted.port}/v1/chat/completions" in caplog.text
    assert f"no model at http://{REDACTED}@127.0.0.1" in caplog.text
