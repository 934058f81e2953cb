"""A retry after a failed match narrows the target the model named, never moves it.

Issue 12, item 10: dropping the area of "the lamp in the kitchen" turned on the bedroom
lamp. A made-up place may go (small models invent floors); one that exists stays.
The house is real (devtools.house), the model is the scripted server.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import CONF_LOCAL_INTENTS
from devtools.house import async_setup_house
from devtools.scripted_server import ScriptedServer, text, tool_calls
from homeassistant.core import HomeAssistant
from homeassistant.helpers import area_registry as ar, floor_registry as fr
from homeassistant.setup import async_setup_component

from .helpers import converse, tool_messages

KITCHEN_LIGHT = "light.kitchen_light"
BEDROOM_LAMP = "light.bedroom_lamp"


@pytest.fixture
def entry_options() -> dict[str, Any]:
    """The model takes every turn (Home Assistant's own sentences would answer first)."""
    return {**DEFAULT_OPTIONS, CONF_LOCAL_INTENTS: False}


@pytest.fixture
async def house(hass: HomeAssistant) -> None:
    """The demo house, its kitchen on a ground floor."""
    assert await async_setup_component(hass, "homeassistant", {})
    await async_setup_house(hass, "demo")
    ground = fr.async_get(hass).async_create("Ground floor", aliases={"Rez-de-chaussée"})
    areas = ar.async_get(hass)
    kitchen = areas.async_get_area_by_name("Kitchen")
    assert kitchen is not None
    areas.async_update(kitchen.id, floor_id=ground.floor_id)


async def turn_on(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, arguments: dict[str, Any]
) -> dict[str, Any]:
    """The model calls HassTurnOn with these arguments; return the tool's result."""
    scripted.add(tool_calls(("HassTurnOn", arguments)), text("Right."))
    await converse(hass, entry, "turn on the lamp in the kitchen")
    [result] = tool_messages(scripted.chat_requests[1])
    return dict(json.loads(result["content"]))


@pytest.mark.usefixtures("house")
@pytest.mark.parametrize("name", ["Bedroom Lamp", "bedroom_lamp"])
@pytest.mark.parametrize(
    "place",
    [
        {"area": "Kitchen"},
        {"area": "cuisine"},  # an alias, in another case
        {"floor": "Ground floor"},
        {"floor": "Rez-de-chaussée"},
        {"area": "Kitchen", "floor": "Atlantis"},  # the made-up floor goes, the area stays
    ],
    ids=["area", "area-alias", "floor", "floor-alias", "area-and-made-up-floor"],
)
async def test_a_retry_never_acts_outside_the_place_named(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    name: str,
    place: dict[str, str],
) -> None:
    result = await turn_on(hass, entry, scripted, {"name": name, **place})

    assert hass.states.get(BEDROOM_LAMP).state == "off"
    assert result["error"] == "MatchFailedError"


@pytest.mark.usefixtures("house")
@pytest.mark.parametrize(
    "arguments",
    [
        {"name": "kitchen_light", "area": "Kitchen"},  # the id as name, a real area kept
        {"name": "Kitchen Light", "area": "Atlantis"},  # a made-up area dropped
        {"name": "kitchen_light", "floor": "Ground floor", "device_class": "outlet"},
    ],
    ids=["id-in-its-area", "made-up-area", "id-on-its-floor"],
)
async def test_a_retry_still_narrows_to_the_named_light(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    arguments: dict[str, Any],
) -> None:
    result = await turn_on(hass, entry, scripted, arguments)

    assert hass.states.get(KITCHEN_LIGHT).state == "on"
    assert hass.states.get(BEDROOM_LAMP).state == "off"
    assert result["response_type"] == "action_done"
