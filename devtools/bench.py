"""Benchmarks of Majordome on a real Home Assistant core.

    scripts/bench overhead [--turns 50] [--warmup 5] [--extra-areas 13]
    scripts/bench prompt-cache [--commands 12] [--ctx 8192] [--max-tokens 96]
    scripts/bench voice [--runs 5] [--ttft 0.3] [--token-delay 0.065] [--no-embedded]
    scripts/bench faults [--only CLASS,...]

`overhead`: time spent inside Majordome and Home Assistant per turn (total turn time
minus the time waiting on the server), with a scripted server that answers at once
and a house of >= 200 exposed entities.

`prompt-cache`: the real embedded llama.cpp server, the same household commands sent
(a) through Majordome and (b) laid out as Home Assistant lays out its own prompt on the
release it runs on (2025.4 opens it with the time; 2025.11+ keeps it stable and offers a
GetDateTime tool), with Assist's tools. Reports prompt reuse, time to first token and
how often the first completion called the right tool on the right target.

Progress goes to stderr and the table to stdout; the last line of stdout is a JSON
object with the result.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
import json
import logging
from pathlib import Path
import statistics
import sys
import time
from typing import Any

import openai

from custom_components.majordome import compat, prompt as majordome_prompt, tools as majordome_tools
from custom_components.majordome.backend import StreamStats, async_stream_completion
from custom_components.majordome.const import (
    CONF_LOCAL_INTENTS,
    CONF_MAX_TOKENS,
    CONF_MEMORY_EVERY,
    CONF_TEMPERATURE,
    CONF_TIMEOUT,
    DOMAIN,
)
from custom_components.majordome.memory import Onboarding
from custom_components.majordome.models import MajordomeConfigEntry, TurnTrace
from devtools import bench_commands, bench_faults, bench_gate, bench_voice, house as house_module
from devtools.bench_common import (
    async_create_entry,
    percentile,
    print_summary,
    progress,
    run_in_temp_dir,
    wait_for_other_llm_servers,
)
from devtools.hass_runner import running_home_assistant
from devtools.house import ASSISTANT, Device, async_setup_house
from devtools.llm import LocalLlmServer
from devtools.scripted_server import ScriptedServer, text, tool_calls
from homeassistant.components import conversation
from homeassistant.components.conversation.chat_log import DATA_CHAT_LOGS, ChatLog
from homeassistant.components.homeassistant.exposed_entities import (
    async_expose_entity,
    async_should_expose,
)
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import area_registry as ar, entity_registry as er, llm
from homeassistant.setup import async_setup_component
from homeassistant.util import ulid as ulid_util

LOG = logging.getLogger("devtools.bench")


# --- Setup shared by both benchmarks ------------------------------------------------


def exposed_entity_ids(hass: HomeAssistant) -> list[str]:
    """Entities exposed to Assist, as Assist sees them."""
    registry = er.async_get(hass)
    return sorted(
        entity_id
        for entity_id in registry.entities
        if async_should_expose(hass, ASSISTANT, entity_id)
    )


def last_turn(entry: MajordomeConfigEntry) -> TurnTrace:
    """The trace of the entry's last turn."""
    trace = entry.runtime_data.last_turn
    if trace is None:
        raise RuntimeError("Majordome recorded no turn")
    return trace


# --- A bigger house: the bench house plus generated areas ---------------------------

EXTRA_AREA_NAMES = (
    "Dining Room", "Attic", "Basement", "Laundry", "Kids Room", "Library",
    "Patio", "Cellar", "Gym", "Studio", "Pantry", "Nursery", "Workshop",
    "Veranda", "Game Room", "Sauna",
)  # fmt: skip

# (suffix, domain, initial, device_class)
EXTRA_ROLES: tuple[tuple[str, house_module.Domain, float | bool, str | None], ...] = (
    ("Ceiling Light", "light", False, None),
    ("Lamp", "light", True, None),
    ("Wall Light", "light", False, None),
    ("Spotlights", "light", False, None),
    ("Plug", "switch", False, None),
    ("Heater", "switch", False, None),
    ("Fan", "switch", False, None),
    ("Speaker Plug", "switch", True, None),
    ("Dehumidifier", "switch", False, None),
    ("Temperature", "sensor", 20.5, "temperature"),
    ("Humidity", "sensor", 45, "humidity"),
)


def extra_devices(areas: int) -> tuple[Device, ...]:
    """Generated devices: every role in each of the first `areas` extra areas."""
    if areas > len(EXTRA_AREA_NAMES):
        raise ValueError(f"at most {len(EXTRA_AREA_NAMES)} extra areas")
    return tuple(
        Device(domain, f"{area} {suffix}", area, initial, device_class=device_class)
        for area in EXTRA_AREA_NAMES[:areas]
        for suffix, domain, initial, device_class in EXTRA_ROLES
    )


def extra_config(devices: Sequence[Device]) -> dict[str, Any]:
    """YAML (as a dict) for the generated devices, shaped like house.house_config's."""
    booleans: dict[str, Any] = {}
    numbers: dict[str, Any] = {}
    template: dict[str, list[dict[str, Any]]] = {"light": [], "switch": [], "sensor": []}
    for dev in devices:
        oid = dev.object_id
        helper = {"name": f"{dev.name} (state)"}
        if dev.domain in ("light", "switch"):
            booleans[oid] = {**helper, "initial": bool(dev.initial)}
            template[dev.domain].append(
                {
                    "name": dev.name,
                    "unique_id": f"majordome_bench_{oid}",
                    "state": f"{{{{ is_state('input_boolean.{oid}', 'on') }}}}",
                    "turn_on": {
                        "action": "input_boolean.turn_on",
                        "target": {"entity_id": f"input_boolean.{oid}"},
                    },
                    "turn_off": {
                        "action": "input_boolean.turn_off",
                        "target": {"entity_id": f"input_boolean.{oid}"},
                    },
                }
            )
        elif dev.domain == "sensor":
            numbers[oid] = {**helper, "min": -50, "max": 100, "step": 0.5, "initial": dev.initial}
            template["sensor"].append(
                {
                    "name": dev.name,
                    "unique_id": f"majordome_bench_{oid}",
                    "state": f"{{{{ states('input_number.{oid}') | float(0) }}}}",
                    "unit_of_measurement": "°C" if dev.device_class == "temperature" else "%",
                    "device_class": dev.device_class,
                    "state_class": "measurement",
                }
            )
        else:
            raise ValueError(f"extra devices do not support {dev.domain}")
    return {"input_boolean": booleans, "input_number": numbers, "template": template}


async def async_setup_big_house(hass: HomeAssistant, areas: int) -> int:
    """Set up the bench house plus generated areas; return the exposed entity count.

    The helper and template integrations are set up first with the bench house's
    configuration merged with the generated one; async_setup_house then finds them
    set up and only adds the bench house's areas and exposure.
    """
    devices = extra_devices(areas)
    config = house_module.house_config("bench")
    extra = extra_config(devices)
    merged = {
        "input_boolean": {**config["input_boolean"], **extra["input_boolean"]},
        "input_number": {**config["input_number"], **extra["input_number"]},
        "template": [*config["template"], {k: v for k, v in extra["template"].items() if v}],
    }
    for domain in ("input_boolean", "input_number", "template"):
        if not await async_setup_component(hass, domain, merged):
            raise RuntimeError(f"big house: setup of {domain} failed")
    await hass.async_block_till_done()
    await async_setup_house(hass, "bench")

    area_reg = ar.async_get(hass)
    entity_reg = er.async_get(hass)
    area_ids = {
        name: (area_reg.async_get_area_by_name(name) or area_reg.async_create(name)).id
        for name in EXTRA_AREA_NAMES[:areas]
    }
    for dev in devices:
        if entity_reg.async_get(dev.entity_id) is None:
            raise RuntimeError(f"big house: {dev.entity_id} is missing from the registry")
        entity_reg.async_update_entity(dev.entity_id, area_id=area_ids[dev.area])
        async_expose_entity(hass, ASSISTANT, dev.entity_id, True)
    for domain in ("input_boolean", "input_number"):
        for object_id in extra[domain]:
            async_expose_entity(hass, ASSISTANT, f"{domain}.{object_id}", False)
    await hass.async_block_till_done()
    return len(exposed_entity_ids(hass))


# --- overhead -----------------------------------------------------------------------


async def async_overhead(args: argparse.Namespace, config_dir: Path) -> dict[str, Any]:
    """Per-turn time inside Majordome with a server that answers at once."""
    server = ScriptedServer(models=["scripted-model"])
    await server.start()
    try:
        async with running_home_assistant(config_dir) as hass:
            entities = await async_setup_big_house(hass, args.extra_areas)
            progress(f"house: {entities} exposed entities")
            # No background memory summaries: they would take scripted replies.
            entry = await async_create_entry(
                hass,
                server.url,
                "scripted-model",
                # Every turn goes to the model: that is the path measured.
                {CONF_MEMORY_EVERY: 0, CONF_LOCAL_INTENTS: False},
            )
            overheads: list[float] = []
            prepares: list[float] = []
            acting_overheads: list[float] = []  # tool-call turns: two completions, one intent
            text_overheads: list[float] = []  # text-only turns
            total = args.warmup + args.turns
            for index in range(total):
                acting = index % 2 == 1
                if acting:
                    intent_name = "HassTurnOn" if index % 4 == 1 else "HassTurnOff"
                    server.add(tool_calls((intent_name, {"name": "Kitchen Light"})), text("Done."))
                else:
                    server.add(text("Hello, ", "how can I help?"))
                result = await conversation.async_converse(
                    hass, "turn on the kitchen light" if acting else "hello", None, Context(),
                    language="en", agent_id=entry.entry_id,
                )  # fmt: skip
                trace = last_turn(entry)
                expected_calls = 2 if acting else 1
                if trace.error or len(trace.completions) != expected_calls:
                    raise RuntimeError(
                        f"turn {index} failed: error={trace.error}, "
                        f"{len(trace.completions)} completion(s), {result.response.speech}"
                    )
                if acting:
                    state = hass.states.get("light.kitchen_light")
                    want = "on" if intent_name == "HassTurnOn" else "off"
                    if state is None or state.state != want:
                        raise RuntimeError(f"turn {index}: kitchen light is {state}, not {want}")
                if index >= args.warmup:
                    overheads.append(trace.overhead_s)
                    prepares.append(trace.prepare_s)
                    (acting_overheads if acting else text_overheads).append(trace.overhead_s)
            if server.replies:
                raise RuntimeError(f"{len(server.replies)} scripted replies left unused")
    finally:
        await server.stop()

    median_ms = statistics.median(overheads) * 1000
    p95_ms = percentile(overheads, 0.95) * 1000
    print(
        f"overhead over {len(overheads)} turns ({args.warmup} warm-up turns not counted), "
        f"{entities} exposed entities: median {median_ms:.2f} ms, p95 {p95_ms:.2f} ms, "
        f"max {max(overheads) * 1000:.2f} ms; of which building tools+prompt "
        f"(prepare_s): median {statistics.median(prepares) * 1000:.2f} ms"
    )
    for kind, values in (("text turns", text_overheads), ("tool turns", acting_overheads)):
        if values:
            print(f"  {kind}: median {statistics.median(values) * 1000:.2f} ms ({len(values)})")
    return {
        "bench": "overhead",
        "median_ms": round(median_ms, 3),
        "p95_ms": round(p95_ms, 3),
        "turns": len(overheads),
        "entities": entities,
    }


# --- prompt-cache -------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A household command and what a right first tool call looks like."""

    text: str
    tools: frozenset[str]
    entity_id: str  # the target, for the report
    names: frozenset[str] = frozenset()  # accepted `name` values (lowercase)
    area: str = ""  # or accepted by area (+ domain) when set
    area_domain: str = ""

    def accepts(self, calls: Sequence[tuple[str, dict[str, Any]]]) -> bool:
        """Whether one of the calls is the right tool on the right target."""
        return any(self._accepts(name, args) for name, args in calls)

    def _accepts(self, tool: str, args: dict[str, Any]) -> bool:
        if compat.base_tool_name(tool) not in self.tools:  # intent__HassTurnOn on 2026.9+
            return False
        name = args.get("name")
        if isinstance(name, str) and name.strip().lower() in self.names:
            return True
        if not self.area:
            return False
        area = args.get("area")
        domain = args.get("domain")
        domains = domain if isinstance(domain, list) else [domain]
        return (
            isinstance(area, str)
            and area.strip().lower() == self.area.lower()
            and (not self.area_domain or self.area_domain in domains)
        )


def _device(entity_id: str) -> Device:
    _, devices = house_module.house_devices("bench")
    for dev in devices:
        if dev.entity_id == entity_id:
            return dev
    raise KeyError(entity_id)


def command(sentence: str, tool: str, entity_id: str) -> Command:
    """A command on one entity of the bench house, matched by its name."""
    dev = _device(entity_id)  # fails early on a name that is not in the house
    return Command(sentence, frozenset({tool}), entity_id, names=frozenset({dev.name.lower()}))


# Entities of the bench house (house.py); the initial states make every command a change.
COMMANDS: tuple[Command, ...] = (
    command("turn on the kitchen light", "HassTurnOn", "light.kitchen_light"),
    command("turn off the hallway lamp", "HassTurnOff", "light.hallway_lamp"),
    command("close the bedroom blinds", "HassTurnOff", "cover.bedroom_blinds"),
    command("turn on the kitchen plug", "HassTurnOn", "switch.kitchen_plug"),
    command("turn on the bedroom ceiling light", "HassTurnOn", "light.bedroom_ceiling_light"),
    command("turn off the kitchen lamp", "HassTurnOff", "light.kitchen_lamp"),
    command("turn on the hallway heater", "HassTurnOn", "switch.hallway_heater"),
    command("set the kitchen light brightness to 50%", "HassLightSet", "light.kitchen_light"),
    command("close the kitchen blinds", "HassTurnOff", "cover.kitchen_blinds"),
    command("turn on the hallway ceiling light", "HassTurnOn", "light.hallway_ceiling_light"),
    command("turn on the bedroom plug", "HassTurnOn", "switch.bedroom_plug"),
    command("turn on the bedroom lamp", "HassTurnOn", "light.bedroom_lamp"),
    command("turn off the lampe du salon", "HassTurnOff", "light.lampe_du_salon"),
    command("turn on the hallway plug", "HassTurnOn", "switch.hallway_plug"),
    command("close the hallway blinds", "HassTurnOff", "cover.hallway_blinds"),
)

CONVERSATION_LENGTH = 3  # commands per conversation, so the history stays short

HOUSEHOLD = "Alice (34) and Bob (36) live here with their cat Miso. Bob works nights."
FACT = "Alice likes the living room warm in the evening."
INTERESTS = "Into jazz lately; the kitchen is being repainted."


@dataclass
class TurnResult:
    """One command in one layout."""

    layout: str
    command: Command
    first: StreamStats
    calls: list[tuple[str, dict[str, Any]]]
    reply: str = ""
    error: str | None = None

    @property
    def passed(self) -> bool:
        """Whether the first completion called the right tool on the right target."""
        return self.command.accepts(self.calls)


@dataclass
class OurRun:
    """Our turns and, per command, the history that preceded it (for layout b)."""

    turns: list[TurnResult] = field(default_factory=list)
    histories: list[list[dict[str, Any]]] = field(default_factory=list)


class StateKeeper:
    """Put the house's helpers and thermostats back as they were."""

    def __init__(self, hass: HomeAssistant) -> None:
        """Remember the current states."""
        self.hass = hass
        self.saved = {
            state.entity_id: state
            for state in hass.states.async_all(["input_boolean", "input_number", "climate"])
        }

    async def async_restore(self) -> list[str]:
        """Restore what changed; return the entity ids restored."""
        restored = []
        for entity_id, old in self.saved.items():
            new = self.hass.states.get(entity_id)
            if new is None or (new.state == old.state and new.attributes == old.attributes):
                continue
            restored.append(entity_id)
            domain = entity_id.split(".")[0]
            target = {"entity_id": entity_id}
            if domain == "input_boolean":
                service = "turn_on" if old.state == "on" else "turn_off"
                await self.hass.services.async_call(domain, service, target, blocking=True)
            elif domain == "input_number":
                await self.hass.services.async_call(
                    domain, "set_value", {**target, "value": float(old.state)}, blocking=True
                )
            else:
                await self.hass.services.async_call(
                    domain, "set_hvac_mode", {**target, "hvac_mode": old.state}, blocking=True
                )
                await self.hass.services.async_call(
                    domain,
                    "set_temperature",
                    {**target, "temperature": old.attributes.get("temperature")},
                    blocking=True,
                )
        await self.hass.async_block_till_done()
        return restored


def _first_completion(
    chat_log_content: list[conversation.Content], user_index: int
) -> conversation.AssistantContent | None:
    for content in chat_log_content[user_index + 1 :]:
        if isinstance(content, conversation.AssistantContent):
            return content
    return None


async def async_run_ours(
    hass: HomeAssistant, entry: MajordomeConfigEntry, commands: Sequence[Command], pause_s: float
) -> OurRun:
    """Layout (a): the commands as turns through Majordome, 3 per conversation."""
    run = OurRun()
    keeper = StateKeeper(hass)
    conversation_id: str | None = None
    for index, cmd in enumerate(commands):
        if index % CONVERSATION_LENGTH == 0:
            conversation_id = None
        await asyncio.sleep(pause_s)
        history: list[dict[str, Any]] = []
        if conversation_id is not None:
            history = [
                majordome_prompt.to_message(c)
                for c in hass.data[DATA_CHAT_LOGS][conversation_id].content[1:]
            ]
        result = await conversation.async_converse(
            hass, cmd.text, conversation_id, Context(), language="en", agent_id=entry.entry_id
        )
        conversation_id = result.conversation_id
        trace = last_turn(entry)
        content = hass.data.get(DATA_CHAT_LOGS, {}).get(conversation_id or "")
        calls: list[tuple[str, dict[str, Any]]] = []
        if content is not None:
            log = content.content
            user_index = max(
                (i for i, c in enumerate(log) if c.role == "user" and c.content == cmd.text),
                default=-1,
            )
            first = _first_completion(log, user_index) if user_index >= 0 else None
            if first is not None and first.tool_calls:
                calls = [(call.tool_name, dict(call.tool_args)) for call in first.tool_calls]
        speech = result.response.speech.get("plain", {}).get("speech", "")
        turn = TurnResult(
            "ours",
            cmd,
            trace.completions[0] if trace.completions else StreamStats(),
            calls,
            reply=str(speech),
            error=trace.error,
        )
        run.turns.append(turn)
        run.histories.append(history)
        print_turn(turn)
        restored = await keeper.async_restore()
        if restored:
            LOG.debug("restored %s", restored)
    return run


async def async_run_ha_layout(
    hass: HomeAssistant,
    *,
    client: openai.AsyncOpenAI,
    model: str,
    commands: Sequence[Command],
    histories: Sequence[list[dict[str, Any]]],
    max_tokens: int,
    pause_s: float,
) -> list[TurnResult]:
    """Layout (b): Home Assistant's own system prompt and Assist's tools, not executed."""
    turns: list[TurnResult] = []
    conversation_id = ulid_util.ulid_now()
    for index, cmd in enumerate(commands):
        if index % CONVERSATION_LENGTH == 0:
            conversation_id = ulid_util.ulid_now()
        await asyncio.sleep(pause_s)
        chat_log = ChatLog(hass, conversation_id)
        user_input = compat.conversation_input(
            text=cmd.text,
            context=Context(),
            conversation_id=conversation_id,
            device_id=None,
            language="en",
            agent_id="majordome-bench-ha-layout",
        )
        await compat.async_provide_llm_data(chat_log, user_input, DOMAIN, llm.LLM_API_ASSIST)
        system = chat_log.content[0]
        assert chat_log.llm_api is not None
        assert isinstance(system, conversation.SystemContent)
        messages = [
            {"role": "system", "content": system.content},
            *histories[index],
            {"role": "user", "content": cmd.text},
        ]
        stats = StreamStats()
        calls: list[tuple[str, dict[str, Any]]] = []
        reply: list[str] = []
        error = None
        try:
            async for delta in async_stream_completion(
                client,
                model=model,
                messages=messages,
                tools=majordome_tools.format_tools(chat_log.llm_api, as_shown=False),
                temperature=0.0,
                max_tokens=max_tokens,
                extra_body={"cache_prompt": True},
                stats=stats,
            ):
                if "content" in delta:
                    reply.append(delta["content"] or "")
                for call in delta.get("tool_calls") or []:
                    calls.append((call.tool_name, dict(call.tool_args)))
        except Exception as err:  # noqa: BLE001 - reported as a failed command
            error = str(err)
        turn = TurnResult("ha-layout", cmd, stats, calls, reply="".join(reply), error=error)
        turns.append(turn)
        print_turn(turn)
    return turns


def print_turn(turn: TurnResult) -> None:
    """One row of the table."""
    ttft = f"{turn.first.first_token_s:7.2f}" if turn.first.first_token_s is not None else "    n/a"
    calls = ", ".join(f"{name}{json.dumps(args, ensure_ascii=False)}" for name, args in turn.calls)
    detail = calls or f"text: {turn.reply[:60]!r}"
    if turn.error:
        detail += f" [error: {turn.error[:80]}]"
    print(
        f"{turn.layout:<10} {turn.command.text:<42} {ttft} {turn.first.cache_n or 0:>7} "
        f"{turn.first.prompt_n or 0:>8} {'PASS' if turn.passed else 'fail':<6} {detail}",
        flush=True,
    )


async def async_prompt_cache(
    args: argparse.Namespace, config_dir: Path, server: LocalLlmServer
) -> dict[str, Any]:
    """Run both layouts on the same commands; return the summary."""
    commands = COMMANDS[: args.commands]
    async with running_home_assistant(config_dir) as hass:
        bench_house = await async_setup_house(hass, "bench")
        progress(f"house: {len(bench_house.exposed)} exposed entities")
        entry = await async_create_entry(
            hass,
            server.base_url,
            server.model,
            {
                CONF_TEMPERATURE: 0.0,
                CONF_MAX_TOKENS: args.max_tokens,
                CONF_TIMEOUT: 600,
                # A background memory summary would take the server's only slot
                # (and its cache) in the middle of the measured turns.
                CONF_MEMORY_EVERY: 0,
                CONF_LOCAL_INTENTS: False,  # the model's prompt is what is measured
            },
        )
        # Memory is in every prompt, as at home: it sits at the end of the system
        # prompt, and the prefix must survive the turns between two memory updates.
        entry.runtime_data.memory.update(profile=HOUSEHOLD, onboarding=Onboarding.DONE)
        entry.runtime_data.memory.remember(FACT)
        keeper = StateKeeper(hass)
        header = (
            f"{'layout':<10} {'command':<42} {'ttft_s':>7} {'cache_n':>7} {'prompt_n':>8} "
            f"{'result':<6} first completion"
        )
        print(header)
        started = time.monotonic()
        ours = await async_run_ours(hass, entry, commands, args.pause)
        progress(f"ours: {time.monotonic() - started:.0f} s")
        await keeper.async_restore()
        # The turn after a memory update pays for what follows the memory (the tools,
        # which chat templates put after the system text): measured once, apart.
        entry.runtime_data.memory.update(dynamic=INTERESTS)
        after_update = await async_run_ours(hass, entry, commands[:1], args.pause)
        await keeper.async_restore()
        client = openai.AsyncOpenAI(
            base_url=server.base_url, api_key="no-key", timeout=600, max_retries=0
        )
        started = time.monotonic()
        theirs = await async_run_ha_layout(
            hass,
            client=client,
            model=server.model,
            commands=commands,
            histories=ours.histories,
            max_tokens=args.max_tokens,
            pause_s=args.pause,
        )
        progress(f"HA layout: {time.monotonic() - started:.0f} s")
        await client.close()

    later = ours.turns[1:]
    cache_n = sum(t.first.cache_n or 0 for t in later)
    prompt_n = sum(t.first.prompt_n or 0 for t in later)
    ttft_ours = _median_ttft(ours.turns[1:])
    ttft_ha = _median_ttft(theirs[1:])
    # Apart: the first turn of a later conversation (only the system prompt and tools to
    # reuse) and the follow-ups (the history too).
    opening = [i for i in range(1, len(commands)) if i % CONVERSATION_LENGTH == 0]
    follow_ups = [i for i in range(1, len(commands)) if i % CONVERSATION_LENGTH]
    for layout, turns in (("ours", ours.turns), ("ha-layout", theirs)):
        failed = [t.command.text for t in turns if not t.passed]
        print(f"{layout}: {len(turns) - len(failed)}/{len(turns)} passed; failed: {failed}")
    changed = after_update.turns[0].first
    return {
        "bench": "prompt-cache",
        "reuse": round(cache_n / (cache_n + prompt_n), 3) if cache_n + prompt_n else 0.0,
        "ttft_ours_s": round(ttft_ours, 3),
        "ttft_ha_layout_s": round(ttft_ha, 3),
        "speedup": round(ttft_ha / ttft_ours, 3) if ttft_ours else 0.0,
        **{
            f"ttft_{kind}_{layout}_s": round(_median_ttft([turns[i] for i in indices]), 3)
            for kind, indices in (("new_conversation", opening), ("follow_up", follow_ups))
            for layout, turns in (("ours", ours.turns), ("ha_layout", theirs))
        },
        "passed_ours": sum(t.passed for t in ours.turns),
        "passed_ha_layout": sum(t.passed for t in theirs),
        "commands": len(commands),
        "memory_chars": len(HOUSEHOLD) + len(FACT),
        "reuse_after_memory_update": round(
            (changed.cache_n or 0) / ((changed.cache_n or 0) + (changed.prompt_n or 0) or 1), 3
        ),
    }


def _median_ttft(turns: Sequence[TurnResult]) -> float:
    """Median time to first token of the turns that produced one (0 when none did)."""
    values = [t.first.first_token_s for t in turns if t.first.first_token_s is not None]
    return statistics.median(values) if values else 0.0


# --- Command line -------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run one benchmark."""
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="bench", required=True)
    overhead = sub.add_parser("overhead", help="time inside Majordome per turn")
    overhead.add_argument("--turns", type=int, default=50, help="measured turns (default 50)")
    overhead.add_argument("--warmup", type=int, default=5, help="turns not counted (default 5)")
    overhead.add_argument(
        "--extra-areas",
        type=int,
        default=13,
        help=f"generated areas of {len(EXTRA_ROLES)} devices added to the bench house",
    )
    cache = sub.add_parser("prompt-cache", help="prompt reuse and TTFT on the real model")
    cache.add_argument(
        "--commands", type=int, default=12, help=f"commands to send (<= {len(COMMANDS)})"
    )
    cache.add_argument("--ctx", type=int, default=8192, help="server context size")
    cache.add_argument("--max-tokens", type=int, default=96)
    cache.add_argument("--pause", type=float, default=1.1, help="seconds between calls")
    sub.add_parser(
        "gate",
        help="stage-1 screening over a corpus (--corpus FILE, --scripts Latin,...)",
        add_help=False,
    )
    sub.add_parser(
        "voice",
        help="end of speech -> first audio, HA's pipeline vs the streaming endpoint",
        add_help=False,
    )
    sub.add_parser(
        "commands",
        help="household requests on the demo house, judged by the states they leave",
        add_help=False,
    )
    sub.add_parser(
        "faults",
        help="every class of fault on a real Home Assistant: exceptions, stalls, lost, unanswered",
        add_help=False,
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    # These have their own options.
    if argv[:1] == ["commands"]:
        return bench_commands.main(argv[1:])
    if argv[:1] == ["gate"]:
        return bench_gate.main(argv[1:])
    if argv[:1] == ["voice"]:
        return bench_voice.main(argv[1:])
    if argv[:1] == ["faults"]:
        return bench_faults.main(argv[1:])
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    started = time.monotonic()
    if args.bench == "overhead":
        if args.turns < 1:
            parser.error("--turns must be >= 1")
        summary = run_in_temp_dir("overhead", lambda tmp: async_overhead(args, tmp))
    else:
        if not 2 <= args.commands <= len(COMMANDS):
            parser.error(f"--commands must be between 2 and {len(COMMANDS)}")
        wait_for_other_llm_servers()
        with LocalLlmServer(ctx=args.ctx) as server:
            progress(f"LLM server: {server.model} at {server.base_url}, n_ctx {args.ctx}")
            summary = run_in_temp_dir(
                "prompt-cache", lambda tmp: async_prompt_cache(args, tmp, server)
            )
    progress(f"wall time: {time.monotonic() - started:.1f} s")
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
