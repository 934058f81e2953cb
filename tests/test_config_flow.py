"""The config, reconfigure and options flows, against a real scripted server over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
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
    CONF_LLM_HASS_API,
    CONF_MAX_HISTORY,
    CONF_MAX_ITERATIONS,
    CONF_MAX_TOKENS,
    CONF_MEMORY_EVERY,
    CONF_PROMPT,
    CONF_SCREEN_LLM,
    CONF_SCREEN_TYPED,
    CONF_SCREEN_VOICE,
    CONF_TEMPERATURE,
    CONF_TIMEOUT,
    DOMAIN,
    LLM_API_NONE,
)
from custom_components.majordome.models import MajordomeData
from custom_components.majordome.prompt import default_instructions
from devtools.scripted_server import ScriptedServer
from homeassistant.config_entries import SOURCE_USER, ConfigEntryState
from homeassistant.const import CONF_API_KEY, CONF_MODEL, CONF_URL
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResult, FlowResultType
from homeassistant.helpers import selector
from homeassistant.setup import async_setup_component

from .conftest import MODEL

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


async def start(hass: HomeAssistant) -> FlowResult:
    """Start a user flow and check its first form."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {}
    return result


# --- The user flow ---------------------------------------------------------------


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
    assert result["title"] == f"keyed-b ({keyed.url})"
    assert result["data"] == {CONF_URL: keyed.url, CONF_API_KEY: API_KEY, CONF_MODEL: "keyed-b"}
    assert result["options"] == DEFAULT_OPTIONS
    entry = result["result"]
    assert entry.unique_id == f"{keyed.url}|keyed-b"
    assert entry.state is ConfigEntryState.LOADED


async def test_user_flow_without_key_stores_no_key(
    hass: HomeAssistant, scripted: ScriptedServer
) -> None:
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: scripted.url})
    assert result["step_id"] == "model"
    result = await configure(hass, result, {CONF_MODEL: MODEL})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {CONF_URL: scripted.url, CONF_MODEL: MODEL}
    assert CONF_API_KEY not in result["data"]


async def test_user_flow_custom_model_typed_over_the_list(
    hass: HomeAssistant, scripted: ScriptedServer
) -> None:
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: scripted.url})
    result = await configure(hass, result, {CONF_MODEL: "  unlisted:7b  "})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_MODEL] == "unlisted:7b"
    assert result["result"].unique_id == f"{scripted.url}|unlisted:7b"


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
    assert result["data"] == {CONF_URL: scripted.url, CONF_MODEL: "typed-model"}


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
    assert result["data"] == {CONF_URL: scripted.url, CONF_MODEL: MODEL}


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
    assert result["data"] == {CONF_URL: keyed.url, CONF_API_KEY: API_KEY, CONF_MODEL: "keyed-a"}


@pytest.mark.parametrize("suffix", ["", "/"])
async def test_duplicate_url_and_model_aborts(
    hass: HomeAssistant, scripted: ScriptedServer, suffix: str
) -> None:
    MockConfigEntry(
        domain=DOMAIN,
        data={CONF_URL: scripted.url, CONF_MODEL: MODEL},
        unique_id=f"{scripted.url}|{MODEL}",
    ).add_to_hass(hass)
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: scripted.url + suffix})
    result = await configure(hass, result, {CONF_MODEL: MODEL})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1


async def test_same_server_other_model_is_a_new_entry(
    hass: HomeAssistant, scripted: ScriptedServer
) -> None:
    MockConfigEntry(
        domain=DOMAIN,
        data={CONF_URL: scripted.url, CONF_MODEL: MODEL},
        unique_id=f"{scripted.url}|{MODEL}",
    ).add_to_hass(hass)
    result = await start(hass)
    result = await configure(hass, result, {CONF_URL: scripted.url})
    result = await configure(hass, result, {CONF_MODEL: "other-model"})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert len(hass.config_entries.async_entries(DOMAIN)) == 2


# --- Reconfigure -----------------------------------------------------------------


async def test_reconfigure_changes_server_model_and_key(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, keyed: ScriptedServer
) -> None:
    assert entry.state is ConfigEntryState.LOADED
    before: MajordomeData = entry.runtime_data

    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    assert suggested(result, CONF_URL) == scripted.url

    result = await configure(hass, result, {CONF_URL: keyed.url, CONF_API_KEY: API_KEY})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "model"
    result = await configure(hass, result, {CONF_MODEL: "keyed-b"})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"

    updated = hass.config_entries.async_get_entry(entry.entry_id)
    assert updated is not None
    assert updated.data == {CONF_URL: keyed.url, CONF_API_KEY: API_KEY, CONF_MODEL: "keyed-b"}
    assert updated.unique_id == f"{keyed.url}|keyed-b"
    assert updated.title == f"keyed-b ({keyed.url})"
    assert updated.options == DEFAULT_OPTIONS
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1
    # Reloaded: a new client for the new server.
    assert updated.state is ConfigEntryState.LOADED
    assert updated.runtime_data is not before
    assert str(updated.runtime_data.client.base_url).rstrip("/") == keyed.url
    assert updated.runtime_data.client.api_key == API_KEY


async def test_reconfigure_model_defaults_to_current(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    result = await entry.start_reconfigure_flow(hass)
    result = await configure(hass, result, {CONF_URL: scripted.url})
    assert result["step_id"] == "model"
    # The listing is sorted ("other-model" first), but the current model is proposed.
    assert default(result, CONF_MODEL) == MODEL
    result = await configure(hass, result, {CONF_MODEL: MODEL})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.unique_id == f"{scripted.url}|{MODEL}"


async def test_reconfigure_shows_errors(
    hass: HomeAssistant, entry: MockConfigEntry, keyed: ScriptedServer
) -> None:
    result = await entry.start_reconfigure_flow(hass)
    result = await configure(hass, result, {CONF_URL: keyed.url, CONF_API_KEY: "sk-wrong"})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    assert result["errors"] == {"base": "invalid_auth"}


async def test_reconfigure_onto_another_entry_aborts(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    other = MockConfigEntry(
        domain=DOMAIN,
        data={CONF_URL: scripted.url, CONF_MODEL: "other-model"},
        unique_id=f"{scripted.url}|other-model",
    )
    other.add_to_hass(hass)
    data_before = dict(entry.data)

    result = await entry.start_reconfigure_flow(hass)
    result = await configure(hass, result, {CONF_URL: scripted.url})
    result = await configure(hass, result, {CONF_MODEL: "other-model"})
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert dict(entry.data) == data_before
    assert entry.unique_id == f"{scripted.url}|{MODEL}"


# --- Options ---------------------------------------------------------------------


NEW_OPTIONS: dict[str, Any] = {
    CONF_LLM_HASS_API: LLM_API_NONE,
    CONF_TEMPERATURE: 0.8,
    CONF_MAX_TOKENS: 512,
    CONF_MAX_ITERATIONS: 4,
    CONF_MAX_HISTORY: 0,
    CONF_TIMEOUT: 30,
    CONF_MEMORY_EVERY: 3,
    CONF_SCREEN_VOICE: False,
    CONF_SCREEN_TYPED: True,
    CONF_SCREEN_LLM: True,
    CONF_ALLOWED_SCRIPTS: ["Latin", "Cyrillic"],
}


async def test_options_form_suggests_current_values(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"
    assert suggested(result, CONF_PROMPT) == default_instructions(hass.config.language)
    for key, value in DEFAULT_OPTIONS.items():
        assert suggested(result, key) == value, key


async def test_options_untouched_default_prompt_is_stored_empty(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    before: MajordomeData = entry.runtime_data
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {CONF_PROMPT: default_instructions(hass.config.language), **NEW_OPTIONS},
    )
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    expected = {CONF_PROMPT: "", **NEW_OPTIONS}
    assert result["data"] == expected

    reloaded = hass.config_entries.async_get_entry(entry.entry_id)
    assert reloaded is not None
    assert dict(reloaded.options) == expected
    assert isinstance(reloaded.options[CONF_MAX_TOKENS], int)
    assert reloaded.state is ConfigEntryState.LOADED
    assert reloaded.runtime_data is not before
    assert reloaded.runtime_data.options == expected
    # The new timeout reached the new client.
    assert reloaded.runtime_data.client.timeout == 30


async def test_options_custom_prompt_is_stored_as_written(
    hass: HomeAssistant, entry: MockConfigEntry
) -> None:
    before: MajordomeData = entry.runtime_data
    custom = "You are Jeeves. Answer in {{ 'one' }} sentence."
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_PROMPT: custom, **DEFAULT_OPTIONS}
    )
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options[CONF_PROMPT] == custom
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data is not before

    # The form then suggests the stored prompt, not the default.
    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert suggested(result, CONF_PROMPT) == custom


async def test_options_without_prompt_field(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(result["flow_id"], NEW_OPTIONS)
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {CONF_PROMPT: "", **NEW_OPTIONS}


async def test_options_out_of_range_is_refused(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    result = await hass.config_entries.options.async_init(entry.entry_id)
    with pytest.raises(vol.Invalid):
        await hass.config_entries.options.async_configure(
            result["flow_id"], {**NEW_OPTIONS, CONF_MAX_ITERATIONS: 0}
        )
    assert entry.options == DEFAULT_OPTIONS
