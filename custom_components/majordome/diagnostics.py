"""Diagnostics: the setup, the agents, the last turn's cost and memory's shape.

Never a secret (the API key, credentials written in the server's URL) nor the memory.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from homeassistant.components.diagnostics import REDACTED, async_redact_data
from homeassistant.const import CONF_API_KEY, CONF_URL
from homeassistant.core import HomeAssistant

from .const import CONF_FAST_URL, MEMORY_KEY
from .models import MajordomeConfigEntry, MajordomeData, agents_of

# The memory is personal data: only its size and age are shown.
TO_REDACT = {CONF_API_KEY, MEMORY_KEY}


def redact_url(url: str) -> str:
    """The URL without the user, password or query it may carry."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{REDACTED}@{host}" if "@" in parts.netloc else host
    query = REDACTED if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _agent_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """An agent's settings, its fast model's server without credentials."""
    shown = dict(data)
    if shown.get(CONF_FAST_URL):
        shown[CONF_FAST_URL] = redact_url(shown[CONF_FAST_URL])
    return shown


def _model_turns(runtime: MajordomeData) -> dict[str, Any]:
    """Turns each model answered since setup, their share, and the fast turns taken again."""
    answered = {role: runtime.model_turns[role] for role in ("fast", "main")}
    total = sum(answered.values())
    return {
        **answered,
        "fast_failed": runtime.model_turns["fast_failed"],
        "share": {
            role: round(count / total, 3) if total else 0.0 for role, count in answered.items()
        },
    }


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: MajordomeConfigEntry
) -> dict[str, Any]:
    """Return what helps to debug a server's agents."""
    runtime = entry.runtime_data
    last_turn = runtime.last_turn
    memory = runtime.memory.memory
    data = async_redact_data(dict(entry.data), TO_REDACT)
    data[CONF_URL] = redact_url(data[CONF_URL])
    return {
        "data": data,
        "options": dict(entry.options),
        "agents": [
            {
                "subentry_id": agent.subentry_id,
                "title": agent.title,
                "data": _agent_data(agent.data),
            }
            for agent in agents_of(entry)
        ],
        "model_turns": _model_turns(runtime),
        "memory": {
            "profile_chars": len(memory.profile),
            "facts": len(memory.facts),
            "dynamic_chars": len(memory.dynamic),
            "onboarding": str(memory.onboarding),
            "profile_updated": memory.profile_updated,
            "dynamic_updated": memory.dynamic_updated,
        },
        "ignored_utterances": dict(runtime.ignored),
        "last_turn": None
        if last_turn is None
        else {
            **dataclasses.asdict(last_turn),
            "server_s": last_turn.server_s,
            "overhead_s": last_turn.overhead_s,
        },
    }
