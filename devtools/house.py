"""A demo house for Home Assistant, defined as data, in English and French.

Only YAML-configured core integrations that need no network are used: template
lights, switches and sensors (modern ``template:`` format), template covers (modern
format where Home Assistant has it, else the legacy ``cover:`` platform: see
``modern_template_covers``), generic_thermostat and universal media players (no
children: commands and templates only). Each device keeps its state in an
``input_boolean``/``input_number``/``input_select`` helper, so acting on it really
changes its state. Helpers are not exposed to Assist.

Sizes: "demo" (8 areas, 23 entities, 21 exposed: lights, switches, covers, a
thermostat, sensors, two media players) and "bench" (the first 13 demo devices,
as the benchmarks were measured, plus generated devices: 8 areas, >= 60 exposed).
Both contain ``light.kitchen_light`` ("Kitchen Light", Kitchen, off) and the
unexposed ``light.garage_light``; the demo also hides ``switch.alarme`` (on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import voluptuous as vol

from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.core import HomeAssistant
from homeassistant.helpers import area_registry as ar, entity_registry as er
from homeassistant.setup import async_setup_component
from homeassistant.util import slugify

Size = Literal["demo", "bench"]
HELPER_DOMAINS = ("input_boolean", "input_number", "input_select")  # where states are kept
HOUSE_DOMAINS = (*HELPER_DOMAINS, "template", "cover", "climate", "media_player")
Domain = Literal["light", "switch", "cover", "sensor", "climate", "media_player"]
ASSISTANT = "conversation"  # the exposure list Assist and LLM APIs read


@dataclass(frozen=True)
class Area:
    """An area; ``of`` is the phrase generated French names use ("du salon")."""

    name: str
    aliases: frozenset[str] = frozenset()
    french: bool = False
    of: str = ""


@dataclass(frozen=True)
class Device:
    """One user-facing entity.

    ``initial``: on/off, cover position, sensor or target value, media player volume (0-1).
    """

    domain: Domain
    name: str
    area: str
    initial: float | bool = False
    exposed: bool = True
    dimmable: bool = False  # lights
    device_class: str | None = None  # sensors: temperature | humidity; media players: tv | speaker
    heater: str = ""  # climate: entity id of its heater switch
    target_sensor: str = ""  # climate: entity id of its temperature sensor
    media_state: str = "playing"  # media players: the initial state (one of MEDIA_STATES)

    @property
    def object_id(self) -> str:
        """Slug HA derives from the name; also names the backing helper."""
        return slugify(self.name)

    @property
    def entity_id(self) -> str:
        """Entity id HA assigns (checked against the registry at setup)."""
        return f"{self.domain}.{self.object_id}"


@dataclass(frozen=True)
class House:
    """What async_setup_house built."""

    size: Size
    areas: tuple[str, ...]
    exposed: tuple[str, ...]
    not_exposed: tuple[str, ...]  # house devices hidden from Assist (helpers excluded)
    devices: tuple[Device, ...] = field(repr=False)


KITCHEN = Area("Kitchen", frozenset({"Cuisine"}))
SALON = Area("Salon", frozenset({"Living Room"}), french=True, of="du salon")
BEDROOM = Area("Bedroom", frozenset({"Chambre"}))
GUEST_ROOM = Area(
    "Chambre d'amis", frozenset({"Guest Room"}), french=True, of="de la chambre d'amis"
)
BATHROOM = Area("Salle de bain", frozenset({"Bathroom"}), french=True, of="de la salle de bain")
GARAGE = Area("Garage", french=True, of="du garage")
OFFICE = Area("Bureau", frozenset({"Office"}), french=True, of="du bureau")
HALLWAY = Area("Hallway", frozenset({"Entrée"}))

DEMO_AREAS = (KITCHEN, SALON, BEDROOM, GUEST_ROOM, BATHROOM, GARAGE, OFFICE, HALLWAY)
BENCH_AREAS = DEMO_AREAS

MEDIA_STATES = ("off", "on", "playing", "paused")  # what a demo media player can be

# The first demo devices: the bench house is built on these (its numbers were measured so).
_FIRST_DEMO_DEVICES = (
    Device("light", "Kitchen Light", KITCHEN.name, dimmable=True),
    Device("sensor", "Kitchen Temperature", KITCHEN.name, 21.5, device_class="temperature"),
    Device("light", "Lampe du salon", SALON.name, True, dimmable=True),
    Device("switch", "Radiateur du salon", SALON.name),
    Device("sensor", "Température du salon", SALON.name, 19.0, device_class="temperature"),
    Device(
        "climate",
        "Thermostat du salon",
        SALON.name,
        20.0,
        heater="switch.radiateur_du_salon",
        target_sensor="sensor.temperature_du_salon",
    ),
    Device("light", "Bedroom Lamp", BEDROOM.name),
    Device("cover", "Bedroom Blinds", BEDROOM.name, 100),
    Device("light", "Plafonnier de la chambre d'amis", GUEST_ROOM.name),
    Device("sensor", "Humidité de la chambre d'amis", GUEST_ROOM.name, 48, device_class="humidity"),
    Device("switch", "Sèche-serviettes", BATHROOM.name, True),
    Device("light", "Garage Light", GARAGE.name, exposed=False),  # for refusal tests
    Device("cover", "Porte du garage", GARAGE.name, 0),
)

# Added for the commands benchmark (benchmarks/commands.yaml): two more areas, media
# players, and a second device hidden from Assist.
_MORE_DEMO_DEVICES = (
    Device("switch", "Coffee Maker", KITCHEN.name),
    Device("media_player", "Kitchen Speaker", KITCHEN.name, 0.4, device_class="speaker"),
    Device("media_player", "Télé du salon", SALON.name, 0.3, device_class="tv"),
    Device("sensor", "Bedroom Temperature", BEDROOM.name, 18.5, device_class="temperature"),
    Device("light", "Lampe du bureau", OFFICE.name, True, dimmable=True),
    Device("cover", "Volet du bureau", OFFICE.name, 100),
    Device("switch", "Ventilateur du bureau", OFFICE.name),
    Device("sensor", "Température du bureau", OFFICE.name, 20.5, device_class="temperature"),
    Device("light", "Hallway Light", HALLWAY.name),
    Device("switch", "Alarme", HALLWAY.name, True, exposed=False),  # for refusal tests
)

DEMO_DEVICES = (*_FIRST_DEMO_DEVICES, *_MORE_DEMO_DEVICES)

# Bench filler: the devices each area gets, by role: (domain, initial, device_class),
# then the name patterns per language ("{a}": English area name, "{of}": French phrase).
_ROLES: dict[str, tuple[Domain, float | bool, str | None]] = {
    "ceiling": ("light", False, None),
    "lamp": ("light", True, None),
    "plug": ("switch", False, None),
    "blinds": ("cover", 100, None),
    "temperature": ("sensor", 20.5, "temperature"),
    "humidity": ("sensor", 45, "humidity"),
    "heater": ("switch", False, None),
}
_NAMES = {
    "en": {
        "ceiling": "{a} Ceiling Light",
        "lamp": "{a} Lamp",
        "plug": "{a} Plug",
        "blinds": "{a} Blinds",
        "temperature": "{a} Temperature",
        "humidity": "{a} Humidity",
        "heater": "{a} Heater",
        "thermostat": "{a} Thermostat",
    },
    "fr": {
        "ceiling": "Plafonnier {of}",
        "lamp": "Lampe {of}",
        "plug": "Prise {of}",
        "blinds": "Volet {of}",
        "temperature": "Température {of}",
        "humidity": "Humidité {of}",
        "heater": "Radiateur {of}",
        "thermostat": "Thermostat {of}",
    },
}


def _bench_devices() -> tuple[Device, ...]:
    """Return the first demo devices plus, per area, every role device it lacks and a thermostat."""
    devices = list(_FIRST_DEMO_DEVICES)
    for area in BENCH_AREAS:
        names = _NAMES["fr" if area.french else "en"]

        def name(role: str, area: Area = area, names: dict[str, str] = names) -> str:
            return names[role].format(a=area.name, of=area.of)

        for role, (domain, initial, device_class) in _ROLES.items():
            device = Device(
                domain,
                name(role),
                area.name,
                initial,
                dimmable=domain == "light",
                device_class=device_class,
            )
            # Demo devices that fit a role (e.g. "Bedroom Lamp") are kept as they are.
            if all(d.entity_id != device.entity_id for d in devices):
                devices.append(device)
        if not any(d.domain == "climate" and d.area == area.name for d in devices):
            devices.append(
                Device(
                    "climate",
                    name("thermostat"),
                    area.name,
                    20.0,
                    heater=f"switch.{slugify(name('heater'))}",
                    target_sensor=f"sensor.{slugify(name('temperature'))}",
                )
            )
    return tuple(devices)


def house_devices(size: Size) -> tuple[tuple[Area, ...], tuple[Device, ...]]:
    """Areas and devices of a house size."""
    if size == "demo":
        return DEMO_AREAS, DEMO_DEVICES
    if size == "bench":
        return BENCH_AREAS, _bench_devices()
    raise ValueError(f"unknown house size {size!r}")


def _helper_value(device: Device) -> str:
    """Template reading the helper that holds the device's state."""
    return f"states('input_number.{device.object_id}')"


def _set_number(device: Device, value: str | float) -> dict[str, Any]:
    return {
        "action": "input_number.set_value",
        "target": {"entity_id": f"input_number.{device.object_id}"},
        "data": {"value": value},
    }


def _boolean_action(device: Device, service: str) -> dict[str, Any]:
    return {
        "action": f"input_boolean.{service}",
        "target": {"entity_id": f"input_boolean.{device.object_id}"},
    }


@cache
def modern_template_covers() -> bool:
    """Whether the template integration takes covers under its own key (``template: - cover:``).

    Home Assistant 2025.4 only has the legacy ``cover: - platform: template``, which 2026.10
    refuses. The section schema is asked about an empty list: a template needs a running
    hass to be validated. (Where HA uses probatio, ``voluptuous`` is its shim: same ``Invalid``.)
    """
    from homeassistant.components.template.config import CONFIG_SECTION_SCHEMA

    try:
        CONFIG_SECTION_SCHEMA({"cover": []})
    except vol.Invalid:
        return False
    return True


def _place_covers(
    covers: dict[str, dict[str, Any]], template: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Put the template covers (modern format, by object id) where this HA takes them.

    Modern: in the ``template:`` section (``template`` is changed); returns no other key.
    Legacy: returns the ``cover:`` platform config, keyed by object id, legacy key names.
    Either way the entity ids, names and actions are the same.
    """
    if modern_template_covers():
        template["cover"] = list(covers.values())
        return {}
    legacy_keys = {"name": "friendly_name", "position": "position_template"}
    legacy = {
        oid: {legacy_keys.get(key, key): value for key, value in cover.items()}
        for oid, cover in covers.items()
    }
    return {"cover": [{"platform": "template", "covers": legacy}]}


def house_config(size: Size) -> dict[str, Any]:
    """YAML configuration (as a dict) of every integration the house needs."""
    _, devices = house_devices(size)
    booleans: dict[str, Any] = {}
    numbers: dict[str, Any] = {}
    template: dict[str, list[dict[str, Any]]] = {"light": [], "switch": [], "sensor": []}
    covers: dict[str, dict[str, Any]] = {}  # object id -> modern template cover
    thermostats: list[dict[str, Any]] = []
    selects: dict[str, Any] = {}
    players: list[dict[str, Any]] = []

    seen: set[str] = set()
    for dev in devices:
        oid = dev.object_id
        if oid in seen:  # helpers are named after the object id
            raise ValueError(f"two devices named {dev.name!r} in house {size!r}")
        seen.add(oid)
        helper = {"name": f"{dev.name} (state)"}
        if dev.domain in ("light", "switch"):
            # `initial` wins over restored state: every run starts identical.
            booleans[oid] = {**helper, "initial": bool(dev.initial)}
            entity: dict[str, Any] = {
                "name": dev.name,
                "unique_id": f"majordome_dev_{oid}",
                "state": f"{{{{ is_state('input_boolean.{oid}', 'on') }}}}",
                "turn_on": _boolean_action(dev, "turn_on"),
                "turn_off": _boolean_action(dev, "turn_off"),
            }
            if dev.dimmable:
                numbers[oid] = {**helper, "min": 0, "max": 255, "step": 1, "initial": 255}
                entity["level"] = f"{{{{ {_helper_value(dev)} | int(0) }}}}"
                entity["set_level"] = [
                    _set_number(dev, "{{ brightness }}"),
                    _boolean_action(dev, "turn_on"),
                ]
            template[dev.domain].append(entity)
        elif dev.domain == "sensor":
            numbers[oid] = {**helper, "min": -50, "max": 100, "step": 0.5, "initial": dev.initial}
            unit = "°C" if dev.device_class == "temperature" else "%"
            template["sensor"].append(
                {
                    "name": dev.name,
                    "unique_id": f"majordome_dev_{oid}",
                    "state": f"{{{{ {_helper_value(dev)} | float(0) }}}}",
                    "unit_of_measurement": unit,
                    "device_class": dev.device_class,
                    "state_class": "measurement",
                }
            )
        elif dev.domain == "cover":
            numbers[oid] = {**helper, "min": 0, "max": 100, "step": 1, "initial": dev.initial}
            covers[oid] = {
                "name": dev.name,
                "unique_id": f"majordome_dev_{oid}",
                "position": f"{{{{ {_helper_value(dev)} | int(0) }}}}",
                "open_cover": _set_number(dev, 100),
                "close_cover": _set_number(dev, 0),
                "set_cover_position": _set_number(dev, "{{ position }}"),
            }
        elif dev.domain == "media_player":
            if dev.media_state not in MEDIA_STATES:
                raise ValueError(f"{dev.name}: media_state must be one of {MEDIA_STATES}")
            selects[oid] = {**helper, "options": list(MEDIA_STATES), "initial": dev.media_state}
            numbers[oid] = {
                "name": f"{dev.name} (volume)",
                "min": 0,
                "max": 1,
                "step": 0.01,
                "initial": dev.initial,
            }
            players.append(_media_player(dev))
        else:  # climate
            thermostats.append(
                {
                    "platform": "generic_thermostat",
                    "name": dev.name,
                    "unique_id": f"majordome_dev_{oid}",
                    "heater": dev.heater,
                    "target_sensor": dev.target_sensor,
                    "min_temp": 7,
                    "max_temp": 30,
                    "target_temp": dev.initial,
                    "initial_hvac_mode": "heat",
                    "precision": 0.5,
                }
            )

    cover_platform = _place_covers(covers, template)  # before the template section is made
    config: dict[str, Any] = {
        "input_boolean": booleans,
        "input_number": numbers,
        "template": [{k: v for k, v in template.items() if v}],
        **cover_platform,
        "climate": thermostats,
    }
    if players:  # only then: the bench house sets up exactly what it did before
        config["input_select"] = selects
        config["media_player"] = players
    return config


def _media_player(dev: Device) -> dict[str, Any]:
    """A universal media player without children: its state is an input_select."""
    oid = dev.object_id

    def select(option: str) -> dict[str, Any]:
        return {
            "action": "input_select.select_option",
            "target": {"entity_id": f"input_select.{oid}"},
            "data": {"option": option},
        }

    return {
        "platform": "universal",
        "name": dev.name,
        "unique_id": f"majordome_dev_{oid}",
        "device_class": dev.device_class,
        "commands": {
            "turn_on": select("on"),
            "turn_off": select("off"),
            "media_play": select("playing"),
            "media_pause": select("paused"),
            "volume_set": _set_number(dev, "{{ volume_level }}"),
        },
        # Not a state_template: universal renders templates at HA start, long gone here.
        "attributes": {"state": f"input_select.{oid}", "volume_level": f"input_number.{oid}"},
    }


async def async_setup_house(hass: HomeAssistant, size: Size = "demo") -> House:
    """Set up the house in a running hass: entities, areas and Assist exposure."""
    areas, devices = house_devices(size)
    config = house_config(size)
    # Helpers first: the templates, thermostats and media players read them when they start.
    for domain in HOUSE_DOMAINS:
        # input_select and media_player: only with media players; cover: legacy covers only.
        if domain not in config:
            continue
        if not await async_setup_component(hass, domain, config):
            raise RuntimeError(f"house: setup of {domain} failed")
    await hass.async_block_till_done()

    area_reg = ar.async_get(hass)
    area_ids = {}
    for area in areas:
        entry = area_reg.async_get_area_by_name(area.name) or area_reg.async_create(
            area.name, aliases=set(area.aliases)
        )
        area_ids[area.name] = entry.id

    entity_reg = er.async_get(hass)
    for dev in devices:
        if entity_reg.async_get(dev.entity_id) is None:
            raise RuntimeError(f"house: {dev.entity_id} is missing from the entity registry")
        entity_reg.async_update_entity(dev.entity_id, area_id=area_ids[dev.area])
        async_expose_entity(hass, ASSISTANT, dev.entity_id, dev.exposed)
    # Helpers are implementation details; several are exposed by default.
    for domain in HELPER_DOMAINS:
        for object_id in config.get(domain, {}):
            async_expose_entity(hass, ASSISTANT, f"{domain}.{object_id}", False)
    await hass.async_block_till_done()

    return House(
        size=size,
        areas=tuple(a.name for a in areas),
        exposed=tuple(d.entity_id for d in devices if d.exposed),
        not_exposed=tuple(d.entity_id for d in devices if not d.exposed),
        devices=devices,
    )
