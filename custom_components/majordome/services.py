"""Memory services, for automations and people: get, set and clear what Majordome remembers."""

from __future__ import annotations

from typing import Any

import voluptuous as vol

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import config_validation as cv

from .const import DOMAIN
from .memory import Memory, MemoryStore, Onboarding
from .models import MajordomeConfigEntry

ATTR_CONFIG_ENTRY_ID = "config_entry_id"
ATTR_PROFILE = "profile"
ATTR_DYNAMIC = "dynamic"
ATTR_FACTS = "facts"
ATTR_PART = "part"

_TARGET = {vol.Optional(ATTR_CONFIG_ENTRY_ID): cv.string}
GET_SCHEMA = vol.Schema(_TARGET)
SET_SCHEMA = vol.Schema(
    {
        **_TARGET,
        vol.Optional(ATTR_PROFILE): cv.string,
        vol.Optional(ATTR_DYNAMIC): cv.string,
        vol.Optional(ATTR_FACTS): vol.All(cv.ensure_list, [cv.string]),
    }
)
CLEAR_SCHEMA = vol.Schema(
    {
        **_TARGET,
        vol.Optional(ATTR_PART, default="all"): vol.In(["all", "profile", "facts", "dynamic"]),
    }
)


def _store(hass: HomeAssistant, call: ServiceCall) -> MemoryStore:
    """Find the household the call is for: a server entry, the only one when none is named.

    The memory is the household's: every agent of the entry shares it.
    """
    entries: list[MajordomeConfigEntry] = [
        entry
        for entry in hass.config_entries.async_entries(DOMAIN)
        if entry.state is ConfigEntryState.LOADED
    ]
    if entry_id := call.data.get(ATTR_CONFIG_ENTRY_ID):
        for entry in entries:
            if entry.entry_id == entry_id:
                return entry.runtime_data.memory
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="unknown_agent",
            translation_placeholders={"entry_id": entry_id},
        )
    if len(entries) != 1:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="agent_required",
            translation_placeholders={"count": str(len(entries))},
        )
    return entries[0].runtime_data.memory


def _as_response(memory: Memory) -> dict[str, Any]:
    return memory.as_data()


async def _async_get(call: ServiceCall) -> ServiceResponse:
    return _as_response(_store(call.hass, call).memory)


async def _async_set(call: ServiceCall) -> ServiceResponse:
    store = _store(call.hass, call)
    changes: dict[str, Any] = {}
    if ATTR_PROFILE in call.data:
        changes["profile"] = call.data[ATTR_PROFILE]
        # A profile given by a person answers the introduction question for good.
        changes["onboarding"] = (
            Onboarding.DONE if changes["profile"].strip() else store.memory.onboarding
        )
    if ATTR_DYNAMIC in call.data:
        changes["dynamic"] = call.data[ATTR_DYNAMIC]
    if ATTR_FACTS in call.data:
        changes["facts"] = tuple(fact.strip() for fact in call.data[ATTR_FACTS] if fact.strip())
    return _as_response(store.update(**changes))


async def _async_clear(call: ServiceCall) -> ServiceResponse:
    return _as_response(_store(call.hass, call).clear(call.data[ATTR_PART]))


def async_register_services(hass: HomeAssistant) -> None:
    """Register the memory services (once, for every agent)."""
    hass.services.async_register(
        DOMAIN, "get_memory", _async_get, GET_SCHEMA, supports_response=SupportsResponse.ONLY
    )
    hass.services.async_register(
        DOMAIN, "set_memory", _async_set, SET_SCHEMA, supports_response=SupportsResponse.OPTIONAL
    )
    hass.services.async_register(
        DOMAIN,
        "clear_memory",
        _async_clear,
        CLEAR_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
