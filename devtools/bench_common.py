"""What the benchmarks share: setup through Home Assistant's flows, and their last line.

Every benchmark (devtools/bench.py, bench_commands.py, bench_voice.py, bench_gate.py)
imports from here, and none from another: devtools/bench.py only dispatches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import time
from typing import Any

from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import DOMAIN, HOUSEHOLD_OPTIONS, SUBENTRY_AGENT
from custom_components.majordome.models import MajordomeConfigEntry, default_agent
from homeassistant.config_entries import SOURCE_RECONFIGURE, SOURCE_USER
from homeassistant.const import (
    CONF_API_KEY,
    CONF_MODEL,
    CONF_NAME,
    CONF_URL,
    __version__ as HA_VERSION,
)
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType


def print_summary(summary: dict[str, Any]) -> None:
    """The benchmark's last line: its JSON summary, naming the Home Assistant it ran on."""
    print(json.dumps({**summary, "ha_version": HA_VERSION}), flush=True)


def progress(message: str) -> None:
    """Print a progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of `values` (0 < fraction <= 1)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


async def async_create_entry(
    hass: HomeAssistant,
    url: str,
    model: str,
    options: dict[str, Any] | None = None,
    api_key: str | None = None,
) -> MajordomeConfigEntry:
    """Create a Majordome entry through the real config, options and agent flows.

    The config flow makes the server and its first agent. `options` is both setups in
    one dict: the household's keys (the voice servers) go to the entry's options, the
    others to the agent's.
    """
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "user"})
    if result["type"] is not FlowResultType.FORM or result["step_id"] != "user":
        raise RuntimeError(f"config flow: unexpected first step {result}")
    server = {CONF_URL: url, **({CONF_API_KEY: api_key} if api_key else {})}
    result = await hass.config_entries.flow.async_configure(result["flow_id"], server)
    if result["type"] is not FlowResultType.FORM or result["step_id"] != "model":
        raise RuntimeError(f"config flow: server step failed: {result.get('errors')}")
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_MODEL: model})
    if result["type"] is not FlowResultType.CREATE_ENTRY:
        raise RuntimeError(f"config flow: model step failed: {result}")
    entry_id = result["result"].entry_id
    await hass.async_block_till_done()
    agent_options = dict(options or {})
    household = {key: agent_options.pop(key) for key in HOUSEHOLD_OPTIONS if key in agent_options}
    if household:
        flow = await hass.config_entries.options.async_init(entry_id)
        done = await hass.config_entries.options.async_configure(flow["flow_id"], household)
        if done["type"] is not FlowResultType.CREATE_ENTRY:
            raise RuntimeError(f"options flow failed: {done}")
        await hass.async_block_till_done()  # the update listener reloads the entry
    if agent_options:
        await async_configure_agent(hass, entry_id, agent_options)
    entry = hass.config_entries.async_get_entry(entry_id)
    if entry is None or not hasattr(entry, "runtime_data"):
        raise RuntimeError("the Majordome entry did not load")
    return entry


async def async_configure_agent(
    hass: HomeAssistant, entry_id: str, changes: dict[str, Any]
) -> None:
    """Change the options of the entry's first agent through its reconfigure flow."""
    entry = hass.config_entries.async_get_entry(entry_id)
    agent = default_agent(entry) if entry is not None else None
    if entry is None or agent is None:
        raise RuntimeError("the Majordome entry has no agent")
    flow = await hass.config_entries.subentries.async_init(
        (entry_id, SUBENTRY_AGENT),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": agent.subentry_id},
    )
    current = dict(agent.data)
    model = current.pop(CONF_MODEL)
    flow = await hass.config_entries.subentries.async_configure(
        flow["flow_id"], {CONF_MODEL: model}
    )
    if flow["type"] is not FlowResultType.FORM or flow["step_id"] != "agent":
        raise RuntimeError(f"agent flow: model step failed: {flow}")
    done = await hass.config_entries.subentries.async_configure(
        flow["flow_id"], {CONF_NAME: agent.title, **DEFAULT_OPTIONS, **current, **changes}
    )
    if done.get("reason") != "reconfigure_successful":
        raise RuntimeError(f"agent flow failed: {done}")
    await hass.async_block_till_done()  # the update listener reloads the entry


async def async_add_agent(
    hass: HomeAssistant, entry_id: str, name: str, changes: dict[str, Any]
) -> str:
    """Add an agent to the entry through its agent flow, on the first agent's model.

    Returns the new agent's subentry id.
    """
    entry = hass.config_entries.async_get_entry(entry_id)
    first = default_agent(entry) if entry is not None else None
    if entry is None or first is None:
        raise RuntimeError("the Majordome entry has no agent")
    before = set(entry.subentries)
    flow = await hass.config_entries.subentries.async_init(
        (entry_id, SUBENTRY_AGENT), context={"source": SOURCE_USER}
    )
    flow = await hass.config_entries.subentries.async_configure(
        flow["flow_id"], {CONF_MODEL: first.data[CONF_MODEL]}
    )
    if flow["type"] is not FlowResultType.FORM or flow["step_id"] != "agent":
        raise RuntimeError(f"agent flow: model step failed: {flow}")
    done = await hass.config_entries.subentries.async_configure(
        flow["flow_id"], {CONF_NAME: name, **DEFAULT_OPTIONS, **changes}
    )
    if done["type"] is not FlowResultType.CREATE_ENTRY:
        raise RuntimeError(f"agent flow failed: {done}")
    await hass.async_block_till_done()  # the update listener reloads the entry
    [added] = set(entry.subentries) - before
    return added


async def async_access_token(hass: HomeAssistant) -> str:
    """An access token of an admin user, as a websocket client would have."""
    user = await hass.auth.async_create_user("Bench", group_ids=["system-admin"])
    refresh = await hass.auth.async_create_refresh_token(user, "https://bench.majordome.invalid/")
    return hass.auth.async_create_access_token(refresh)


def wait_for_other_llm_servers(timeout_s: float = 600, poll_s: float = 30) -> None:
    """Wait until no llama.cpp server of someone else runs: benchmarks must run alone."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = subprocess.run(
            ["pgrep", "-af", "llm_server_main"], capture_output=True, text=True, check=False
        ).stdout
        others = [
            line
            for line in found.splitlines()
            if line.strip() and int(line.split()[0]) != os.getpid()
        ]
        if not others:
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(f"another LLM server is still running: {others}")
        progress(f"waiting for another LLM server to end: {others}")
        time.sleep(poll_s)


def run_in_temp_dir(
    name: str, coro_factory: Callable[[Path], Coroutine[Any, Any, dict[str, Any]]]
) -> dict[str, Any]:
    """Run one benchmark's coroutine, given a throwaway directory, in its own loop."""
    with tempfile.TemporaryDirectory(prefix=f"majordome-bench-{name}-") as tmp:
        result: dict[str, Any] = asyncio.run(coro_factory(Path(tmp)))
        return result
