"""Truthful endings: what the user hears at the end of a turn is what happened.

"Done" is said only when Home Assistant reports that this turn changed something: a
`state_changed` event whose context is the turn's (the context the intents and
services of both the local stage and the model's tools run in) or a child of it (a
script the turn started). An action that succeeded but changed nothing (the light was
on already) is said as such, and a model that claims it did something in a turn where
nothing changed ("Done.", "C'est fait.", "I've turned on...") is not passed on.

A reply that names an exposed device and gives it a state it is not in ("La lampe de
la chambre est allumée." while it is off), or a sensor's value far from its own ("25"
for a humidity of 48), is replaced by the device's real state.

A reply that states a date, a year or a time while no clock tool ran this turn came
from the model's memory ("Nous sommes à l'année 2023."): the clock's own sentence is
said instead.

The phrases are data (phrases/completion_claims.txt, state_words.txt,
clock_questions.txt, clock_statements.txt), matched on whole normalised words, without
regular expressions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
import contextlib
from dataclasses import dataclass, field
import math
from typing import Any, Final

from homeassistant.components import conversation
from homeassistant.const import EVENT_CALL_SERVICE, EVENT_STATE_CHANGED, EVENT_STATE_REPORTED
from homeassistant.core import CALLBACK_TYPE, Context, Event, HomeAssistant, State, callback

from . import compat, names as names_module, tools
from .metacognition import normalize, read_list
from .prompt import base_language

# How long an action that reported success may take to show in the states: Home
# Assistant's intents wait 0.2 s for a service, then let it finish in the background.
SETTLE_TIMEOUT: Final = 1.0

# Entities the voice machinery updates in the turn's context: not the house.
_NOT_THE_HOUSE: Final = frozenset({"conversation", "assist_satellite", "stt", "tts", "wake_word"})
# Tools that only read: their success is no action.
_QUERY_TOOLS: Final = frozenset({*tools.SPOKEN_TOOLS, "GetLiveContext"})

_CLAIMS: Final = tuple(f" {phrase} " for phrase in read_list("completion_claims"))
# How many words after a device's name its stated state may come ("is now on").
STATE_WINDOW: Final = 4


def _state_words() -> dict[str, frozenset[str]]:
    """phrases/state_words.txt: "on", "off" and "negation", each a set of words."""
    kinds: dict[str, frozenset[str]] = {}
    for line in read_list("state_words"):
        kind, _, listed = line.partition(":")
        kinds[kind.strip()] = frozenset(listed.split())
    return kinds


_STATE_WORDS: Final = _state_words()


_STATEMENTS: Final = tuple(f" {phrase} " for phrase in read_list("clock_statements"))


def _questions(kind: str) -> tuple[str, ...]:
    """The phrases of clock_questions.txt that speak of `kind` ("time" or "date")."""
    return tuple(
        f" {phrase} "
        for line in read_list("clock_questions")
        for prefix, _, phrase in (line.partition(" "),)
        if prefix == kind
    )


_ASKS_TIME: Final = _questions("time")
_ASKS_DATE: Final = _questions("date")
_CALENDAR: Final = frozenset(normalize(name) for name in tools.CALENDAR_NAMES)
# Words after an hour that make it a time of day: "7 h 30", "3 pm", "8 heures".
_HOUR_WORDS: Final = frozenset({"h", "heure", "heures", "am", "pm", "o", "oclock"})

type OwnAnswer = tuple[str, str]  # (translation key, "") or ("", a ready sentence)


def _says(padded: str, phrases: Iterable[str]) -> bool:
    """Whether the normalised, space-padded text holds one of the padded phrases."""
    return any(phrase in padded for phrase in phrases)


def _padded(text: str) -> str:
    return f" {normalize(text)} "


@callback
def _in_the_house(data: Mapping[str, Any]) -> bool:
    """An entity of the house, not of the voice machinery."""
    return str(data.get("entity_id", "")).partition(".")[0] not in _NOT_THE_HOUSE


# Attributes that move by themselves (readings, playback): no action's doing.
_READINGS: Final = frozenset(
    {"current_temperature", "current_humidity", "media_position", "media_position_updated_at"}
)


def _settled_differently(data: Mapping[str, Any]) -> bool:
    """A state change that is more than a reading moving: its state, or a setting."""
    old, new = data.get("old_state"), data.get("new_state")
    if not isinstance(old, State) or not isinstance(new, State):
        return False
    if old.state != new.state:
        return True
    keys = (old.attributes.keys() | new.attributes.keys()) - _READINGS
    return any(old.attributes.get(key) != new.attributes.get(key) for key in keys)


class ChangeWatch:
    """The state changes the turn causes, noted while it runs.

    Opened when the turn starts, closed when it ends. Contexts are followed from the
    turn's to its children (a script's service calls), so a change made on the turn's
    behalf counts. So does a change of an entity an action reported acting on, in
    whatever context: some of Home Assistant's intents call their service without the
    turn's context (2025.4's HassClimateSetTemperature).
    """

    def __init__(self, hass: HomeAssistant, context: Context) -> None:
        """Listen to the bus for the turn's context and its descendants."""
        self.hass = hass
        self._ours: set[str] = {context.id}
        self.changed: set[str] = set()
        self._written: set[str] = set()  # changed, or written again unchanged
        self._changed_elsewhere: set[str] = set()  # changed in a context not ours
        self._moved = asyncio.Event()
        self._unsubs: list[CALLBACK_TYPE] = [
            hass.bus.async_listen(EVENT_CALL_SERVICE, self._async_on_event),
            hass.bus.async_listen(EVENT_STATE_CHANGED, self._async_on_event, _in_the_house),
            hass.bus.async_listen(EVENT_STATE_REPORTED, self._async_on_event, _in_the_house),
        ]

    @callback
    def _async_on_event(self, event: Event[Any]) -> None:
        context = event.context
        entity_id = event.data.get("entity_id")
        if context.id not in self._ours and context.parent_id not in self._ours:
            if event.event_type == EVENT_STATE_CHANGED and _settled_differently(event.data):
                self._changed_elsewhere.add(str(entity_id))
                self._moved.set()
            return
        self._ours.add(context.id)
        if not isinstance(entity_id, str):
            return  # a service call: its context's children are ours too
        self._written.add(entity_id)
        if event.event_type == EVENT_STATE_CHANGED:
            self.changed.add(entity_id)
        self._moved.set()

    def changed_any(self, targets: Iterable[str]) -> bool:
        """Whether the turn changed something, or one of these targets changed."""
        return bool(self.changed) or not self._changed_elsewhere.isdisjoint(targets)

    async def async_settle(self, entity_ids: Iterable[str]) -> None:
        """Wait (at most SETTLE_TIMEOUT) until a change, or until every target was written."""
        pending = set(entity_ids)
        async with asyncio.timeout(SETTLE_TIMEOUT):
            while not self.changed_any(pending) and not pending <= self._written:
                self._moved.clear()
                await self._moved.wait()

    @callback
    def async_close(self) -> None:
        """Stop listening."""
        while self._unsubs:
            self._unsubs.pop()()


@dataclass
class Evidence:
    """What the turn's tools (or Home Assistant's local stage) reported."""

    # Entities an action reported acting on: (entity_id, name).
    targets: list[tuple[str, str]] = field(default_factory=list)
    # A tool succeeded at something that is neither a query nor a house entity
    # (a memory, a timer, a script): its "done" needs no state change.
    other_action: bool = False
    clock_read: bool = False


def evidence_from_tools(chat_log: conversation.ChatLog, turn_start: int) -> Evidence:
    """Sort this turn's tool results into actions on entities, other actions, clock reads."""
    evidence = Evidence()
    for content in chat_log.content[turn_start:]:
        if not isinstance(content, conversation.ToolResultContent) or compat.result_failed(content):
            continue
        name = compat.base_tool_name(content.tool_name)
        evidence.clock_read |= name in tools.SPOKEN_TOOLS
        if name in _QUERY_TOOLS:
            continue
        data = compat.result_data(content)
        targets = tools.entity_targets(data)
        evidence.targets.extend(targets)
        # An intent whose every entity failed is no action, though it names its area
        # as done (2025.4: HassTurnOn on a sensor in the kitchen).
        evidence.other_action |= not targets and not _failed(data)
    return evidence


def _failed(result: object) -> bool:
    """Whether an intent's result lists targets it failed on."""
    data = result.get("data") if isinstance(result, dict) else None
    return isinstance(data, dict) and bool(data.get("failed"))


def claims_done(text: str) -> bool:
    """Whether a reply says it carried something out ("Done.", "J'ai allumé...")."""
    return _says(_padded(text), _CLAIMS)


async def async_truthful(
    watch: ChangeWatch,
    evidence: Evidence,
    user_input: conversation.ConversationInput,
    answer: str | OwnAnswer,
    *,
    claimed: bool,
) -> OwnAnswer | None:
    """The sentence to say instead of `answer`, or None when it is true as it is.

    `claimed`: the answer says something was carried out (Majordome's own "Done",
    Home Assistant's answer to a command, or the model's words that say so).
    """
    language = user_input.language
    if claimed:
        return await _async_check_claim(watch, evidence, language)
    if not isinstance(answer, str):
        return None
    if stated := await _async_check_states(watch, evidence, answer, language):
        return stated
    if not evidence.clock_read:
        return await _async_check_clock(watch.hass, user_input.text, answer, language)
    return None


async def _async_settle(watch: ChangeWatch, evidence: Evidence) -> None:
    """Give the actions the tools reported their time to show (at most SETTLE_TIMEOUT)."""
    if evidence.targets and not watch.changed_any(_ids(evidence)):
        with contextlib.suppress(TimeoutError):
            await watch.async_settle(_ids(evidence))


def _ids(evidence: Evidence) -> list[str]:
    return [entity_id for entity_id, _ in evidence.targets]


async def _async_check_claim(
    watch: ChangeWatch, evidence: Evidence, language: str | None
) -> OwnAnswer | None:
    await _async_settle(watch, evidence)
    if watch.changed_any(_ids(evidence)) or evidence.other_action:
        return None
    if not evidence.targets:
        return ("not_done", "")
    return ("", await _async_unchanged(watch.hass, evidence.targets, language))


async def _async_unchanged(
    hass: HomeAssistant, targets: list[tuple[str, str]], language: str | None
) -> str:
    """Say that nothing changed, naming the state where that is simple ("was already on")."""
    named = dict(targets)
    if len(named) == 1:
        [(entity_id, name)] = named.items()
        state = hass.states.get(entity_id)
        if state is not None and state.state in ("on", "off"):
            return await tools.async_sentence(hass, language, f"unchanged_{state.state}", name=name)
    return await tools.async_sentence(hass, language, "unchanged")


def _windows(reply: str, names: Mapping[str, Iterable[str]]) -> Iterator[tuple[str, list[str]]]:
    """(entity_id, the words after one of its names) for each name a statement holds."""
    named = names_module.name_words(names)
    for said in _statements(reply):
        yield from _windows_in(said, named)


def _windows_in(
    said: list[str], named: Mapping[str, set[tuple[str, ...]]]
) -> Iterator[tuple[str, list[str]]]:
    for entity_id, words in named.items():
        for name in words:
            for start in range(len(said) - len(name) + 1):
                if tuple(said[start : start + len(name)]) == name:
                    end = start + len(name)
                    # One word more: the decimals of a number at the window's end.
                    yield entity_id, said[end : end + STATE_WINDOW + 1]


def _statements(reply: str) -> list[list[str]]:
    """The reply's sentences that are not questions, each as its normalised words.

    A sentence ends at ".", "!" or "?" followed by a space or the end ("21.5" stays one
    number); a question ("Shall I turn the kitchen light off?") states nothing.
    """
    sentences: list[list[str]] = []
    start = 0
    for index, char in enumerate(reply):
        end_of_text = index + 1 == len(reply)
        if char in ".!?" and (end_of_text or reply[index + 1].isspace()):
            if char != "?":
                sentences.append(normalize(reply[start:index]).split())
            start = index + 1
    sentences.append(normalize(reply[start:]).split())
    return [words for words in sentences if words]


def _until_negation(window: list[str], *stops: str) -> list[str]:
    """The window up to a negation word (or a word of the other `stops` lists)."""
    ends = _STATE_WORDS["negation"].union(*(_STATE_WORDS[stop] for stop in stops))
    for index, word in enumerate(window):
        if word in ends:
            return window[:index]
    return window


def stated_states(reply: str, names: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """The states ("on", "off") the reply gives the named devices: {entity_id: state}.

    `names` maps each device to its names. A state word counts when it comes within
    STATE_WINDOW words after a name in the same sentence, with no negation word before
    it; questions state nothing; a device given both states is left out (the reply is
    not clear enough to judge).
    """
    found: dict[str, set[str]] = {}
    for entity_id, window in _windows(reply, names):
        words = _until_negation(window[:STATE_WINDOW])
        for state in ("on", "off"):
            if _STATE_WORDS[state].intersection(words):
                found.setdefault(entity_id, set()).add(state)
    return {entity_id: states.pop() for entity_id, states in found.items() if len(states) == 1}


def stated_numbers(reply: str, names: Mapping[str, Iterable[str]]) -> dict[str, float]:
    """The values the reply gives the named sensors: {entity_id: value}.

    The first number within STATE_WINDOW words after a name, no negation nor setting
    word ("to", "sur": a value to set, not a reading) before it ("21.5" and "21,5" are
    normalised to "21 5": a second group of one or two digits is its decimals); a
    sensor given two different values is left out.
    """
    found: dict[str, set[float]] = {}
    for entity_id, window in _windows(reply, names):
        words = _until_negation(window, "setting")
        for index, word in enumerate(words[:STATE_WINDOW]):
            if word.isdigit():
                decimals = words[index + 1] if index + 1 < len(words) else ""
                tail = f".{decimals}" if decimals.isdigit() and len(decimals) <= 2 else ""
                found.setdefault(entity_id, set()).add(float(word + tail))
                break
    return {entity_id: values.pop() for entity_id, values in found.items() if len(values) == 1}


def close_enough(stated: float, value: float) -> bool:
    """Whether a spoken value is the sensor's, rounded as people round ("22" for 21.5)."""
    return abs(stated - value) <= 0.5 + 0.02 * abs(value)


def _number(state: str) -> float | None:
    try:
        value = float(state)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _judged(state: State) -> bool:
    """Whether the check judges what a reply says of a device.

    When it is on or off, or a sensor whose value is a number, not below zero ("-5"
    loses its sign when normalised).
    """
    if state.state in ("on", "off"):
        return True
    value = _number(state.state) if state.domain == "sensor" else None
    return value is not None and value >= 0


def _house_devices(hass: HomeAssistant) -> dict[str, list[str]]:
    """The exposed devices the check judges: {entity_id: their names}."""
    return names_module.device_names(hass, _judged)


async def _async_check_states(
    watch: ChangeWatch, evidence: Evidence, reply: str, language: str | None
) -> OwnAnswer | None:
    """The devices' real states, for a reply that gives one a state or value it is not in."""
    words = normalize(reply).split()
    if not (_STATE_WORDS["on"] | _STATE_WORDS["off"]).intersection(words) and not any(
        word.isdigit() for word in words
    ):
        return None  # no state nor number said: no need to read the house
    hass = watch.hass
    devices = _house_devices(hass)
    await _async_settle(watch, evidence)
    wrong: list[tuple[str, State]] = []
    for entity_id, stated in stated_states(reply, devices).items():
        current = hass.states.get(entity_id)
        if current is not None and current.state in ("on", "off") and current.state != stated:
            wrong.append((f"state_{current.state}", current))
    for entity_id, number in stated_numbers(reply, devices).items():
        current = hass.states.get(entity_id)
        value = None if current is None else _number(current.state)
        if current is not None and value is not None and not close_enough(number, value):
            wrong.append(("state_value", current))
    if not wrong:
        return None
    sentences = [
        await tools.async_sentence(
            hass, language, key, name=state.name, value=_spoken_value(state, language)
        )
        for key, state in wrong
    ]
    return ("", " ".join(sentences))


def _spoken_value(state: State, language: str | None) -> str:
    """A sensor's value with its unit, with a decimal comma in French ("21,5 °C")."""
    number = _number(state.state)
    value = state.state if number is None else f"{number:g}"
    if base_language(language) == "fr":
        value = value.replace(".", ",")
    unit = state.attributes.get("unit_of_measurement")
    return f"{value} {unit}" if unit else value


async def _async_check_clock(
    hass: HomeAssistant, utterance: str, reply: str, language: str | None
) -> OwnAnswer | None:
    """The clock's sentence, for a reply that states the date or time from memory."""
    asked, said = _padded(utterance), _padded(reply)
    asks_time, asks_date = _says(asked, _ASKS_TIME), _says(asked, _ASKS_DATE)
    if not (asks_time or asks_date or _says(said, _STATEMENTS)):
        return None
    states_time, states_date = _states_clock(said.split())
    if not (states_time or states_date):
        return None
    if not (asks_time or asks_date):
        asks_time, asks_date = states_time, states_date
    return ("", await tools.async_clock_sentence(hass, language, time=asks_time, date=asks_date))


def _states_clock(words: list[str]) -> tuple[bool, bool]:
    """Whether normalised words state a time of day, and a date (a year, a day or month name).

    "14:05" and "14 h 05" normalise to "14 05" and "14 h 05"; "2023" is a year.
    """
    states_time = states_date = False
    for index, word in enumerate(words):
        if word in _CALENDAR:
            states_date = True
        if not word.isdigit():
            states_time |= word[:-2].isdigit() and word[-2:] in ("am", "pm")
            continue
        value = int(word)
        following = words[index + 1] if index + 1 < len(words) else ""
        if len(word) == 4 and 1900 <= value < 2200:
            states_date = True
        elif value <= 24 and (
            following in _HOUR_WORDS or (len(following) == 2 and following.isdigit())
        ):
            states_time = True
    return states_time, states_date
