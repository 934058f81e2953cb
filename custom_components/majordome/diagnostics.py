"""Diagnostics: the setup, the last turn's cost and memory's shape, never secrets or memory."""

from __future__ import annotations

import dataclasses
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant

from .const import MEMORY_KEY
from .models import MajordomeConfigEntry

# The memory is personal data: only its size and age are shown.
TO_REDACT = {CONF_API_KEY, MEMORY_KEY}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: MajordomeConfigEntry
) -> dict[str, Any]:
    """Return what helps to debug an agent."""
    runtime = entry.runtime_data
    last_turn = runtime.last_turn
    memory = runtime.memory.memory
    return {
        "data": async_redact_data(dict(entry.data), TO_REDACT),
        "options": dict(entry.options),
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
