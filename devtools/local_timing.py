"""How long a command Home Assistant's own sentences answer takes, end to end, per language.

    python -m devtools.local_timing [--turns N]         (scripts/newest python -m ... too)

A real Home Assistant core (this venv's release) with the demo house; a Majordome entry
made through its config flow, on a scripted OpenAI-compatible server that must never be
asked. Each turn is `conversation.async_converse` of a command the local stage handles
(turning a light on, then off), in a new conversation. Prints the median time of the
whole turn and of the local stage alone (Majordome's trace), per language; the last line
is JSON. A figure, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path
import statistics
import sys
import tempfile
import time
from typing import Any

from devtools.bench_common import async_create_entry
from devtools.hass_runner import running_home_assistant
from devtools.house import async_setup_house
from devtools.scripted_server import ScriptedServer
from homeassistant.components import conversation
from homeassistant.const import __version__ as HA_VERSION
from homeassistant.core import Context

MODEL = "scripted-model"
# (language, command that turns the light on, command that turns it off, the light)
COMMANDS = {
    "en": ("turn on the kitchen light", "turn off the kitchen light", "light.kitchen_light"),
    "fr": (
        "allume le plafonnier de la chambre d'amis",
        "éteins le plafonnier de la chambre d'amis",
        "light.plafonnier_de_la_chambre_d_amis",
    ),
}


async def _async_measure(config_dir: Path, turns: int) -> dict[str, Any]:
    server = ScriptedServer(models=[MODEL])
    await server.start()
    figures: dict[str, Any] = {}
    try:
        async with running_home_assistant(config_dir) as hass:
            await async_setup_house(hass, "demo")
            entry = await async_create_entry(hass, server.url, MODEL)
            for language, (turn_on, turn_off, light) in COMMANDS.items():
                totals: list[float] = []
                stages: list[float] = []
                for turn in range(turns + 1):  # the first one loads the sentences: not counted
                    command = turn_off if turn % 2 else turn_on
                    started = time.perf_counter()
                    await conversation.async_converse(
                        hass, command, None, Context(), language, entry.entry_id
                    )
                    elapsed = time.perf_counter() - started
                    trace = entry.runtime_data.last_turn
                    state = hass.states.get(light)
                    expected = "off" if turn % 2 else "on"
                    if trace is None or trace.local != "handled" or state is None:
                        raise RuntimeError(f"{command!r} was not handled locally: {trace}")
                    if state.state != expected:
                        raise RuntimeError(f"{command!r} left {light} {state.state}")
                    if turn:
                        totals.append(elapsed * 1000)
                        stages.append(trace.local_s * 1000)
                figures[language] = {
                    "median_turn_ms": round(statistics.median(totals), 2),
                    "median_local_stage_ms": round(statistics.median(stages), 2),
                    "turns": turns,
                }
    finally:
        await server.stop()
    return {
        "ha_version": HA_VERSION,
        "model_requests": len(server.chat_requests),
        **figures,
    }


def main() -> int:
    """Measure in a throwaway config dir; print the figures, the last line as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40, help="turns per language (default 40)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="majordome-local-") as tmp:
        result = asyncio.run(_async_measure(Path(tmp), args.turns))
    for language in COMMANDS:
        print(
            f"{language}: median {result[language]['median_turn_ms']} ms a turn "
            f"({result[language]['median_local_stage_ms']} ms in the local stage), "
            f"Home Assistant {result['ha_version']}"
        )
    print(json.dumps({"timing": "local", **result}))
    return 0 if result["model_requests"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
