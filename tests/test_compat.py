"""The adapter between Home Assistant releases, through what reaches the server."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.majordome import compat
from devtools.house import async_setup_house
from devtools.scripted_server import ScriptedServer, text, tool_calls
from homeassistant.auth.models import User
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component

from .helpers import converse

# What says which values a JSON schema accepts; llama.cpp refuses a request where a
# property has none of them ("JSON schema conversion failed: Unrecognized schema").
KINDS = {"type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "properties", "items"}


def _untyped(schema: dict[str, Any], path: str = "") -> list[str]:
    """The paths of the properties in `schema` that say nothing of their values."""
    found = []
    for name, prop in (schema.get("properties") or {}).items():
        if not prop.keys() & KINDS:
            found.append(f"{path}{name}")
        found.extend(_untyped(prop, f"{path}{name}."))
    return found


async def test_every_tool_parameter_has_a_type(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """The demo house's tools (media players included) as llama.cpp's grammar needs them."""
    assert await async_setup_component(hass, "homeassistant", {})
    await async_setup_house(hass, "demo")
    scripted.add(text("Hello."))
    await converse(hass, entry, "hello")

    tools = scripted.chat_requests[0]["tools"]
    assert len(tools) > 10
    untyped = {
        tool["function"]["name"]: missing
        for tool in tools
        if (missing := _untyped(tool["function"]["parameters"]))
    }
    assert untyped == {}


def test_a_probatio_boolean_is_a_boolean() -> None:
    probatio = pytest.importorskip("probatio", reason="probatio replaces voluptuous in 2026.9")
    schema = probatio.Schema(
        {probatio.Required("muted", description="Mute or not"): probatio.Boolean()}
    )
    converted = compat.tool_schema(schema, None)
    assert converted["properties"]["muted"] == {"type": "boolean", "description": "Mute or not"}


@pytest.mark.parametrize(
    ("name", "tools", "meant"),
    [
        ("HassTurnOn", ["intent__HassTurnOn", "intent__HassTurnOff"], "intent__HassTurnOn"),
        ("intent__HassTurnOn", ["HassTurnOn"], "HassTurnOn"),
        ("HassTurnOn", ["HassTurnOn"], "HassTurnOn"),
        ("HassTurnOn", ["a__HassTurnOn", "b__HassTurnOn"], None),
        ("HassDance", ["intent__HassTurnOn"], None),
    ],
)
def test_a_tool_is_found_by_its_name_with_or_without_prefix(
    name: str, tools: list[str], meant: str | None
) -> None:
    assert compat.tool_named(name, tools) == meant


def test_the_model_sees_base_names_where_they_are_unique() -> None:
    shown = compat.shown_tool_names(["intent__HassTurnOn", "a__Get", "b__Get", "remember"])
    assert shown == {
        "intent__HassTurnOn": "HassTurnOn",
        "a__Get": "a__Get",  # two tools share the base name: the prefix tells them apart
        "b__Get": "b__Get",
        "remember": "remember",
    }
    prompt = "Use intent__HassTurnOn to lock. Call a__Get."
    assert compat.with_shown_names(prompt, shown) == "Use HassTurnOn to lock. Call a__Get."


async def test_the_model_is_shown_tools_and_instructions_without_prefixes(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """2026.9+ prefixes Assist's tools (intent__HassTurnOn); the model sees HassTurnOn.

    Its call by that name acts on the house. (On 2025.4, whose names have no prefix, this
    holds as it is.)
    """
    assert await async_setup_component(hass, "homeassistant", {})
    await async_setup_house(hass, "demo")
    scripted.add(tool_calls(("HassTurnOn", {"name": "Kitchen Light"})), text("Done."))
    await converse(hass, entry, "I would love some light in the kitchen")  # not HA's sentence

    request = scripted.chat_requests[0]
    names = [tool["function"]["name"] for tool in request["tools"]]
    assert "HassTurnOn" in names
    assert not [name for name in names if "__" in name]
    assert "intent__" not in request["messages"][0]["content"]
    assert hass.states.get("light.kitchen_light").state == "on"


async def test_no_deprecation_is_reported_about_majordome(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    caplog: pytest.LogCaptureFixture,
    hass_admin_user: User,
) -> None:
    """A turn with Assist's tools and Majordome's own: Home Assistant has nothing to report.

    On 2026.10+ it reports tools without an integration, tools returning plain JSON and
    `ToolResultContent.tool_result` being read, each naming the custom integration.
    """
    assert await async_setup_component(hass, "homeassistant", {})
    await async_setup_house(hass, "demo")
    scripted.add(
        tool_calls(
            ("HassTurnOn", {"name": "Kitchen Light"}),
            ("remember", {"fact": "The cat is Miso"}),
            ("GetDateTime", {}),
        ),
        text("Done, noted, and it is late."),
    )
    await converse(
        hass,
        entry,
        "turn on the kitchen light, remember the cat, what time is it?",
        user=hass_admin_user,  # memory is written for a person
    )

    assert hass.states.get("light.kitchen_light").state == "on"
    reports = [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING
        and "majordome" in record.getMessage().lower()
        # asyncio's debug mode names a slow task (and so Majordome's) on a loaded machine
        and not (record.name == "asyncio" and " took " in record.getMessage())
    ]
    assert reports == []
