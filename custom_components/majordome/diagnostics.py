"""Diagnostics: the setup and the last turn's cost, with secrets redacted."""

from __future__ import annotations

import dataclasses
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant

from .models import MajordomeConfigEntry

TO_REDACT = {CONF_API_KEY}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: MajordomeConfigEntry
) -> dict[str, Any]:
    """Return what helps to debug an agent, never the API key."""
    last_turn = entry.runtime_data.last_turn
    return {
        "data": async_redact_data(dict(entry.data), TO_REDACT),
        "options": dict(entry.options),
        "last_turn": None
        if last_turn is None
        else {
            **dataclasses.asdict(last_turn),
            "server_s": last_turn.server_s,
            "overhead_s": last_turn.overhead_s,
        },
    }
