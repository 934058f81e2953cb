"""Which device a sentence names (names.py), on the demo house (devtools.house)."""

from __future__ import annotations

import pytest

from custom_components.majordome import names
from devtools.house import async_setup_house
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component

KITCHEN = "light.kitchen_light"
HALLWAY = "light.hallway_light"


@pytest.fixture
async def house(hass: HomeAssistant) -> None:
    assert await async_setup_component(hass, "homeassistant", {})
    await async_setup_house(hass, "demo")


@pytest.mark.usefixtures("house")
@pytest.mark.parametrize(
    ("said", "named"),
    [
        # Kind in area, either order, through an area's alias.
        ("dim the office lamp to 30 percent", {"light.lampe_du_bureau"}),
        ("allume la lampe de la chambre", {"light.bedroom_lamp"}),
        ("turn on the lamp in the kitchen", {"light.kitchen_light"}),
        # A kind its name gives it: "Porte du garage" is a door, "Ventilateur" a fan.
        ("open the garage door", {"cover.porte_du_garage"}),
        ("get the fan going", {"switch.ventilateur_du_bureau"}),
        ("mets la télé à 20 %", {"media_player.tele_du_salon"}),
        # The name itself; the longer name wins over a kind inside it.
        ("éteins le sèche-serviettes", {"switch.seche_serviettes"}),
        ("turn on the kitchen light and the hallway light", {KITCHEN, HALLWAY}),
        # A kind that is not alone in the house names nothing; nor do unexposed devices.
        ("turn on the lamp", set()),
        ("turn on the garage light", set()),
        ("switch off the alarm", set()),
    ],
)
async def test_the_devices_a_sentence_names(
    hass: HomeAssistant, said: str, named: set[str]
) -> None:
    assert set(names.named_in(said, names.device_names(hass))) == named


@pytest.mark.usefixtures("house")
async def test_a_device_is_of_its_domain_its_class_and_what_its_name_says(
    hass: HomeAssistant,
) -> None:
    fan = hass.states.get("switch.ventilateur_du_bureau")
    humidity = hass.states.get("sensor.humidite_de_la_chambre_d_amis")

    assert {"switch", "fan"} <= names.kinds(fan)
    assert names.kinds(humidity) == {"sensor.humidity"}
