"""What the house's exposed devices are called, and which one a sentence names.

People name a device as Home Assistant does ("Lampe du bureau"), by an alias, by its
kind in its area ("the office lamp", "la lampe de la chambre"), or by its kind alone
when it is the only one of its kind ("the fan"). A device's kinds are its domain (or
"sensor.<device class>"), its device class, and the kinds its name says ("Ventilateur
du bureau" is a switch and a fan). The kind words are data: phrases/device_kinds.txt.

Read by truth.py (the state a reply gives a device) and tools.py (the device a call
that matched nothing meant, when the user named it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

from homeassistant.components import conversation
from homeassistant.components.homeassistant.exposed_entities import async_should_expose
from homeassistant.core import HomeAssistant, State
from homeassistant.helpers import area_registry as ar, device_registry as dr, entity_registry as er

from .metacognition import normalize, read_list


def _device_kinds() -> tuple[dict[str, frozenset[str]], tuple[str, ...]]:
    """phrases/device_kinds.txt: the words of each kind, and what joins kind and area."""
    kinds: dict[str, frozenset[str]] = {}
    between: tuple[str, ...] = ()
    for line in read_list("device_kinds"):
        key, _, listed = line.partition(":")
        if key.strip() == "between":
            between = tuple(" ".join(part.split()) for part in listed.split("|"))
        else:
            kinds[key.strip()] = frozenset(listed.split())
    return kinds, between


KINDS, BETWEEN = _device_kinds()
# Kinds a device's name can give it: not a sensor's ("Kitchen light level" is no light).
_NAMED_KINDS: Final = {key: words for key, words in KINDS.items() if "." not in key}


def base_kind(state: State) -> str:
    """A device's first kind: its domain, or "sensor.<device class>" for a sensor."""
    if state.domain == "sensor":
        return f"sensor.{state.attributes.get('device_class') or ''}"
    return state.domain


def kinds(state: State) -> set[str]:
    """Every kind of a device: its base kind, its device class, and those its name says."""
    found = {base_kind(state)}
    if state.domain == "sensor":
        return found
    if isinstance(device_class := state.attributes.get("device_class"), str):
        found.add(device_class)
    words = set(normalize(state.name).split())
    found.update(key for key, kind_words in _NAMED_KINDS.items() if words & kind_words)
    return found


def device_names(
    hass: HomeAssistant,
    selected: Callable[[State], bool] = lambda _: True,
    *,
    only_exposed: bool = True,
) -> dict[str, list[str]]:
    """The exposed devices `selected` keeps: {entity_id: the names they are called by}.

    Their name and aliases; for the one device of a kind in its area, that kind in the
    area ("bedroom lamp", "temperature in the kitchen"); for the one device of a kind
    among them, the kind alone ("fan"). With `only_exposed` False, the others too, by
    their name and aliases only: kinds are how the exposed house is spoken of.
    """
    entities, devices_registry = er.async_get(hass), dr.async_get(hass)
    areas = ar.async_get(hass)
    devices: dict[str, list[str]] = {}
    by_area: dict[tuple[str, str], list[str]] = {}
    by_kind: dict[str, list[str]] = {}
    for state in hass.states.async_all():
        if not selected(state):
            continue
        exposed = async_should_expose(hass, conversation.DOMAIN, state.entity_id)
        if only_exposed and not exposed:
            continue
        names = [state.name]
        state_kinds = kinds(state) if exposed else set()
        for kind in state_kinds:
            by_kind.setdefault(kind, []).append(state.entity_id)
        if (entry := entities.async_get(state.entity_id)) is not None:
            names.extend(alias for alias in entry.aliases if isinstance(alias, str))
            area_id = entry.area_id
            if area_id is None and entry.device_id is not None:
                device = devices_registry.async_get(entry.device_id)
                area_id = device.area_id if device is not None else None
            if area_id is not None:
                for kind in state_kinds:
                    by_area.setdefault((area_id, kind), []).append(state.entity_id)
        devices[state.entity_id] = names
    for (area_id, kind), [entity_id] in _alone(by_area):
        if (area := areas.async_get_area(area_id)) is not None:
            devices[entity_id].extend(_kind_names(kind, [area.name, *area.aliases]))
    for kind, [entity_id] in _alone(by_kind):
        devices[entity_id].extend(KINDS.get(kind, ()))
    return devices


def _alone[K](found: Mapping[K, list[str]]) -> list[tuple[K, list[str]]]:
    """The groups of exactly one device."""
    return [(key, ids) for key, ids in found.items() if len(set(ids)) == 1]


def _kind_names(kind: str, area_names: Iterable[str]) -> list[str]:
    """A device called by its kind in its area: "bedroom lamp", "lampe de la chambre"."""
    return [
        phrase
        for area in area_names
        for word in KINDS.get(kind, ())
        for phrase in (
            f"{area} {word}",
            f"{word} {area}",
            *(f"{word} {joint} {area}" for joint in BETWEEN),
        )
    ]


def name_words(names: Mapping[str, Iterable[str]]) -> dict[str, set[tuple[str, ...]]]:
    """Each device's names as normalised words."""
    return {
        entity_id: {tuple(normalize(name).split()) for name in given} - {()}
        for entity_id, given in names.items()
    }


def named_in(text: str, names: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """The devices the text names, each with the words it was named by.

    A name inside a longer one the text also holds does not count ("lamp" in "office
    lamp"): the longer name says which device. Each name is looked up once per place
    in the text and length of name, not matched against the text one by one.
    """
    said = normalize(text).split()
    by_words: dict[tuple[str, ...], set[str]] = {}
    for entity_id, words in name_words(names).items():
        for name in words:
            by_words.setdefault(name, set()).add(entity_id)
    lengths = sorted({len(name) for name in by_words})
    spans = [
        (start, start + size, entity_id, name)
        for start in range(len(said))
        for size in lengths
        if start + size <= len(said) and (name := tuple(said[start : start + size])) in by_words
        for entity_id in by_words[name]
    ]
    return {
        entity_id: name
        for start, end, entity_id, name in spans
        if not any(
            (other_start <= start and end <= other_end) and (other_end - other_start > end - start)
            for other_start, other_end, _, _ in spans
        )
    }
