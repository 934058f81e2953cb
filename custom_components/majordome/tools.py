"""The tools the model may call: Assist's intent tools plus Majordome's own.

Everything is offered through one `llm.API` ("majordome"), so other agents can use it
too. The Assist tools keep Home Assistant's own scoping: only entities exposed to Assist
can be matched. Majordome's own tools read the clock and touch no entity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
import json
import re
from typing import Any

import voluptuous as vol

from homeassistant.components import conversation
from homeassistant.components.homeassistant.exposed_entities import async_should_expose
from homeassistant.core import HomeAssistant, State
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import (
    area_registry as ar,
    floor_registry as fr,
    intent,
    llm,
    translation,
)
from homeassistant.util import dt as dt_util, slugify

from . import compat, names
from .const import DOMAIN, INVALID_ARGUMENTS_KEY, LOGGER, MAJORDOME_API_ID
from .memory import AUTHOR, MemoryStore, one_line
from .metacognition import normalize
from .prompt import base_language

# Day and month names for the languages Majordome speaks; others get English.
_WEEKDAYS = {
    "en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "fr": ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"],
}
_MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July",
           "August", "September", "October", "November", "December"],
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet",
           "août", "septembre", "octobre", "novembre", "décembre"],
}  # fmt: skip
# Every day and month name above: a reply naming one speaks of a date.
CALENDAR_NAMES = frozenset(
    name for names in (*_WEEKDAYS.values(), *_MONTHS.values()) for name in names
)


def spoken_date(moment: datetime, language: str | None) -> str:
    """Return the date as a person says it: "Saturday 21 November 2026", "samedi 21 novembre 2026"."""
    lang = base_language(language)
    weekdays, months = _WEEKDAYS.get(lang, _WEEKDAYS["en"]), _MONTHS.get(lang, _MONTHS["en"])
    day = "1er" if lang == "fr" and moment.day == 1 else str(moment.day)
    return f"{weekdays[moment.weekday()]} {day} {months[moment.month - 1]} {moment.year}"


def spoken_time(moment: datetime, language: str | None) -> str:
    """Return the time as a person says it: "14:05" in English, "14 h 05" in French."""
    if base_language(language) == "fr":
        return f"{moment.hour} h {moment.minute:02d}"
    return f"{moment.hour}:{moment.minute:02d}"


# The result key of Majordome's query tools that holds their answer as a sentence.
SPEECH_KEY = "speech"


async def async_sentence(hass: HomeAssistant, language: str | None, key: str, **values: str) -> str:
    """A sentence from the translations, in the user's language, filled in."""
    strings = await translation.async_get_translations(
        hass, base_language(language), "exceptions", {DOMAIN}
    )
    template = strings.get(f"component.{DOMAIN}.exceptions.{key}.message", "")
    return template.format(**values) if template else " ".join(values.values())


async def _async_sentence(
    hass: HomeAssistant, llm_context: llm.LLMContext, key: str, **values: str
) -> str:
    """A sentence from the translations, in the conversation's language, filled in."""
    return await async_sentence(hass, llm_context.language, key, **values)


async def async_clock_sentence(
    hass: HomeAssistant, language: str | None, *, time: bool, date: bool
) -> str:
    """What the clock tools say, now: the time, the date, or both ("It is 14:05.")."""
    now = dt_util.now()
    spoken = {"time": spoken_time(now, language), "date": spoken_date(now, language)}
    if time and date:
        return await async_sentence(hass, language, "date_time_answer", **spoken)
    if time:
        return await async_sentence(hass, language, "time_answer", time=spoken["time"])
    return await async_sentence(hass, language, "date_answer", date=spoken["date"])


class MajordomeTool(llm.Tool):
    """A tool of Majordome's own (Home Assistant 2026.10+ asks each tool's integration)."""

    integration = DOMAIN


class GetTimeTool(MajordomeTool):
    """The current local time, in Home Assistant's time zone."""

    name = "get_time"
    description = "Get the current local time."

    async def async_call(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> Any:
        """Read the clock."""
        now = dt_util.now()
        time = spoken_time(now, llm_context.language)
        return compat.tool_result(
            {
                "time": time,
                "time_24h": now.strftime("%H:%M"),
                "timezone": str(now.tzinfo),
                # Ready to say: a small model may echo it, or Majordome says it for a
                # model that falls silent (a query's answer is otherwise the model's to say).
                SPEECH_KEY: await _async_sentence(hass, llm_context, "time_answer", time=time),
            }
        )


class GetDateTool(MajordomeTool):
    """Today's date, or a date some days away ("tomorrow", "in three days")."""

    name = "get_date"
    description = (
        "Get today's date and weekday. Set days_from_today for another day, "
        "e.g. 1 for tomorrow, -1 for yesterday."
    )
    parameters = vol.Schema(
        {vol.Optional("days_from_today"): vol.All(vol.Coerce(int), vol.Range(-3660, 3660))}
    )

    async def async_call(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> Any:
        """Read the calendar."""
        args = self.parameters(tool_input.tool_args)
        day = dt_util.now() + timedelta(days=args.get("days_from_today", 0))
        date = spoken_date(day, llm_context.language)
        return compat.tool_result(
            {
                "date": date,
                "iso_date": day.date().isoformat(),
                SPEECH_KEY: await _async_sentence(hass, llm_context, "date_answer", date=date),
            }
        )


class _MemoryTool(MajordomeTool):
    """A tool that writes this entry's memory; takes one `fact`.

    Only for a person (or when the household allows automations to write memory):
    text an automation passes on (a message, a web page) cannot plant lasting notes.
    """

    parameters = vol.Schema({vol.Required("fact"): vol.All(str, vol.Length(min=1))})

    def __init__(self, store: MemoryStore) -> None:
        """Write into this entry's memory."""
        self.store = store

    async def async_fact(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> str:
        """The validated `fact` argument, once the writer is known to be allowed."""
        if not (AUTHOR.get().person or self.store.automations_may_write):
            raise HomeAssistantError(
                await _async_sentence(hass, llm_context, "memory_not_from_automations")
            )
        if not (fact := one_line(self.parameters(tool_input.tool_args)["fact"])):
            raise vol.Invalid("The fact holds no text that can be stored.")
        return fact


class RememberTool(_MemoryTool):
    """Keep a fact about the household for every later conversation."""

    name = "remember"
    description = (
        "Remember a lasting fact about the household that the user asks you to remember, "
        "e.g. 'Alice is allergic to cats'."
    )

    async def async_call(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> Any:
        """Store the fact."""
        fact = await self.async_fact(hass, tool_input, llm_context)
        remembered = self.store.remember(fact).facts[-1]
        return compat.tool_result({"response_type": "action_done", "remembered": remembered})


class ForgetTool(_MemoryTool):
    """Drop the fact the user wants forgotten."""

    name = "forget"
    description = (
        "Forget one remembered fact: give the fact, or words that only it contains. "
        "When several facts match, none is forgotten and they are listed."
    )

    async def async_call(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> Any:
        """Remove the fact meant, if exactly one is."""
        done = self.store.forget(await self.async_fact(hass, tool_input, llm_context))
        if done.candidates:
            candidates = "; ".join(json.dumps(fact, ensure_ascii=False) for fact in done.candidates)
            raise HomeAssistantError(
                await _async_sentence(hass, llm_context, "forget_ambiguous", facts=candidates)
            )
        if not done.removed:
            raise HomeAssistantError(await _async_sentence(hass, llm_context, "forget_no_match"))
        return compat.tool_result(
            {"response_type": "action_done", "forgotten": "; ".join(done.removed)}
        )


MAJORDOME_TOOLS: tuple[type[llm.Tool], ...] = (GetTimeTool, GetDateTool)
# Home Assistant's own clock tool (2025.11+): where Assist offers it, ours are not offered.
DATE_TIME_TOOL = "GetDateTime"
# The tools whose result holds its answer as a sentence (SPEECH_KEY), by base name.
SPOKEN_TOOLS = frozenset({GetTimeTool.name, GetDateTool.name, DATE_TIME_TOOL})


@dataclass
class MajordomeAPIInstance(llm.APIInstance):
    """An API instance that answers the model's mistakes with errors it can act on."""

    utterance: str = ""  # what the user said this turn: the settings they asked for

    async def async_call_tool(self, tool_input: llm.ToolInput) -> Any:
        """Refuse unparsable arguments and unknown tools with a helpful message."""
        if INVALID_ARGUMENTS_KEY in tool_input.tool_args:
            raise HomeAssistantError(
                f"The arguments of {tool_input.tool_name} were not a valid JSON object: "
                f"{str(tool_input.tool_args[INVALID_ARGUMENTS_KEY])[:200]!r}. "
                "Call the tool again with a JSON object."
            )
        tool_names = [tool.name for tool in self.tools]
        if tool_input.tool_name not in tool_names and (
            real_name := compat.tool_named(tool_input.tool_name, tool_names)
            or _tool_meant(tool_input.tool_name, tool_names)
        ):
            LOGGER.debug(
                "No tool named %s: calling %s", tool_input.tool_name[:MAX_ECHOED_NAME], real_name
            )
            tool_input = llm.ToolInput(
                tool_name=real_name, tool_args=tool_input.tool_args, id=tool_input.id
            )
        if tool_input.tool_name not in tool_names:
            # The model's text, echoed back to it: a few words, not whatever it sent.
            shown = tool_input.tool_name[:MAX_ECHOED_NAME]
            hint = ""
            if _exposed_names(self.api.hass, tool_input.tool_name):
                # Small models put the device's name where the tool's name goes.
                shown_names = compat.shown_tool_names(tool_names)
                turn_on, turn_off = (
                    shown_names.get(compat.tool_named(name, tool_names) or name, name)
                    for name in ("HassTurnOn", "HassTurnOff")
                )
                hint = (
                    f" {shown!r} is a device, not a tool: pass it as the "
                    f"`name` argument of a tool such as {turn_on} or {turn_off}."
                )
            listed = ", ".join(compat.shown_tool_names(tool_names).values())
            raise HomeAssistantError(
                f"There is no tool named {shown!r}.{hint} The tools are: {listed}."
            )
        arguments = _said_settings(
            tool_input.tool_name, _without_empty_values(tool_input.tool_args), self.utterance
        )
        if (dimmed := await self._async_dim(tool_input, arguments)) is not None:
            return dimmed
        try:
            result = await super().async_call_tool(
                llm.ToolInput(tool_name=tool_input.tool_name, tool_args=arguments, id=tool_input.id)
            )
        except intent.MatchFailedError as err:
            result = await self._async_retry(tool_input, arguments, err)
        if compat.base_tool_name(tool_input.tool_name) == DATE_TIME_TOOL:
            # Home Assistant's own clock (2025.11+), made ready to say like ours.
            now = dt_util.now()
            compat.as_data(result)[SPEECH_KEY] = await _async_sentence(
                self.api.hass,
                self.llm_context,
                "date_time_answer",
                time=spoken_time(now, self.llm_context.language),
                date=spoken_date(now, self.llm_context.language),
            )
        return result

    async def _async_dim(self, tool_input: llm.ToolInput, arguments: dict[str, Any]) -> Any:
        """HassTurnOn on a light when the user said a percentage: HassLightSet at it.

        "Turn on the kitchen light at 50 %", "actually, make it 50 percent": a small model
        calls HassTurnOn. Only when the user said one percentage and named at most one
        device ("the light, and the blinds to 50 %" is not the light's); a target that is
        no light gets its HassTurnOn. None: not such a call.
        """
        tool_names = [tool.name for tool in self.tools]
        light_set = compat.tool_named("HassLightSet", tool_names)
        percents = set(_percents(self.utterance))
        domains = {str(domain) for domain in _as_list(arguments.get("domain"))}
        if (
            compat.base_tool_name(tool_input.tool_name) != "HassTurnOn"
            or light_set is None
            or len(percents) != 1
            or (domains and "light" not in domains)
        ):
            return None
        every = names.device_names(self.api.hass, only_exposed=False)
        named = names.named_in(self.utterance, every)
        if len(named) > 1 or any(not entity_id.startswith("light.") for entity_id in named):
            return None  # the percentage may be another device's
        dim_input = llm.ToolInput(
            tool_name=light_set,
            tool_args={**arguments, "domain": ["light"], "brightness": percents.pop()},
            id=tool_input.id,
        )
        LOGGER.debug("HassTurnOn with a percentage said: %s", dim_input.tool_args)
        try:
            result = await self.async_call_tool(dim_input)
        except (HomeAssistantError, vol.Invalid):
            return None  # no light, or no brightness it takes: HassTurnOn as called
        # A retry may reach a device by name in any domain (light.turn_on leaves a
        # switch as it was): only lights count.
        return result if _acted_on_lights_only(result) else None

    async def _async_retry(
        self, tool_input: llm.ToolInput, arguments: dict[str, Any], err: intent.MatchFailedError
    ) -> Any:
        """Call again a tool whose target matched nothing, with a target that may.

        Small models decorate a right target with made-up ones ("Kitchen Light" on floor
        "Kitchen", area "Living Room" on floor "Chambre d'amis"), write the entity's id
        as its name ("hallway_light"), or the user's words for its name ("Office Lamp"
        in area "Kitchen" for "the office lamp"). Tried in turn: the most specific
        target (the name, as the entity's real name, else the area) and the places that
        exist; then the one device the user named. The settings stay; exposure rules
        still apply.
        """
        hass = self.api.hass
        tried = [arguments]
        for retry in (
            build(hass, arguments)
            for build in (
                _most_specific_target,
                partial(_named_target, utterance=self.utterance),
            )
        ):
            if retry is None or retry in tried:
                continue
            tried.append(retry)
            LOGGER.debug("No match for %s; retrying with %s", arguments, retry)
            try:
                return await super().async_call_tool(
                    llm.ToolInput(tool_name=tool_input.tool_name, tool_args=retry, id=tool_input.id)
                )
            except intent.MatchFailedError as retry_err:
                err = retry_err
        raise err


MAX_ECHOED_NAME = 64  # characters of an unknown tool's name said back to the model

# Targets less specific than a name, then than an area.
_BROADER_THAN_NAME = ("area", "floor", "device_class")
_BROADER_THAN_AREA = ("floor",)


def _most_specific_target(hass: HomeAssistant, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments without what is broader than their name (else their area) that may go.

    A retry narrows, never moves: an area or floor that exists stays, so "the lamp in
    the kitchen" can never reach the bedroom's lamp; places that exist nowhere go, and
    a device class beside a name.
    """
    broader: tuple[str, ...]
    if "name" in arguments:
        broader = _BROADER_THAN_NAME
    elif "area" in arguments:
        broader = _BROADER_THAN_AREA
    else:
        return arguments
    retry = {
        key: value
        for key, value in arguments.items()
        if key not in broader or _is_a_place(hass, key, value)
    }
    if isinstance(name := retry.get("name"), str) and len(names := _exposed_names(hass, name)) == 1:
        retry["name"] = names.pop()
    return retry


# What a call targets.
_TARGET_KEYS = ("name", "area", "floor", "domain", "device_class")


def _named_target(
    hass: HomeAssistant, arguments: dict[str, Any], utterance: str
) -> dict[str, Any] | None:
    """The call aimed at the one exposed device it meant, the user's words permitting.

    When the user's words name devices (by name, alias, kind in its area or alone:
    names.py), it is the one they name, if they name only one, the call's name shares a
    word with what the user called it ("Office Lamp" in area "Kitchen" for "dim the office
    lamp", "garage" for "open the garage door"), and the call names no other device
    ("Garage Light" for "the kitchen light and the garage light", that one unexposed).
    When they name none, it is the one the call's own target names, read as people say
    it ("lamp" in area "bedroom" for "the lamp by my bed"), in the call's places that
    exist. None otherwise, or when another device has its name.
    """
    every = names.device_names(hass, only_exposed=False)
    named = names.named_in(utterance, every) if utterance else {}
    places: dict[str, Any] = {}
    if named:
        if len(named) != 1:
            return None
        [(entity_id, said)] = named.items()
        # Through the call's name: a shared area alone is not enough ("the blinds" in
        # the office are not the office lamp the user also named).
        if _words(arguments, ("name",)).isdisjoint(said):
            return None
    else:
        called = names.named_in(_as_said(arguments), every)
        if len(called) != 1:
            return None
        [entity_id] = called
        # Its places that exist stay: the retry narrows, never moves.
        places = {
            key: arguments[key]
            for key in _BROADER_THAN_NAME[:2]
            if key in arguments and _is_a_place(hass, key, arguments[key])
        }
    state = hass.states.get(entity_id)
    if (
        state is None
        or not async_should_expose(hass, conversation.DOMAIN, entity_id)
        or not _of_the_kinds_called(state, arguments)
    ):
        return None
    called_names = {normalize(str(value)) for value in _as_list(arguments.get("name"))}
    own_name = normalize(state.name)
    for other, given in every.items():
        other_names = {normalize(name) for name in given}
        if other != entity_id and (own_name in other_names or called_names & other_names):
            return None  # a namesake, or the call names another device
    kept = {key: value for key, value in arguments.items() if key not in _TARGET_KEYS}
    return {**kept, **places, "name": state.name}


def _of_the_kinds_called(state: State, arguments: dict[str, Any]) -> bool:
    """Whether a device is what the call's name and domain say it is.

    Every kind word in the call's name ("blinds", "lamp") is one of the device's kinds;
    a domain the call gives is the device's, unless its name says the device's kind
    ("fan" with domain "light" for a switch named "Ventilateur": small models fill the
    domain at random, the name is what they mean).
    """
    kinds = names.kinds(state)
    called = _words(arguments, ("name",))
    said_kinds = {kind for kind, words in names.KINDS.items() if called & words}
    if not said_kinds <= kinds:
        return False
    domains = {str(domain) for domain in _as_list(arguments.get("domain"))}
    return not domains or state.domain in domains or bool(said_kinds)


def _words(arguments: dict[str, Any], keys: tuple[str, ...]) -> set[str]:
    """The normalised words of these arguments' values."""
    return {
        word
        for key in keys
        for value in _as_list(arguments.get(key))
        for word in normalize(str(value)).split()
    }


def _as_said(arguments: dict[str, Any]) -> str:
    """A call's target as a person says it: "lamp in the bedroom"."""
    name = " ".join(str(value) for value in _as_list(arguments.get("name")))
    area = " ".join(str(value) for value in _as_list(arguments.get("area")))
    return f"{name} in the {area}" if name and area else name


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _is_a_place(hass: HomeAssistant, key: str, value: Any) -> bool:
    """Whether an `area` or `floor` argument names one that exists (as Assist finds them)."""
    places = value if isinstance(value, list) else [value]
    if key == "area":
        areas = ar.async_get(hass)
        return any(isinstance(p, str) and any(intent.find_areas(p, areas)) for p in places)
    if key == "floor":
        floors = fr.async_get(hass)
        return any(isinstance(p, str) and any(intent.find_floors(p, floors)) for p in places)
    return False


_CAMEL_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def _tool_meant(name: str, tool_names: list[str]) -> str | None:
    """The one real tool an invented name abbreviates, if there is exactly one.

    Small models drop a word of a long name ("HassSetTemperature" for
    HassClimateSetTemperature): every word of theirs, in order, in one real name.
    """
    words = [word.casefold() for word in _CAMEL_WORD.findall(compat.base_tool_name(name))]
    if len(words) < 2:
        return None
    meant = [
        real
        for real in tool_names
        if _in_order(words, _CAMEL_WORD.findall(compat.base_tool_name(real)))
    ]
    return meant[0] if len(meant) == 1 else None


def _in_order(words: list[str], real_words: list[str]) -> bool:
    """Whether `words` appear in `real_words` in the same order (a subsequence)."""
    remaining = iter(word.casefold() for word in real_words)
    return all(word in remaining for word in words)


# HassLightSet's settings. A light takes a color or a color temperature, never both: a
# call with both is a small model filling every slot of the schema ("brightness 50,
# color white, temperature 25" for "is the lamp on?"). Then only what the user said
# counts.
_LIGHT_SETTINGS = ("brightness", "color", "temperature")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
# Color words the user may say for the English name a model sends.
_COLOR_WORDS = {
    "white": ("blanc", "blanche"),
    "red": ("rouge",),
    "green": ("vert", "verte"),
    "blue": ("bleu", "bleue"),
    "yellow": ("jaune",),
    "orange": ("orange",),
    "purple": ("violet", "violette", "mauve"),
    "pink": ("rose",),
}


# Up to three digits (and two decimals), not inside a longer number: linear, and never
# a float too big to be a percentage.
_PERCENT = re.compile(r"(?<![\d.,])(\d{1,3}(?:[.,]\d{1,2})?)\s*(?:%|percent|per cent|pour ?cent)")


def entity_targets(result: object) -> list[tuple[str, str]]:
    """The entities an intent's result names as done: [(entity_id, name)]."""
    if not isinstance(result, dict) or result.get("response_type") != "action_done":
        return []
    data = result.get("data")
    success = data.get("success") if isinstance(data, dict) else None
    return [
        (str(target["id"]), str(target.get("name") or target["id"]))
        for target in success or ()
        if isinstance(target, dict) and target.get("type") == "entity" and target.get("id")
    ]


def _acted_on_lights_only(result: Any) -> bool:
    """Whether an intent's result names entities done, all of them lights."""
    ids = [entity_id for entity_id, _ in entity_targets(compat.as_data(result))]
    return bool(ids) and all(entity_id.startswith("light.") for entity_id in ids)


def _percents(utterance: str) -> list[float]:
    """The percentages the user said ("30 percent", "50 %", "20 pour cent"), 0 to 100."""
    found = (float(n.replace(",", ".")) for n in _PERCENT.findall(utterance.casefold()))
    return [value for value in found if 0 <= value <= 100]


def _said_settings(tool_name: str, arguments: dict[str, Any], utterance: str) -> dict[str, Any]:
    """HassLightSet's arguments without the settings a slot-filling model made up.

    A percentage the user said is a brightness, wherever the model put it ("30
    percent" as a color temperature of 30).
    """
    if compat.base_tool_name(tool_name) != "HassLightSet" or not utterance:
        return arguments
    percents = set(_percents(utterance))
    temperature = arguments.get("temperature")
    if (
        isinstance(temperature, int | float)
        and float(temperature) in percents
        and arguments.get("brightness") not in percents
    ):
        arguments = {key: value for key, value in arguments.items() if key != "temperature"}
        arguments["brightness"] = temperature
        LOGGER.debug("HassLightSet: the percentage said is a brightness: %s", arguments)
    elif not {"color", "temperature"} <= arguments.keys():
        return arguments
    said = {key: value for key, value in arguments.items() if key not in _LIGHT_SETTINGS}
    said.update(
        (key, arguments[key])
        for key in _LIGHT_SETTINGS
        if key in arguments and _is_said(arguments[key], utterance)
    )
    if not said.keys() & set(_LIGHT_SETTINGS):
        raise HomeAssistantError(
            "The user asked for no brightness, color or color temperature. To switch a "
            "device on or off use HassTurnOn or HassTurnOff; to read a state, GetLiveContext."
        )
    LOGGER.debug("HassLightSet with every setting: keeping those said: %s", said)
    return said


def _is_said(value: Any, utterance: str) -> bool:
    """Whether the user's words hold this value (a number, or a color word)."""
    text = utterance.casefold()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) in {float(n.replace(",", ".")) for n in _NUMBER.findall(text)}
    if isinstance(value, str):
        word = value.strip().casefold()
        return bool(word) and any(w in text for w in (word, *_COLOR_WORDS.get(word, ())))
    return False


def _exposed_names(hass: HomeAssistant, name: str) -> set[str]:
    """Names of the exposed entities that `name` designates (only on error paths).

    By their name in any case or by their id: `hallway_light`, `light.hallway_light`.
    """
    wanted = slugify(name.strip().split(".", 1)[-1])
    return {
        state.name
        for state in hass.states.async_all()
        if wanted in (state.object_id, slugify(state.name))
        and async_should_expose(hass, conversation.DOMAIN, state.entity_id)
    }


def _without_empty_values(arguments: dict[str, Any]) -> dict[str, Any]:
    """Drop the empty strings and lists small models send for slots they mean to skip."""
    cleaned: dict[str, Any] = {}
    for key, value in arguments.items():
        kept = (
            [item for item in value if item not in ("", None)] if isinstance(value, list) else value
        )
        if kept not in ("", None, []):
            cleaned[key] = kept
    return cleaned


class MajordomeAPI(llm.API):
    """Assist's intent tools (optional) and Majordome's own tools, as one API."""

    def __init__(
        self,
        hass: HomeAssistant,
        include_assist: bool = True,
        memory: MemoryStore | None = None,
        utterance: str = "",
    ) -> None:
        """Name the API; the registered one (for other agents) has no memory tools."""
        super().__init__(hass=hass, id=MAJORDOME_API_ID, name="Majordome")
        self.include_assist = include_assist
        self.memory = memory
        self.utterance = utterance

    async def async_get_api_instance(self, llm_context: llm.LLMContext) -> MajordomeAPIInstance:
        """Return Assist's prompt and tools, then ours, in an order that never changes.

        Assist's tools keep Home Assistant's own order (HassTurnOn first): measured on
        the embedded 0.5B model, sorting them by name (HassLightSet before HassTurnOn)
        cost accuracy, 2-3 right calls out of 12 against 5. Ours follow, sorted.
        """
        ours: dict[str, llm.Tool] = {}
        if self.memory is not None:
            ours.update(
                (tool.name, tool) for tool in (RememberTool(self.memory), ForgetTool(self.memory))
            )
        api_prompt = ""
        serializer: Callable[[Any], Any] | None = None
        theirs: list[llm.Tool] = []
        if self.include_assist:
            assist = await llm.async_get_api(self.hass, llm.LLM_API_ASSIST, llm_context)
            api_prompt, serializer = assist.api_prompt, assist.custom_serializer
            theirs = [tool for tool in assist.tools if tool.name not in ours]
        if not any(compat.base_tool_name(tool.name) == DATE_TIME_TOOL for tool in theirs):
            ours.update((tool.name, tool()) for tool in MAJORDOME_TOOLS)
        tools = [*theirs, *(ours[name] for name in sorted(ours))]
        return MajordomeAPIInstance(
            api=self,
            api_prompt=compat.with_shown_names(
                api_prompt, compat.shown_tool_names(tool.name for tool in tools)
            ),
            llm_context=llm_context,
            tools=tools,
            custom_serializer=serializer,
            utterance=self.utterance,
        )


def format_tools(api: llm.APIInstance, as_shown: bool = True) -> list[dict[str, Any]]:
    """Return the tools in the chat-completions format, named as the model sees them.

    `as_shown=False`: by their real names, as Home Assistant's own agents send them.
    """
    names = [tool.name for tool in api.tools]
    shown = compat.shown_tool_names(names) if as_shown else dict(zip(names, names, strict=True))
    return [
        {
            "type": "function",
            "function": {
                "name": shown[tool.name],
                "description": tool.description or "",
                "parameters": compat.tool_schema(tool.parameters, api.custom_serializer),
            },
        }
        for tool in api.tools
    ]
