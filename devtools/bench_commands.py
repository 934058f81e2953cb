"""The scoreboard: household requests on the demo house, judged by what they did.

    scripts/bench commands [--suite FILE] [--language en|fr] [--limit N] [--timeout S]
                           [--url URL [--model NAME] [--api-key KEY]] [--ctx 8192]
    scripts/bench commands --agent builtin [--suite FILE] ...
    scripts/bench [--ha 2026.11] commands --agents all|NAME,NAME... [--url URL ...] ...
    scripts/bench [--ha 2026.11] commands --main-model 1.5b ...   (the cascade)

Each case of the suite is one sentence sent to Majordome in a fresh conversation, on
the demo house (devtools/house.py) put back in its initial states first, so cases are
independent. One uncounted "Hello" turn comes first: the server reads the prompt cold
outside any case's timeout. By default the model is the embedded llama.cpp server;
`--url` runs the suite against any other OpenAI-compatible server instead (`--model`:
the first one the server lists when not given; `--api-key` or $OPENAI_API_KEY when it
needs a key). `--agent builtin` runs the suite on Home Assistant's own agent
(sentence matching, no model): the reference that checks a suite is achievable.

`--agents` runs the competition side by side in one run, on the same house and the
same model server (`--url`, `--model` and `--api-key` apply to every agent with a
model): each case on each agent in turn, the house reset before each (`--order
agent`: every case on one agent, then the next, which keeps each agent's prompt in
the cache of a server with one slot, like the embedded one). The agents:
`majordome` (every stage), `majordome-nolocal` (the same, its local stage off: a
second agent of the same entry), `builtin` (Home Assistant's agent alone) and
`llama_cpp` (Home Assistant's own LLM agent for OpenAI-compatible servers, set up
through its flows on the same URL and model with the Assist API, temperature 0 as
Majordome's, and reached as users reach it: an Assist pipeline per language whose
agent it is, with "prefer handling commands locally" on, run on text over the
websocket API). Its requests go through a proxy that types the tool parameters it
leaves untyped (a string, as Majordome sends them): llama.cpp refuses the whole request
otherwise (`--llama-cpp-schemas as-sent` measures it as it is). Where the release has
no llama_cpp (2025.4), it is reported unavailable with the reason. `--main-model 1.5b`
starts the embedded 1.5B model as the main model and the 0.5B as Majordome's fast
model (the cascade); the other agents get the main model. `all` is the four. The table has a row per category and
language and a column per agent (successes and the median seconds per case), then
each agent's "done without change" (a request failed, nothing changed, and the reply
says it was done: one of benchmarks/claims.yaml's phrases and no refusal phrase) and
who answered its turns (`local`: Home Assistant's sentences; `none`: no model, e.g.
screening rules; else the model, as the turn's trace names it).

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
"total", "median_s"}}, "done_without_change": N, "answered_by": {WHO: {"turns", "share"}},
"ha_version": V}; with --agents: {"bench": "commands", "agents": {NAME: that object
without "bench", or {"agent", "unavailable": REASON}}, "model": M, "ha_version": V}.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
import contextlib
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
import difflib
import importlib.util
import itertools
import logging
import math
import os
from pathlib import Path
import re
import statistics
import sys
import time
from typing import Any, Protocol

import aiohttp
import openai
import yaml

from custom_components.majordome.const import (
    CONF_FAST_MODEL,
    CONF_FAST_URL,
    CONF_LOCAL_INTENTS,
    CONF_MEMORY_EVERY,
    CONF_TEMPERATURE,
    CONF_TIMEOUT,
    DOMAIN,
)
from custom_components.majordome.local import LocalOutcome
from custom_components.majordome.memory import Memory
from custom_components.majordome.models import MajordomeConfigEntry, TurnTrace
from devtools.bench_common import (
    async_access_token,
    async_add_agent,
    async_create_entry,
    print_summary,
    run_in_temp_dir,
    wait_for_other_llm_servers,
)
from devtools.hass_runner import running_home_assistant
from devtools.house import HELPER_DOMAINS, Device, Size, async_setup_house, house_devices
from devtools.model_proxy import ModelProxy, typed_tool_schemas
from homeassistant.components import conversation
from homeassistant.config_entries import SOURCE_RECONFIGURE, SOURCE_USER
from homeassistant.const import CONF_API_KEY, __version__ as HA_VERSION
from homeassistant.core import Context, HomeAssistant, State
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import entity_registry as er, llm
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util

LOG = logging.getLogger("devtools.bench_commands")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SUITE = REPO_ROOT / "benchmarks" / "commands.yaml"
HOUSE: Size = "demo"
LANGUAGES = ("en", "fr")
AGENTS = ("majordome", "builtin")
# --agents: the competition, side by side (MODEL_AGENTS talk to the model server).
AGENT_NAMES = ("majordome", "majordome-nolocal", "builtin", "llama_cpp")
MODEL_AGENTS = frozenset({"majordome", "majordome-nolocal", "llama_cpp"})
LLAMA_CPP = "llama_cpp"  # Home Assistant's integration (and agent name)
CASE_KEYS = frozenset({"say", "language", "category", "expect_states", "expect_in_answer"})
CATEGORIES = ("command", "paraphrase", "follow-up", "question", "refusal")
MAX_TURNS = 3  # `say` as a list: the turns of one conversation
DEFAULT_REFUSALS = REPO_ROOT / "benchmarks" / "refusals.yaml"
DEFAULT_CLAIMS = REPO_ROOT / "benchmarks" / "claims.yaml"
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


def select_cases(
    cases: Sequence[Case], language: str | None, every: int = 1, limit: int | None = None
) -> list[Case]:
    """The cases of `language` (all: None), every `every`th of them, at most `limit`."""
    chosen = [case for case in cases if language is None or case.language == language]
    return chosen[::every][:limit]


def load_refusals(path: Path = DEFAULT_REFUSALS) -> dict[str, tuple[str, ...]]:
    """The phrases a refusal's reply must hold one of, per language (benchmarks/refusals.yaml)."""
    return _load_phrases(path, "refusal")


def load_claims(path: Path = DEFAULT_CLAIMS) -> dict[str, tuple[str, ...]]:
    """The phrases of a reply that claims it did it, per language (benchmarks/claims.yaml)."""
    return _load_phrases(path, "claim")


def _load_phrases(path: Path, kind: str) -> dict[str, tuple[str, ...]]:
    """A phrase file: a list of phrases for each language, folded."""
    try:
        with path.open(encoding="utf-8") as file:
            data = yaml.load(file, Loader=yaml.BaseLoader)
    except (OSError, yaml.YAMLError) as err:
        raise SuiteError(f"{path}: cannot read the {kind} phrases: {err}") from err
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


def says_any(reply: str, phrases: Sequence[str]) -> bool:
    """Whether the reply holds one of the phrases."""
    folded = _folded(reply)
    return any(_folded(phrase) in folded for phrase in phrases)


def claims_done(reply: str, phrases: Sequence[str]) -> bool:
    """Whether the reply holds one of the phrases, each at the start of a word.

    The phrases are the bench's own, escaped: nothing the reply holds is a pattern.
    """
    folded = _folded(reply)
    return any(re.search(r"(?<!\w)" + re.escape(_folded(phrase)), folded) for phrase in phrases)


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
        if not says_any(reply, phrases):
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


# --- Agents: what the bench talks to -------------------------------------------------

LOCAL = "local"  # answered by Home Assistant's own sentences: no model
NO_MODEL = "none"  # answered without Home Assistant's sentences nor a model (rules, errors)


@dataclass(frozen=True)
class Server:
    """A model on an OpenAI-compatible server: its base URL and the model's id."""

    url: str
    model: str


@dataclass(frozen=True)
class Turn:
    """What an agent answered to one sentence."""

    reply: str
    conversation_id: str | None
    error: str | None = None  # why the turn failed; None when it did not
    answered_by: str = ""  # LOCAL, NO_MODEL, a model's name, or "" (not known)


class Agent(Protocol):
    """An agent: one sentence in, one Turn out."""

    agent_id: str  # its conversation agent (the warm-up talks to it directly)

    async def async_turn(self, say: str, language: str, conversation_id: str | None) -> Turn:
        """Answer one sentence, in a conversation or a new one."""


def answering_model(trace: TurnTrace, model: str, fast_model: str = "") -> str:
    """The model whose completion stood in a Majordome turn.

    The fast one when the trace says the fast model's turn stood (a cascade), else the
    agent's model.
    """
    return fast_model if fast_model and trace.answered_by == "fast" else model


class ConverseAgent:
    """An agent reached by `conversation.async_converse`: Majordome, or the built-in one.

    With `entry=None` it is Home Assistant's built-in agent (sentence matching, no
    model); otherwise an agent of that Majordome entry, on `model`.
    """

    def __init__(
        self,
        hass: HomeAssistant,
        agent_id: str,
        entry: MajordomeConfigEntry | None = None,
        model: str = "",
        fast_model: str = "",
    ) -> None:
        """Remember where to send the sentences (and the fast model's name, if any)."""
        self.hass = hass
        self.agent_id = agent_id
        self.entry = entry
        self.model = model
        self.fast_model = fast_model

    async def async_turn(self, say: str, language: str, conversation_id: str | None) -> Turn:
        """One turn; Majordome's trace says whether it failed and who answered."""
        if self.entry is not None:
            self.entry.runtime_data.last_turn = None
        result = await conversation.async_converse(
            self.hass, say, conversation_id, Context(), language=language, agent_id=self.agent_id
        )
        reply = str(result.response.speech.get("plain", {}).get("speech", ""))
        conversation_id = result.conversation_id or conversation_id
        if self.entry is None:
            return Turn(reply, conversation_id, answered_by=LOCAL)
        trace = self.entry.runtime_data.last_turn
        if trace is None:
            return Turn(reply, conversation_id)
        if trace.local == LocalOutcome.HANDLED:
            answered_by = LOCAL
        elif trace.completions:
            answered_by = answering_model(trace, self.model, self.fast_model)
        else:
            answered_by = NO_MODEL
        return Turn(reply, conversation_id, trace.error, answered_by)


class WebsocketClient:
    """Home Assistant's websocket API on a connection already authenticated.

    Messages of other commands (the events of a run the bench gave up on) are skipped.
    A connection of its own (`async_connect`) is read all along, by a task: aiohttp
    answers Home Assistant's heartbeat pings only while someone reads, and the bench
    may leave it idle for many minutes (`--order agent`), after which Home Assistant
    would close it.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Number the commands from 1 on this connection."""
        self.ws = ws
        self._ids = itertools.count(1)
        self._read: asyncio.Queue[dict[str, Any]] | None = None  # read ahead, if a task reads

    async def _async_read_all(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            queue.put_nowait(await self.ws.receive_json())

    @classmethod
    @asynccontextmanager
    async def async_connect(
        cls, hass: HomeAssistant, session: aiohttp.ClientSession
    ) -> AsyncIterator[WebsocketClient]:
        """Connect to the Home Assistant of the bench as an admin user."""
        token = await async_access_token(hass)
        url = f"http://127.0.0.1:{hass.http.server_port}/api/websocket"
        async with session.ws_connect(url) as ws:
            for expected in ("auth_required", "auth_ok"):
                if expected == "auth_ok":
                    await ws.send_json({"type": "auth", "access_token": token})
                message = await ws.receive_json()
                if message.get("type") != expected:
                    raise RuntimeError(f"websocket: expected {expected}, got {message}")
            client = cls(ws)
            client._read = asyncio.Queue()
            reader = asyncio.create_task(client._async_read_all(client._read))
            try:
                yield client
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    async def async_send(self, message: dict[str, Any]) -> int:
        """Send a command; its id."""
        command_id = next(self._ids)
        await self.ws.send_json({**message, "id": command_id})
        return command_id

    async def async_receive(self, command_id: int) -> dict[str, Any]:
        """The next message about that command."""
        while True:
            message: dict[str, Any] = await (
                self._read.get() if self._read is not None else self.ws.receive_json()
            )
            if message.get("id") == command_id:
                return message

    async def async_command(self, message: dict[str, Any]) -> Any:
        """Send a command and return its result; RuntimeError when it failed."""
        answer = await self.async_receive(await self.async_send(message))
        if not answer.get("success"):
            raise RuntimeError(f"websocket {message['type']}: {answer.get('error')}")
        return answer.get("result")


class PipelineAgent:
    """An agent behind Assist pipelines, one per language, run as the frontend runs them.

    Text in, the intent stage only (`assist_pipeline/run`): with "prefer handling
    commands locally" on, Home Assistant's own sentences answer first, and the agent
    only what they did not handle.
    """

    def __init__(
        self, client: WebsocketClient, pipelines: Mapping[str, str], agent_id: str, model: str
    ) -> None:
        """`pipelines`: the pipeline id for each language."""
        self.client = client
        self.pipelines = dict(pipelines)
        self.agent_id = agent_id
        self.model = model

    async def async_turn(self, say: str, language: str, conversation_id: str | None) -> Turn:
        """One run of the pipeline; its intent-end event holds the reply and who answered."""
        run_id = await self.client.async_send(
            {
                "type": "assist_pipeline/run",
                "start_stage": "intent",
                "end_stage": "intent",
                "input": {"text": say},
                "pipeline": self.pipelines[language],
                "conversation_id": conversation_id,
            }
        )
        try:
            return await self._async_events(run_id, conversation_id)
        except asyncio.CancelledError:
            # The bench gave up (the case's timeout): the run stops too, instead of
            # holding Home Assistant and acting later, on the next case's house.
            await self.client.async_send({"type": "unsubscribe_events", "subscription": run_id})
            raise

    async def _async_events(self, run_id: int, conversation_id: str | None) -> Turn:
        """The run's events until its end, as a Turn."""
        turn = Turn("", conversation_id, "the pipeline ended without an answer")
        while True:
            message = await self.client.async_receive(run_id)
            if message.get("type") == "result":
                if not message.get("success"):
                    return Turn("", conversation_id, f"pipeline: {message.get('error')}")
                continue
            event = message.get("event", {})
            data = event.get("data") or {}
            if event.get("type") == "intent-end":
                output = data.get("intent_output", {})
                speech = output.get("response", {}).get("speech", {})
                turn = Turn(
                    str(speech.get("plain", {}).get("speech", "")),
                    output.get("conversation_id") or conversation_id,
                    answered_by=LOCAL if data.get("processed_locally") else self.model,
                )
            elif event.get("type") == "error":
                turn = Turn(
                    turn.reply, turn.conversation_id, f"{data.get('code')}: {data.get('message')}"
                )
            elif event.get("type") == "run-end":
                return turn


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
    answered_by: tuple[str, ...] = ()  # per turn: LOCAL, NO_MODEL or a model ("" unknown)
    done_without_change: bool = False  # a request failed, nothing changed, the reply says done

    @property
    def passed(self) -> bool:
        """Whether every expectation held and nothing else changed."""
        return not self.problems


def _report(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _show(result: CaseResult, agent: str | None, report: Callable[[str], None]) -> None:
    """A case's reply, changes and problems on stderr; its PASS/FAIL row on stdout."""
    report(f"  reply: {result.reply!r}")
    report("  changes: " + ("; ".join(f"{k} {v}" for k, v in result.changes.items()) or "none"))
    for problem in result.problems:
        report(f"  FAIL: {problem}")
    if result.done_without_change:
        report("  done without change: the reply says it was done, nothing changed")
    label = "" if agent is None else f"{agent:<18} "
    print(
        f"{'PASS' if result.passed else 'FAIL':<5} {result.case.language}  {label}"
        f"{result.seconds:6.1f}s  {result.case.say}",
        flush=True,
    )


class CommandsRunner:
    """Runs cases on a house that async_setup_house built.

    The agent is one Majordome entry, or with `entry=None` Home Assistant's built-in
    agent (sentence matching, no model): the reference a suite is checked against; or
    any `agent` given (`entry`: the Majordome entry whose memory is restored per case).
    """

    def __init__(
        self,
        hass: HomeAssistant,
        entry: MajordomeConfigEntry | None,
        devices: Sequence[Device],
        timeout_s: float = DEFAULT_TIMEOUT_S,
        refusals: Mapping[str, Sequence[str]] | None = None,
        *,
        agent: Agent | None = None,
    ) -> None:
        """Remember the house's initial states and the entry's memory as they are now."""
        self.hass = hass
        self.entry = entry
        if agent is None:
            agent_id = conversation.HOME_ASSISTANT_AGENT if entry is None else entry.entry_id
            agent = ConverseAgent(hass, agent_id, entry)
        self.agent = agent
        self.devices = tuple(devices)
        self.timeout_s = timeout_s
        self.refusals = load_refusals() if refusals is None else refusals
        self.claims = load_claims()
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
            _show(result, None, report)
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
                    self.hass, say, None, Context(), language="en", agent_id=self.agent.agent_id
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
        turn = Turn("", None)
        answered_by = []
        for say in case.turns:
            turn = await self._async_turn(say, case.language, turn.conversation_id)
            answered_by.append(turn.answered_by)
            if turn.error:
                break
        seconds = time.monotonic() - started
        await self.hass.async_block_till_done()
        moments.append(dt_util.now())
        after = house_snapshot(self.hass, self.devices)
        problems = judge(
            case, self.devices, before, after,
            reply=turn.reply, moments=moments, error=turn.error, refusals=self.refusals,
        )  # fmt: skip
        changed = changes(before, after)
        unfounded = (
            bool(problems)
            and case.expect_states is not None
            and not changed
            and claims_done(turn.reply, self.claims[case.language])
            and not says_any(turn.reply, self.refusals[case.language])
        )
        return CaseResult(
            case, turn.reply, changed, problems, seconds, turn.error, tuple(answered_by), unfounded
        )

    async def _async_turn(self, say: str, language: str, conversation_id: str | None) -> Turn:
        """One turn within the case's timeout."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self.agent.async_turn(say, language, conversation_id)
        except TimeoutError:
            return Turn("", conversation_id, f"no answer within {self.timeout_s:g} s")


async def async_run_side_by_side(
    runners: Mapping[str, CommandsRunner],
    cases: Sequence[Case],
    report: Callable[[str], None] = _report,
    *,
    by_agent: bool = False,
) -> dict[str, list[CaseResult]]:
    """Every case on every agent, the house reset before each: results per agent.

    Case by case (each case on each agent in turn), or with `by_agent` agent by agent
    (every case on one agent, then the next): a server with one slot then keeps each
    agent's prompt in its cache, as a household's one agent would.
    """
    results: dict[str, list[CaseResult]] = {name: [] for name in runners}
    numbered = list(enumerate(cases, start=1))
    order = (
        [(name, item) for name in runners for item in numbered]
        if by_agent
        else [(name, item) for item in numbered for name in runners]
    )
    for name, (index, case) in order:
        report(f"[{index}/{len(cases)}] {name} {case.language} {case.say!r}")
        result = await runners[name].async_run_case(case)
        results[name].append(result)
        _show(result, name, report)
    return results


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
        "done_without_change": sum(r.done_without_change for r in results),
        "answered_by": answered_by(results),
    }


def answered_by(results: Sequence[CaseResult]) -> dict[str, dict[str, Any]]:
    """Who answered the turns: LOCAL, NO_MODEL or each model, with its share of the turns.

    Each case also counts for whoever answered its last turn: `cases`, `passed` and
    `median_s` (the whole case's time), e.g. how fast and how right the requests Home
    Assistant's sentences answered were.
    """
    counts = Counter(who for r in results for who in r.answered_by if who)
    total = sum(counts.values())
    by_last: dict[str, list[CaseResult]] = {}
    for result in results:
        if result.answered_by and result.answered_by[-1]:
            by_last.setdefault(result.answered_by[-1], []).append(result)
    report: dict[str, dict[str, Any]] = {}
    for who, turns in counts.most_common():
        report[who] = {"turns": turns, "share": round(turns / total, 3)}
        if cases := by_last.get(who):
            report[who].update(
                cases=len(cases),
                passed=sum(r.passed for r in cases),
                median_s=round(statistics.median(r.seconds for r in cases), 3),
            )
    return report


def side_by_side_summary(
    results: Mapping[str, Sequence[CaseResult]], unavailable: Mapping[str, str], model: str | None
) -> dict[str, Any]:
    """The JSON object of the last line of a side-by-side run: each agent's summary."""
    agents: dict[str, Any] = {}
    for name in AGENT_NAMES:
        if name in results:
            agents[name] = {k: v for k, v in summary(results[name], name).items() if k != "bench"}
        elif name in unavailable:
            agents[name] = {"agent": name, "unavailable": unavailable[name]}
    return {"bench": "commands", "agents": agents, "model": model}


def print_side_by_side(
    results: Mapping[str, Sequence[CaseResult]], unavailable: Mapping[str, str]
) -> None:
    """The side-by-side table on stdout: success and the median seconds per case.

    A row per category and language, a column per agent; then who answered, and the
    replies that say done while nothing changed.
    """
    names = [name for name in AGENT_NAMES if name in results]
    reports = {name: summary(results[name], name) for name in names}
    print(f"{'':<17}" + "".join(f" {name:>19}" for name in names))

    def cell(tally: Mapping[str, Any] | None) -> str:
        if not tally:
            return "-"
        median = tally.get("median_s")
        timing = "" if median is None else f" {median:7.3f}s"
        return f"{tally['passed']}/{tally['total']}{timing}"

    for category in CATEGORIES:
        if any(category in reports[name]["categories"] for name in names):
            print(
                f"{category:<17}"
                + "".join(f" {cell(reports[n]['categories'].get(category)):>19}" for n in names)
            )
    for language in LANGUAGES:
        if any(language in reports[name]["languages"] for name in names):
            print(
                f"{'all ' + language:<17}"
                + "".join(f" {cell(reports[n]['languages'].get(language)):>19}" for n in names)
            )
    print(f"{'all':<17}" + "".join(f" {cell(reports[n]):>19}" for n in names))
    print(
        f"{'done w/o change':<17}"
        + "".join(f" {reports[n]['done_without_change']:>19}" for n in names)
    )
    for name in names:
        shares = ", ".join(
            f"{who} {100 * share['share']:.0f}%"
            + (
                f" ({share['passed']}/{share['cases']} passed, median {share['median_s']:.3f} s)"
                if "cases" in share
                else ""
            )
            for who, share in reports[name]["answered_by"].items()
        )
        print(f"answered by ({name}): {shares or '-'}")
    for name, reason in unavailable.items():
        print(f"{name}: unavailable: {reason}")


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


def _majordome_options(
    timeout_s: float, local_intents: bool, fast: Server | None = None
) -> dict[str, Any]:
    """A Majordome agent's options on the bench; `fast`: its fast model's server."""
    cascade = {} if fast is None else {CONF_FAST_URL: fast.url, CONF_FAST_MODEL: fast.model}
    return {
        CONF_TEMPERATURE: 0.0,
        CONF_TIMEOUT: max(1, math.ceil(timeout_s)),
        CONF_MEMORY_EVERY: 0,  # no background summaries between cases
        CONF_LOCAL_INTENTS: local_intents,
        **cascade,
    }


def llama_cpp_missing() -> str | None:
    """Why Home Assistant's llama_cpp agent cannot run here; None when it can."""
    if importlib.util.find_spec("homeassistant.components.llama_cpp") is None:
        return f"Home Assistant {HA_VERSION} has no llama_cpp integration (core from 2026.8)"
    return None


async def async_setup_llama_cpp(
    hass: HomeAssistant, url: str, model: str, api_key: str | None
) -> str:
    """Home Assistant's own LLM agent for OpenAI-compatible servers, through its flows.

    Its config flow makes the server and a conversation agent on `model` with the
    Assist API; its agent's reconfigure flow then sets temperature 0, as Majordome's on
    the bench (its other settings stay as recommended). Returns the agent's entity id.
    """
    flows = hass.config_entries.flow
    result = await flows.async_init(LLAMA_CPP, context={"source": SOURCE_USER})
    server = {"base_url": url, **({CONF_API_KEY: api_key} if api_key else {})}
    result = await flows.async_configure(result["flow_id"], server)
    if result["type"] is not FlowResultType.FORM or result["step_id"] != "model":
        raise RuntimeError(f"llama_cpp config flow: server step failed: {result.get('errors')}")
    result = await flows.async_configure(result["flow_id"], {"chat_model": model})
    if result["type"] is not FlowResultType.CREATE_ENTRY:
        raise RuntimeError(f"llama_cpp config flow: model step failed: {result.get('errors')}")
    entry_id = result["result"].entry_id
    await hass.async_block_till_done()
    entry = hass.config_entries.async_get_entry(entry_id)
    assert entry is not None
    [agent] = entry.subentries.values()
    flow = await hass.config_entries.subentries.async_init(
        (entry_id, agent.subentry_type),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": agent.subentry_id},
    )
    # The form the user sees holds the default instructions; the sampling settings
    # show once "recommended" is off (the same form again, before 2026.11).
    wanted = {
        "prompt": llm.DEFAULT_INSTRUCTIONS_PROMPT,
        **agent.data,
        "recommended": False,
        "temperature": 0.0,
    }
    done = flow
    for _ in range(2):
        schema = done.get("data_schema")
        if schema is None:
            raise RuntimeError(f"llama_cpp agent flow: no form: {done}")
        fields = {str(getattr(key, "schema", key)) for key in schema.schema}
        done = await hass.config_entries.subentries.async_configure(
            flow["flow_id"], {key: value for key, value in wanted.items() if key in fields}
        )
        if done["type"] is not FlowResultType.FORM:
            break
    if done.get("reason") != "reconfigure_successful":
        raise RuntimeError(f"llama_cpp agent flow failed: {done}")
    await hass.async_block_till_done()  # the update listener reloads the entry
    return _entity_of(hass, LLAMA_CPP, agent.subentry_id)


def _entity_of(hass: HomeAssistant, platform: str, subentry_id: str) -> str:
    entity_id = er.async_get(hass).async_get_entity_id(conversation.DOMAIN, platform, subentry_id)
    if entity_id is None:
        raise RuntimeError(f"{platform}: no conversation entity for its agent")
    return entity_id


async def async_create_pipelines(
    client: WebsocketClient, agent_id: str, name: str
) -> dict[str, str]:
    """An Assist pipeline per language on the agent, preferring local commands: ids."""
    pipelines = {}
    for language in LANGUAGES:
        created = await client.async_command(
            {
                "type": "assist_pipeline/pipeline/create",
                "name": f"{name} ({language})",
                "language": language,
                "conversation_engine": agent_id,
                "conversation_language": language,
                "prefer_local_intents": True,
                **dict.fromkeys(
                    (
                        "stt_engine",
                        "stt_language",
                        "tts_engine",
                        "tts_language",
                        "tts_voice",
                        "wake_word_entity",
                        "wake_word_id",
                    )
                ),
            }
        )
        pipelines[language] = str(created["id"])
    return pipelines


async def async_setup_agents(
    hass: HomeAssistant,
    devices: Sequence[Device],
    names: Sequence[str],
    *,
    url: str | None,
    model: str | None,
    api_key: str | None,
    timeout_s: float,
    client: WebsocketClient | None,
    fast: Server | None = None,
    llama_cpp_url: str | None = None,
) -> tuple[dict[str, CommandsRunner], dict[str, str]]:
    """Set up the named agents on one server and model: their runners, why others cannot.

    majordome: Majordome with every stage; majordome-nolocal: the same without the local
    stage (a second agent of the same entry); builtin: Home Assistant's agent alone;
    llama_cpp: Home Assistant's LLM agent behind pipelines that prefer local commands
    (`client`: the websocket they run on; `llama_cpp_url`: its way to the server when
    not `url`, e.g. through a proxy). With `fast`, Majordome's agents run the cascade:
    simple requests to that server's model, the rest to `model`.
    """
    if not await async_setup_component(hass, "conversation", {}):
        raise RuntimeError("Home Assistant failed to set up conversation")
    agents: dict[str, tuple[Agent, MajordomeConfigEntry | None]] = {}
    unavailable: dict[str, str] = {}
    if LLAMA_CPP in names and (reason := llama_cpp_missing()) is not None:
        unavailable[LLAMA_CPP] = reason
    if (MODEL_AGENTS.intersection(names) - set(unavailable)) and (url is None or model is None):
        raise ValueError("the model agents need a server URL and a model")
    majordomes = [name for name in names if name in ("majordome", "majordome-nolocal")]
    if majordomes:
        assert url is not None
        assert model is not None
        first, *others = majordomes
        entry = await async_create_entry(
            hass, url, model, _majordome_options(timeout_s, first == "majordome", fast), api_key
        )
        fast_model = fast.model if fast else ""
        agents[first] = (ConverseAgent(hass, entry.entry_id, entry, model, fast_model), entry)
        for name in others:
            subentry_id = await async_add_agent(
                hass, entry.entry_id, name, _majordome_options(timeout_s, name == "majordome", fast)
            )
            agent_id = _entity_of(hass, DOMAIN, subentry_id)
            agents[name] = (ConverseAgent(hass, agent_id, entry, model, fast_model), entry)
    if "builtin" in names:
        agents["builtin"] = (ConverseAgent(hass, conversation.HOME_ASSISTANT_AGENT), None)
    if LLAMA_CPP in names and LLAMA_CPP not in unavailable:
        assert url is not None
        assert model is not None
        if client is None:
            raise ValueError("llama_cpp runs through pipelines: it needs a websocket")
        if not await async_setup_component(hass, "assist_pipeline", {}):
            raise RuntimeError("Home Assistant failed to set up assist_pipeline")
        agent_id = await async_setup_llama_cpp(hass, llama_cpp_url or url, model, api_key)
        pipelines = await async_create_pipelines(client, agent_id, "llama.cpp")
        agents[LLAMA_CPP] = (PipelineAgent(client, pipelines, agent_id, model), None)
    runners = {
        name: CommandsRunner(hass, entry, devices, timeout_s, agent=agent)
        for name in names
        if name in agents
        for agent, entry in [agents[name]]
    }
    return runners, unavailable


async def async_side_by_side(
    cases: Sequence[Case],
    config_dir: Path,
    names: Sequence[str],
    *,
    url: str | None,
    model: str | None,
    api_key: str | None,
    timeout_s: float,
    by_agent: bool = False,
    fast: Server | None = None,
    typed_llama_cpp: bool = True,
) -> dict[str, Any]:
    """Start Home Assistant with the demo house and the agents, run every case on each.

    With `typed_llama_cpp`, llama_cpp reaches the server through a proxy that types its
    untyped tool parameters (`model_proxy.typed_tool_schemas`), which llama.cpp refuses.
    """
    async with running_home_assistant(config_dir) as hass, AsyncExitStack() as stack:
        house = await async_setup_house(hass, HOUSE)
        _report(f"house: {len(house.exposed)} exposed entities in {len(house.areas)} areas")
        client = None
        proxy = None
        if LLAMA_CPP in names and llama_cpp_missing() is None:
            if not await async_setup_component(hass, "websocket_api", {}):
                raise RuntimeError("Home Assistant failed to set up websocket_api")
            session = await stack.enter_async_context(aiohttp.ClientSession())
            client = await stack.enter_async_context(WebsocketClient.async_connect(hass, session))
            if typed_llama_cpp and url is not None:
                proxy = ModelProxy(url, session, rewrite=typed_tool_schemas)
                await proxy.start()
                stack.push_async_callback(proxy.stop)
        runners, unavailable = await async_setup_agents(
            hass, house.devices, names,
            url=url, model=model, api_key=api_key, timeout_s=timeout_s, client=client,
            fast=fast, llama_cpp_url=proxy.url if proxy else None,
        )  # fmt: skip
        for name, reason in unavailable.items():
            _report(f"{name}: unavailable: {reason}")
        for name, runner in runners.items():
            if name in MODEL_AGENTS:
                _report(f"warm-up: {name}")
                await runner.async_warm_up()
        results = await async_run_side_by_side(runners, cases, by_agent=by_agent)
        if proxy is not None:
            _report(
                f"llama_cpp: {proxy.rewritten} of {len(proxy.requests)} requests had their"
                " untyped tool parameters typed as strings"
            )
    print_side_by_side(results, unavailable)
    return side_by_side_summary(results, unavailable, model)


async def async_commands(
    cases: Sequence[Case],
    config_dir: Path,
    *,
    url: str | None,
    model: str | None,
    api_key: str | None,
    timeout_s: float,
    fast: Server | None = None,
) -> dict[str, Any]:
    """Start Home Assistant with the demo house and one agent, run the cases.

    The agent is Majordome on `url`, or with `url=None` Home Assistant's built-in agent.
    """
    async with running_home_assistant(config_dir) as hass:
        house = await async_setup_house(hass, HOUSE)
        _report(f"house: {len(house.exposed)} exposed entities in {len(house.areas)} areas")
        entry = None
        if url is not None and model is not None:
            # The model's score, as published: without the local stage.
            options = _majordome_options(timeout_s, local_intents=False, fast=fast)
            entry = await async_create_entry(hass, url, model, options, api_key=api_key)
        elif not await async_setup_component(hass, "conversation", {}):
            raise RuntimeError("Home Assistant failed to set up conversation")
        agent = None
        if entry is not None:
            assert model is not None
            fast_model = fast.model if fast else ""
            agent = ConverseAgent(hass, entry.entry_id, entry, model, fast_model)
        runner = CommandsRunner(hass, entry, house.devices, timeout_s, agent=agent)
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


def _agent_list(text: str) -> tuple[str, ...]:
    """--agents: names separated by commas (in the table's order), or all."""
    if text.strip() == "all":
        return AGENT_NAMES
    names = {name.strip() for name in text.split(",") if name.strip()}
    if unknown := sorted(names - set(AGENT_NAMES)):
        raise argparse.ArgumentTypeError(
            f"unknown agent(s) {', '.join(unknown)}: choose among {', '.join(AGENT_NAMES)}, or all"
        )
    if not names:
        raise argparse.ArgumentTypeError("no agent")
    return tuple(name for name in AGENT_NAMES if name in names)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, run the suite, print the rows and the JSON line."""
    from devtools.llm import DEFAULT_MODEL_NAME, MODEL_NAMES, LocalLlmServer

    parser = argparse.ArgumentParser(
        prog="scripts/bench commands",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--suite", type=Path, default=DEFAULT_SUITE, help="YAML suite file")
    parser.add_argument("--language", choices=LANGUAGES, help="only the cases in this language")
    parser.add_argument(
        "--every",
        type=int,
        default=1,
        help="every Nth case only (after --language): a sample across categories and languages",
    )
    parser.add_argument("--limit", type=int, help="only the first N cases (after --every)")
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
    parser.add_argument(
        "--agents",
        type=_agent_list,
        help="side by side in one run, each case on each: a comma-separated list of"
        f" {', '.join(AGENT_NAMES)}, or all",
    )
    parser.add_argument(
        "--order",
        choices=("case", "agent"),
        default="case",
        help="with --agents: each case on each agent in turn (default), or every case on one"
        " agent, then the next (a one-slot server keeps each agent's prompt cached)",
    )
    parser.add_argument("--url", help="an OpenAI-compatible server instead of the embedded model")
    parser.add_argument("--model", help="with --url: the model (default: the first listed)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY"),
        help="with --url: the key, if the server needs one (default: $OPENAI_API_KEY)",
    )
    parser.add_argument("--ctx", type=int, default=8192, help="embedded server context size")
    parser.add_argument(
        "--main-model",
        choices=MODEL_NAMES,
        default=DEFAULT_MODEL_NAME,
        help="the embedded main model; another than 0.5b runs Majordome's cascade with the"
        " embedded 0.5b as its fast model (Home Assistant's llama_cpp gets the main model)",
    )
    parser.add_argument(
        "--llama-cpp-schemas",
        choices=("typed", "as-sent"),
        default="typed",
        help="llama_cpp's tool parameters: typed by a proxy where it leaves them untyped"
        " (default; llama.cpp refuses untyped ones), or as Home Assistant sends them",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    if args.every < 1:
        parser.error("--every must be >= 1")
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")
    if args.model and not args.url:
        parser.error("--model needs --url (the embedded server has one model)")
    if args.url and args.main_model != DEFAULT_MODEL_NAME:
        parser.error("--main-model is for the embedded servers, not --url")
    if args.agents and args.agent != "majordome":
        parser.error("--agents or --agent, not both")
    if args.order != "case" and not args.agents:
        parser.error("--order is for --agents")
    names = args.agents or (args.agent,)
    # llama_cpp, where the release has none, is only reported: it needs no server.
    missing = {LLAMA_CPP} if llama_cpp_missing() is not None else set()
    uses_model = bool(MODEL_AGENTS.intersection(names) - missing)
    if args.url and not uses_model:
        parser.error("--url is for the agents with a model (the built-in agent uses no model)")
    try:
        cases = load_suite(args.suite)
    except SuiteError as err:
        parser.error(str(err))
    cases = select_cases(cases, args.language, args.every, args.limit)
    if not cases:
        parser.error("no case to run")

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    started = time.monotonic()

    def run(
        url: str | None, model: str | None, api_key: str | None, fast: Server | None = None
    ) -> dict[str, Any]:
        if args.agents:
            return run_in_temp_dir(
                "commands",
                lambda tmp: async_side_by_side(
                    cases,
                    tmp,
                    args.agents,
                    url=url,
                    model=model,
                    api_key=api_key,
                    timeout_s=args.timeout,
                    by_agent=args.order == "agent",
                    fast=fast,
                    typed_llama_cpp=args.llama_cpp_schemas == "typed",
                ),
            )
        return run_in_temp_dir(
            "commands",
            lambda tmp: async_commands(
                cases, tmp, url=url, model=model, api_key=api_key, timeout_s=args.timeout, fast=fast
            ),
        )

    if not uses_model:
        _report("no model: Home Assistant's built-in agent")
        result = run(None, None, None)
    elif args.url:
        model = args.model or asyncio.run(async_first_model(args.url, args.api_key))
        _report(f"server: {model} at {args.url}")
        result = run(args.url, model, args.api_key)
    else:
        wait_for_other_llm_servers()
        with ExitStack() as servers:
            server = servers.enter_context(LocalLlmServer(ctx=args.ctx, model_name=args.main_model))
            _report(f"LLM server: {server.model} at {server.base_url}, n_ctx {args.ctx}")
            fast = None
            if args.main_model != DEFAULT_MODEL_NAME:
                fast_server = servers.enter_context(LocalLlmServer(ctx=args.ctx))
                fast = Server(fast_server.base_url, fast_server.model)
                _report(f"fast model: {fast.model} at {fast.url}")
            result = run(server.base_url, server.model, None, fast)
    _report(f"wall time: {time.monotonic() - started:.1f} s")
    print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
