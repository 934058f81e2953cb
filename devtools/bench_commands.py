"""The scoreboard: household requests on the demo house, judged by what they did.

    scripts/bench commands [--suite FILE] [--language en|fr] [--limit N] [--timeout S]
                           [--url URL [--model NAME] [--api-key KEY]] [--ctx 8192]
    scripts/bench commands --agent builtin [--suite FILE] ...

Each case of the suite is one sentence sent to Majordome in a fresh conversation, on
the demo house (devtools/house.py) put back in its initial states first, so cases are
independent. One uncounted "Hello" turn comes first: the server reads the prompt cold
outside any case's timeout. By default the model is the embedded llama.cpp server;
`--url` runs the suite against any other OpenAI-compatible server instead (`--model`:
the first one the server lists when not given; `--api-key` or $OPENAI_API_KEY when it
needs a key). `--agent builtin` runs the suite on Home Assistant's own agent
(sentence matching, no model): the reference that checks a suite is achievable.

Suite format (YAML): a list of cases, each with

    say: "Turn on the kitchen light"     # the sentence
    language: en                         # en | fr
    expect_states:                       # the states after the turn ...
      light.kitchen_light: "on"
    expect_in_answer: ["21.5", "21,5"]   # ... or: any one of these in the reply

and optionally `category`: command (the default with expect_states), paraphrase,
follow-up, question (the default with expect_in_answer) or refusal; results are
reported per category and language. `expect_in_answer` is case-insensitive. Extensions:

- `say` may be a list of up to 3 turns said in the same conversation ("and the bedroom
  too" after a first command): the states are judged after the last turn, against the
  house before the first; the reply judged is the last one.
- a refusal (`category: refusal`, with `expect_states`) passes only when nothing
  changed AND the reply says it was not done: one of the phrases of its language in
  benchmarks/refusals.yaml. Doing nothing in silence, or saying "Done", fails.

- in `expect_states`, a value may be a mapping instead of a state: `state` (optional)
  and attributes, numbers compared within 2 %: `brightness` (0-255) or `brightness_pct`
  (0-100) for lights, `current_position` for covers, `temperature` (the target) for
  thermostats, `volume_level` (0-1) for media players. `expect_states: {}` says that
  nothing may change (a request that must be refused).
- `expect_in_answer` strings may hold placeholders, filled from Home Assistant's clock
  when the turn starts or ends (either passes): {year}, {month_en}, {month_fr}, {day},
  {weekday_en}, {weekday_fr}, {tomorrow_weekday_en}, {tomorrow_weekday_fr}, {hour}
  (0-23), {hour02} (00-23), {hour12} (1-12) and {minute02} (00-59).

A case passes when its expectations hold, the turn did not fail (a server error
refuses nothing), and no other device of the house changed: turning on every light
is not "turn on the kitchen light", and a question changes nothing. (A thermostat's
heater switch may follow its thermostat.)

Per case: a PASS/FAIL row on stdout; the reply, the state changes and what failed on
stderr; then a table of success per category and language with the median seconds per
case. The last line of stdout is {"bench": "commands", "agent": "majordome"|"builtin",
"passed": P, "total": T, "median_s": S, "categories": {NAME: {"passed", "total",
"median_s", "by_language": {LANG: {"passed", "total"}}}}, "languages": {LANG: {"passed",
"total", "median_s"}}, "ha_version": V}.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
import difflib
import logging
import math
import os
from pathlib import Path
import re
import statistics
import sys
import time
from typing import Any

import openai
import yaml

from custom_components.majordome.const import (
    CONF_LOCAL_INTENTS,
    CONF_MEMORY_EVERY,
    CONF_TEMPERATURE,
    CONF_TIMEOUT,
)
from custom_components.majordome.memory import Memory
from custom_components.majordome.models import MajordomeConfigEntry
from devtools.bench_common import (
    async_create_entry,
    print_summary,
    run_in_temp_dir,
    wait_for_other_llm_servers,
)
from devtools.hass_runner import running_home_assistant
from devtools.house import HELPER_DOMAINS, Device, Size, async_setup_house, house_devices
from homeassistant.components import conversation
from homeassistant.core import Context, HomeAssistant, State
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util

LOG = logging.getLogger("devtools.bench_commands")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SUITE = REPO_ROOT / "benchmarks" / "commands.yaml"
HOUSE: Size = "demo"
LANGUAGES = ("en", "fr")
AGENTS = ("majordome", "builtin")
CASE_KEYS = frozenset({"say", "language", "category", "expect_states", "expect_in_answer"})
CATEGORIES = ("command", "paraphrase", "follow-up", "question", "refusal")
MAX_TURNS = 3  # `say` as a list: the turns of one conversation
DEFAULT_REFUSALS = REPO_ROOT / "benchmarks" / "refusals.yaml"
DEFAULT_TIMEOUT_S = 180.0
WARMUP_TIMEOUT_S = 600.0  # the first prompt, read cold
RELATIVE_TOLERANCE = 0.02  # numbers in expect_states: within 2 % (of at least 1)

# What a turn can change besides the state, per domain; compared and shown in diffs.
TRACKED_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "light": ("brightness",),
    "cover": ("current_position",),
    "climate": ("temperature",),
    "media_player": ("volume_level",),
}
DERIVED_ATTRIBUTES: dict[str, dict[str, Callable[[dict[str, Any]], Any]]] = {
    "light": {
        "brightness_pct": lambda a: (
            None if a.get("brightness") is None else round(a["brightness"] * 100 / 255)
        )
    },
}

# --- Placeholders in expect_in_answer -------------------------------------------------

_WEEKDAYS = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "fr": ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"),
}
_MONTHS = {
    "en": ("January", "February", "March", "April", "May", "June", "July",
           "August", "September", "October", "November", "December"),
    "fr": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet",
           "août", "septembre", "octobre", "novembre", "décembre"),
}  # fmt: skip
PLACEHOLDER = re.compile(r"\{([a-z0-9_]+)\}")


def placeholder_values(moment: datetime) -> dict[str, str]:
    """The values of the placeholders at a moment (Home Assistant's local time)."""
    tomorrow = moment + timedelta(days=1)
    return {
        "year": str(moment.year),
        "month_en": _MONTHS["en"][moment.month - 1],
        "month_fr": _MONTHS["fr"][moment.month - 1],
        "day": str(moment.day),
        "weekday_en": _WEEKDAYS["en"][moment.weekday()],
        "weekday_fr": _WEEKDAYS["fr"][moment.weekday()],
        "tomorrow_weekday_en": _WEEKDAYS["en"][tomorrow.weekday()],
        "tomorrow_weekday_fr": _WEEKDAYS["fr"][tomorrow.weekday()],
        "hour": str(moment.hour),
        "hour02": f"{moment.hour:02d}",
        "hour12": str(moment.hour % 12 or 12),
        "minute02": f"{moment.minute:02d}",
    }


PLACEHOLDERS = frozenset(placeholder_values(datetime(2000, 1, 1)))


def fill(text: str, values: Mapping[str, str]) -> str:
    """Replace the known placeholders of `text`; anything else stays as written."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


# --- The suite ------------------------------------------------------------------------


class SuiteError(ValueError):
    """The suite file is not a valid list of cases; the message lists every problem."""


@dataclass(frozen=True)
class Expectation:
    """What one entity must be after the turn."""

    entity_id: str
    state: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        """As written in the suite, shortened."""
        parts = [] if self.state is None else [repr(self.state)]
        parts.extend(f"{name}={value}" for name, value in self.attributes)
        return f"{self.entity_id}: {', '.join(parts)}"


@dataclass(frozen=True)
class Case:
    """One request of the suite: one turn, or a few in the same conversation."""

    number: int  # 1-based position in the file
    turns: tuple[str, ...]
    language: str
    expect_states: tuple[Expectation, ...] | None = None
    expect_in_answer: tuple[str, ...] | None = None
    category: str = "command"

    @property
    def say(self) -> str:
        """The turns as one line."""
        return " / ".join(self.turns)


def load_suite(path: Path, devices: Sequence[Device] | None = None) -> list[Case]:
    """Read and validate a suite file; raise SuiteError listing every problem.

    BaseLoader keeps every scalar a string: unquoted `on`, `off` or `21` stay what they
    say instead of becoming booleans and numbers.
    """
    if devices is None:
        devices = house_devices(HOUSE)[1]
    try:
        with path.open(encoding="utf-8") as file:
            data = yaml.load(file, Loader=yaml.BaseLoader)
    except OSError as err:
        raise SuiteError(f"{path}: cannot read: {err}") from err
    except yaml.YAMLError as err:
        raise SuiteError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, list) or not data:
        raise SuiteError(f"{path}: expected a non-empty YAML list of cases")
    by_id = {dev.entity_id: dev for dev in devices}
    cases: list[Case] = []
    problems: list[str] = []
    for number, raw in enumerate(data, start=1):
        case_problems: list[str] = []
        case = _parse_case(number, raw, by_id, case_problems)
        if case_problems:
            label = f"case {number}"
            if isinstance(raw, dict) and isinstance(raw.get("say"), str | list):
                label += f" ({str(raw['say'])[:50]!r})"
            problems.extend(f"{path}: {label}: {problem}" for problem in case_problems)
        elif case is not None:
            cases.append(case)
    if problems:
        raise SuiteError("\n".join(problems))
    return cases


def _parse_case(
    number: int, raw: Any, devices: Mapping[str, Device], problems: list[str]
) -> Case | None:
    if not isinstance(raw, dict):
        problems.append("expected a mapping with `say`, `language` and one expectation")
        return None
    if unknown := sorted(set(raw) - CASE_KEYS):
        problems.append(f"unknown key(s) {unknown}; a case has {sorted(CASE_KEYS)}")
    turns = _parse_turns(raw.get("say"), problems)
    language = raw.get("language")
    if language not in LANGUAGES:
        problems.append(f"`language` must be one of {list(LANGUAGES)}, not {language!r}")
    has_states, has_answer = "expect_states" in raw, "expect_in_answer" in raw
    if has_states == has_answer:
        problems.append(
            "needs exactly one of `expect_states` and `expect_in_answer`"
            + (" (has both)" if has_states else " (has neither)")
        )
    states = _parse_states(raw["expect_states"], devices, problems) if has_states else None
    answer = _parse_answer(raw["expect_in_answer"], problems) if has_answer else None
    category = raw.get("category")
    if category is None:  # what the expectation says it is
        category = "question" if has_answer else "command"
    elif category not in CATEGORIES:
        problems.append(f"`category` must be one of {list(CATEGORIES)}, not {category!r}")
    elif category == "refusal" and not has_states:
        problems.append("a refusal needs `expect_states` (what must stay as it was)")
    if problems:
        return None
    assert isinstance(language, str)
    return Case(number, turns, language, states, answer, category)


def _parse_turns(raw: Any, problems: list[str]) -> tuple[str, ...]:
    """`say`: a sentence, or a list of the sentences of one conversation."""
    if isinstance(raw, str):
        raw = [raw]
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(turn, str) and turn.strip() for turn in raw)
    ):
        problems.append("missing `say` (the sentence, or a list of the turns)")
        return ()
    if len(raw) > MAX_TURNS:
        problems.append(f"`say`: at most {MAX_TURNS} turns, not {len(raw)}")
    return tuple(turn.strip() for turn in raw)


def _parse_states(
    raw: Any, devices: Mapping[str, Device], problems: list[str]
) -> tuple[Expectation, ...]:
    if raw == "" or raw is None:
        raw = {}  # `expect_states:` with nothing after it, as `{}`
    if not isinstance(raw, dict):
        problems.append("`expect_states` must map entity ids to states")
        return ()
    expectations = []
    for entity_id, value in raw.items():
        device = devices.get(entity_id)
        if device is None:
            close = difflib.get_close_matches(entity_id, list(devices), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            problems.append(f"`expect_states`: {entity_id!r} is not in the {HOUSE} house{hint}")
            continue
        if isinstance(value, str):
            expectations.append(Expectation(entity_id, value))
            continue
        if not isinstance(value, dict) or not value:
            problems.append(
                f"`expect_states`: {entity_id}: expected a state or a mapping of "
                f"`state` and attributes, got {value!r}"
            )
            continue
        known = {
            *TRACKED_ATTRIBUTES.get(device.domain, ()),
            *DERIVED_ATTRIBUTES.get(device.domain, {}),
        }
        attributes = []
        for name, expected in value.items():
            if name == "state":
                continue
            if name not in known:
                problems.append(
                    f"`expect_states`: {entity_id}: unknown attribute {name!r}"
                    f" (known for {device.domain}: {sorted(known) or 'none'})"
                )
            elif not isinstance(expected, str) or _number(expected) is None:
                problems.append(f"`expect_states`: {entity_id}: {name} must be a number")
            else:
                attributes.append((name, expected))
        state = value.get("state")
        if state is not None and not isinstance(state, str):
            problems.append(f"`expect_states`: {entity_id}: `state` must be a string")
            continue
        expectations.append(Expectation(entity_id, state, tuple(attributes)))
    return tuple(expectations)


def _parse_answer(raw: Any, problems: list[str]) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        problems.append("`expect_in_answer` must be a non-empty list of strings")
        return ()
    answers = []
    for item in raw:
        if not isinstance(item, str) or not item.strip():
            problems.append(f"`expect_in_answer`: {item!r} is not a non-empty string")
            continue
        for name in PLACEHOLDER.findall(item):
            if name not in PLACEHOLDERS:
                problems.append(
                    f"`expect_in_answer`: unknown placeholder {{{name}}} in {item!r}"
                    f" (known: {', '.join(sorted(PLACEHOLDERS))})"
                )
        answers.append(item)
    return tuple(answers)


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def load_refusals(path: Path = DEFAULT_REFUSALS) -> dict[str, tuple[str, ...]]:
    """The phrases a refusal's reply must hold one of, per language (benchmarks/refusals.yaml)."""
    try:
        with path.open(encoding="utf-8") as file:
            data = yaml.load(file, Loader=yaml.BaseLoader)
    except (OSError, yaml.YAMLError) as err:
        raise SuiteError(f"{path}: cannot read the refusal phrases: {err}") from err
    if not isinstance(data, dict) or set(data) != set(LANGUAGES):
        raise SuiteError(f"{path}: expected a list of phrases for each of {list(LANGUAGES)}")
    phrases: dict[str, tuple[str, ...]] = {}
    for language, items in data.items():
        if not isinstance(items, list) or not all(
            isinstance(item, str) and item.strip() for item in items
        ):
            raise SuiteError(f"{path}: {language}: expected a non-empty list of phrases")
        phrases[language] = tuple(_folded(item) for item in items)
    return phrases


def _folded(text: str) -> str:
    """Case-insensitive, with typographic apostrophes read as straight ones."""
    return text.replace("\u2019", "'").replace("\u02bc", "'").casefold().strip()


# --- The house: what it is, what changed, back to the start ---------------------------

DeviceState = dict[str, Any]  # {"state": ..., tracked and derived attributes ...}


def device_state(state: State | None, domain: str) -> DeviceState:
    """The part of an entity's state the bench compares."""
    if state is None:
        return {"state": None}
    result: DeviceState = {"state": state.state}
    attributes = dict(state.attributes)
    for name in TRACKED_ATTRIBUTES.get(domain, ()):
        result[name] = attributes.get(name)
    for name, derive in DERIVED_ATTRIBUTES.get(domain, {}).items():
        result[name] = derive(attributes)
    return result


def house_snapshot(hass: HomeAssistant, devices: Sequence[Device]) -> dict[str, DeviceState]:
    """Every device of the house, as the bench compares it."""
    return {
        dev.entity_id: device_state(hass.states.get(dev.entity_id), dev.domain) for dev in devices
    }


def changes(before: Mapping[str, DeviceState], after: Mapping[str, DeviceState]) -> dict[str, str]:
    """entity_id -> "off -> on, brightness None -> 255" for every device that changed."""
    result = {}
    for entity_id, old in before.items():
        new = after.get(entity_id, {})
        parts = []
        for key in old:
            if key in DERIVED_ATTRIBUTES.get(entity_id.split(".")[0], {}):
                continue  # shown through the attribute it derives from
            if old.get(key) != new.get(key):
                label = "" if key == "state" else f"{key} "
                parts.append(f"{label}{old.get(key)} -> {new.get(key)}")
        if parts:
            result[entity_id] = ", ".join(parts)
    return result


class HouseReset:
    """Put the house back in the states it had when this was created.

    Devices keep their states in helpers, so the helpers are restored; thermostats
    first, since setting one may switch its heater, which the helpers then put back.
    A thermostat switches its heater in a task of its own, possibly after the helpers
    were looked at (and restoring its temperature sensor makes it look again), so the
    reset goes round until a whole round finds nothing to restore: the house is settled.
    """

    MAX_ROUNDS = 5  # a settled house needs 2 or 3; more means something keeps changing

    def __init__(self, hass: HomeAssistant, devices: Sequence[Device]) -> None:
        """Remember the helpers, the thermostats and what the devices look like."""
        self.hass = hass
        self.devices = tuple(devices)
        self.saved = {
            state.entity_id: state for state in hass.states.async_all([*HELPER_DOMAINS, "climate"])
        }
        self.initial = house_snapshot(hass, devices)

    async def async_reset(self) -> None:
        """Restore what changed until nothing does; raise RuntimeError if it never settles."""
        for _ in range(self.MAX_ROUNDS):
            restored = False
            for domains in (("climate",), HELPER_DOMAINS):
                for old in self.saved.values():
                    if old.domain in domains and self._differs(old):
                        await self._async_restore(old)
                        restored = True
                await self.hass.async_block_till_done()
            if not restored:
                break
        if diff := changes(self.initial, house_snapshot(self.hass, self.devices)):
            raise RuntimeError(f"the house did not come back to its initial states: {diff}")
        if restored:
            raise RuntimeError(
                f"the house did not settle in {self.MAX_ROUNDS} rounds of restoring it"
            )

    def _differs(self, old: State) -> bool:
        new = self.hass.states.get(old.entity_id)
        if new is None:
            return False  # nothing to restore it on
        if old.domain == "climate":  # what the reset sets; the rest follows the sensor
            return (new.state, new.attributes.get("temperature")) != (
                old.state,
                old.attributes.get("temperature"),
            )
        return new.state != old.state or new.attributes != old.attributes

    async def _async_restore(self, old: State) -> None:
        target = {"entity_id": old.entity_id}
        call = self.hass.services.async_call
        if old.domain == "input_boolean":
            await call(
                old.domain, "turn_on" if old.state == "on" else "turn_off", target, blocking=True
            )
        elif old.domain == "input_number":
            await call(
                old.domain, "set_value", {**target, "value": float(old.state)}, blocking=True
            )
        elif old.domain == "input_select":
            await call(old.domain, "select_option", {**target, "option": old.state}, blocking=True)
        else:  # climate
            await call(
                old.domain, "set_hvac_mode", {**target, "hvac_mode": old.state}, blocking=True
            )
            await call(
                old.domain,
                "set_temperature",
                {**target, "temperature": old.attributes.get("temperature")},
                blocking=True,
            )


# --- Judging a case -------------------------------------------------------------------


def _same(actual: Any, expected: str) -> bool:
    """A state or attribute against the suite's string: numbers within 2 %, else text."""
    wanted = _number(expected)
    got = _number(actual)
    if wanted is not None and got is not None:
        return abs(got - wanted) <= RELATIVE_TOLERANCE * max(abs(wanted), 1.0)
    return str(actual).strip().casefold() == expected.strip().casefold()


def judge(
    case: Case,
    devices: Sequence[Device],
    before: Mapping[str, DeviceState],
    after: Mapping[str, DeviceState],
    *,
    reply: str,
    moments: Sequence[datetime],
    error: str | None = None,
    refusals: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """Return why the case failed; an empty list when it passed.

    A refusal also needs its reply to say so: one of the phrases of its language
    (`refusals`, by default benchmarks/refusals.yaml).
    """
    problems = []
    if error:
        problems.append(f"the turn failed: {error}")
    if case.category == "refusal":
        phrases = (refusals if refusals is not None else load_refusals())[case.language]
        folded_reply = _folded(reply)
        if not any(_folded(phrase) in folded_reply for phrase in phrases):
            problems.append("the reply does not say it was not done (no refusal phrase)")
    expected_ids = set()
    for expectation in case.expect_states or ():
        expected_ids.add(expectation.entity_id)
        now = after.get(expectation.entity_id, {"state": None})
        if expectation.state is not None and not _same(now.get("state"), expectation.state):
            problems.append(
                f"{expectation.entity_id} is {now.get('state')!r}, expected {expectation.state!r}"
            )
        for name, value in expectation.attributes:
            if not _same(now.get(name), value):
                problems.append(
                    f"{expectation.entity_id} {name} is {now.get(name)!r}, expected {value}"
                )
    if case.expect_in_answer is not None:
        folded = reply.casefold()
        candidates = {
            fill(item, placeholder_values(moment))
            for moment in moments
            for item in case.expect_in_answer
        }
        if not any(candidate.casefold() in folded for candidate in candidates):
            problems.append(f"the reply holds none of {sorted(candidates)}")
    diff = changes(before, after)
    thermostats = {dev.entity_id: dev.heater for dev in devices if dev.domain == "climate"}
    excused = {heater for thermostat, heater in thermostats.items() if thermostat in diff}
    for entity_id, change in diff.items():
        if entity_id not in expected_ids and entity_id not in excused:
            problems.append(f"unexpected change: {entity_id} {change}")
    return problems


# --- Running cases --------------------------------------------------------------------


@dataclass
class CaseResult:
    """What one case did."""

    case: Case
    reply: str
    changes: dict[str, str]
    problems: list[str]
    seconds: float
    error: str | None = None

    @property
    def passed(self) -> bool:
        """Whether every expectation held and nothing else changed."""
        return not self.problems


def _report(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class CommandsRunner:
    """Runs cases on a house that async_setup_house built.

    The agent is one Majordome entry, or with `entry=None` Home Assistant's built-in
    agent (sentence matching, no model): the reference a suite is checked against.
    """

    def __init__(
        self,
        hass: HomeAssistant,
        entry: MajordomeConfigEntry | None,
        devices: Sequence[Device],
        timeout_s: float = DEFAULT_TIMEOUT_S,
        refusals: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Remember the house's initial states and the entry's memory as they are now."""
        self.hass = hass
        self.entry = entry
        self.agent_id = conversation.HOME_ASSISTANT_AGENT if entry is None else entry.entry_id
        self.devices = tuple(devices)
        self.timeout_s = timeout_s
        self.refusals = load_refusals() if refusals is None else refusals
        self.reset = HouseReset(hass, devices)
        self.memory: Memory | None = None if entry is None else entry.runtime_data.memory.memory

    async def async_run(
        self, cases: Sequence[Case], report: Callable[[str], None] = _report
    ) -> list[CaseResult]:
        """Run the cases one after the other; report each on stderr and as a row on stdout."""
        results = []
        for index, case in enumerate(cases, start=1):
            report(f"[{index}/{len(cases)}] {case.language} {case.say!r}")
            result = await self.async_run_case(case)
            results.append(result)
            report(f"  reply: {result.reply!r}")
            report(
                "  changes: " + ("; ".join(f"{k} {v}" for k, v in result.changes.items()) or "none")
            )
            for problem in result.problems:
                report(f"  FAIL: {problem}")
            print(
                f"{'PASS' if result.passed else 'FAIL':<5} {case.language}  "
                f"{result.seconds:6.1f}s  {case.say}",
                flush=True,
            )
        return results

    async def async_warm_up(self, say: str = "Hello", timeout_s: float = WARMUP_TIMEOUT_S) -> None:
        """One uncounted turn: the server reads the system prompt and tools cold once.

        Without it the first case alone pays for that (minutes on a small CPU), and
        its timeout would not mean what the others' do.
        """
        started = time.monotonic()
        try:
            async with asyncio.timeout(max(timeout_s, self.timeout_s)):
                await conversation.async_converse(
                    self.hass, say, None, Context(), language="en", agent_id=self.agent_id
                )
        except TimeoutError:
            _report(f"warm-up: no answer within {max(timeout_s, self.timeout_s):g} s")
        else:
            _report(f"warm-up turn (not counted): {time.monotonic() - started:.1f} s")

    async def async_run_case(self, case: Case) -> CaseResult:
        """One case: reset the house and memory, its turns in a new conversation, judge.

        The states are judged after the last turn, against the house before the first;
        the reply judged is the last one. Each turn has the case's timeout.
        """
        await self.reset.async_reset()
        if self.entry is not None and self.memory is not None:
            store = self.entry.runtime_data.memory
            if store.memory != self.memory:  # a `remember` call of an earlier case
                store.update(**asdict(self.memory))
        before = house_snapshot(self.hass, self.devices)
        moments = [dt_util.now()]
        started = time.monotonic()
        reply, error, conversation_id = "", None, None
        for turn in case.turns:
            reply, error, conversation_id = await self._async_turn(
                turn, case.language, conversation_id
            )
            if error:
                break
        seconds = time.monotonic() - started
        await self.hass.async_block_till_done()
        moments.append(dt_util.now())
        after = house_snapshot(self.hass, self.devices)
        problems = judge(
            case, self.devices, before, after,
            reply=reply, moments=moments, error=error, refusals=self.refusals,
        )  # fmt: skip
        return CaseResult(case, reply, changes(before, after), problems, seconds, error)

    async def _async_turn(
        self, say: str, language: str, conversation_id: str | None
    ) -> tuple[str, str | None, str | None]:
        """One turn: the reply, why it failed (None when it did not), the conversation."""
        if self.entry is not None:
            self.entry.runtime_data.last_turn = None
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await conversation.async_converse(
                    self.hass, say, conversation_id, Context(),
                    language=language, agent_id=self.agent_id,
                )  # fmt: skip
        except TimeoutError:
            return "", f"no answer within {self.timeout_s:g} s", conversation_id
        reply = str(result.response.speech.get("plain", {}).get("speech", ""))
        trace = None if self.entry is None else self.entry.runtime_data.last_turn
        error = trace.error if trace is not None else None
        return reply, error, result.conversation_id or conversation_id


def _tally(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Passed, total and the median seconds per case of some results."""
    return {
        "passed": sum(r.passed for r in results),
        "total": len(results),
        "median_s": round(statistics.median(r.seconds for r in results), 3) if results else None,
    }


def summary(results: Sequence[CaseResult], agent: str = "majordome") -> dict[str, Any]:
    """The JSON object of the last line: overall, per category (by language) and per language."""
    categories = {}
    for category in CATEGORIES:
        mine = [r for r in results if r.case.category == category]
        if mine:
            by_language = {
                language: {k: v for k, v in _tally(ours).items() if k != "median_s"}
                for language in LANGUAGES
                if (ours := [r for r in mine if r.case.language == language])
            }
            categories[category] = {**_tally(mine), "by_language": by_language}
    languages = {
        language: _tally(mine)
        for language in LANGUAGES
        if (mine := [r for r in results if r.case.language == language])
    }
    return {
        "bench": "commands",
        "agent": agent,
        **_tally(results),
        "categories": categories,
        "languages": languages,
    }


def print_table(results: Sequence[CaseResult]) -> None:
    """Success per category and language, and the median time per case, on stdout."""
    report = summary(results)
    print(f"{'category':<11} {'en':>7} {'fr':>7} {'all':>7} {'median':>9}")
    rows = [(name, c, c["by_language"]) for name, c in report["categories"].items()]
    rows.append(("all", report, report["languages"]))
    for name, overall, by_language in rows:
        cells = [
            f"{by_language[lang]['passed']}/{by_language[lang]['total']}"
            if lang in by_language
            else "-"
            for lang in LANGUAGES
        ]
        print(
            f"{name:<11} {cells[0]:>7} {cells[1]:>7} "
            f"{str(overall['passed']) + '/' + str(overall['total']):>7} "
            f"{overall['median_s']:>8.3f}s"
        )


# --- Setup and command line -----------------------------------------------------------


async def async_first_model(url: str, api_key: str | None) -> str:
    """The first model a server lists."""
    client = openai.AsyncOpenAI(base_url=url, api_key=api_key or "no-key", max_retries=0)
    try:
        models = [model.id async for model in client.models.list()]
    finally:
        await client.close()
    if not models:
        raise RuntimeError(f"{url} lists no model: pass --model")
    return models[0]


async def async_commands(
    cases: Sequence[Case],
    config_dir: Path,
    *,
    url: str | None,
    model: str | None,
    api_key: str | None,
    timeout_s: float,
) -> dict[str, Any]:
    """Start Home Assistant with the demo house and one agent, run the cases.

    The agent is Majordome on `url`, or with `url=None` Home Assistant's built-in agent.
    """
    async with running_home_assistant(config_dir) as hass:
        house = await async_setup_house(hass, HOUSE)
        _report(f"house: {len(house.exposed)} exposed entities in {len(house.areas)} areas")
        entry = None
        if url is not None and model is not None:
            entry = await async_create_entry(
                hass,
                url,
                model,
                {
                    CONF_TEMPERATURE: 0.0,
                    CONF_TIMEOUT: max(1, math.ceil(timeout_s)),
                    CONF_MEMORY_EVERY: 0,  # no background summaries between cases
                    CONF_LOCAL_INTENTS: False,  # the model's score, as published
                },
                api_key=api_key,
            )
        elif not await async_setup_component(hass, "conversation", {}):
            raise RuntimeError("Home Assistant failed to set up conversation")
        runner = CommandsRunner(hass, entry, house.devices, timeout_s)
        if entry is not None:
            await runner.async_warm_up()
        results = await runner.async_run(cases)
    for language in LANGUAGES:
        mine = [r for r in results if r.case.language == language]
        if mine:
            print(f"{language}: {sum(r.passed for r in mine)}/{len(mine)} passed")
    print_table(results)
    failed = [r.case.number for r in results if not r.passed]
    print(f"failed cases (by number in the suite): {failed or 'none'}")
    return summary(results, "majordome" if entry is not None else "builtin")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, run the suite, print the rows and the JSON line."""
    from devtools.llm import LocalLlmServer

    parser = argparse.ArgumentParser(
        prog="scripts/bench commands",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--suite", type=Path, default=DEFAULT_SUITE, help="YAML suite file")
    parser.add_argument("--language", choices=LANGUAGES, help="only the cases in this language")
    parser.add_argument("--limit", type=int, help="only the first N cases (after --language)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds per case (default {DEFAULT_TIMEOUT_S:.0f})",
    )
    parser.add_argument(
        "--agent",
        choices=AGENTS,
        default="majordome",
        help="majordome (default), or builtin: Home Assistant's own agent, no model (a"
        " suite's reference)",
    )
    parser.add_argument("--url", help="an OpenAI-compatible server instead of the embedded model")
    parser.add_argument("--model", help="with --url: the model (default: the first listed)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY"),
        help="with --url: the key, if the server needs one (default: $OPENAI_API_KEY)",
    )
    parser.add_argument("--ctx", type=int, default=8192, help="embedded server context size")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")
    if args.model and not args.url:
        parser.error("--model needs --url (the embedded server has one model)")
    if args.agent == "builtin" and args.url:
        parser.error("--url is for --agent majordome (the built-in agent uses no model)")
    try:
        cases = load_suite(args.suite)
    except SuiteError as err:
        parser.error(str(err))
    if args.language:
        cases = [case for case in cases if case.language == args.language]
    cases = cases[: args.limit] if args.limit else cases
    if not cases:
        parser.error("no case to run")

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    started = time.monotonic()

    def run(url: str | None, model: str | None, api_key: str | None) -> dict[str, Any]:
        return run_in_temp_dir(
            "commands",
            lambda tmp: async_commands(
                cases, tmp, url=url, model=model, api_key=api_key, timeout_s=args.timeout
            ),
        )

    if args.agent == "builtin":
        _report("agent: Home Assistant's built-in agent")
        result = run(None, None, None)
    elif args.url:
        model = args.model or asyncio.run(async_first_model(args.url, args.api_key))
        _report(f"server: {model} at {args.url}")
        result = run(args.url, model, args.api_key)
    else:
        wait_for_other_llm_servers()
        with LocalLlmServer(ctx=args.ctx) as server:
            _report(f"LLM server: {server.model} at {server.base_url}, n_ctx {args.ctx}")
            result = run(server.base_url, server.model, None)
    _report(f"wall time: {time.monotonic() - started:.1f} s")
    print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
