"""Memory services, for automations and people: get, set and clear what Majordome remembers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
import functools
from typing import Any

import voluptuous as vol

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.exceptions import ServiceValidationError, Unauthorized, UnknownUser
from homeassistant.helpers import config_validation as cv

from .const import DOMAIN, MAX_DYNAMIC_CHARS, MAX_FACT_CHARS, MAX_FACTS, MAX_PROFILE_CHARS
from .memory import Author, Memory, MemoryStore, Onboarding
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


type _Handler = Callable[[ServiceCall], Coroutine[Any, Any, ServiceResponse]]


def _admin_only(handler: _Handler) -> _Handler:
    """Admins only, as Home Assistant's own admin services (whose helper takes no response).

    A call with no user behind it (an automation, a script, Home Assistant itself)
    passes, as it does for them.
    """

    @functools.wraps(handler)
    async def checked(call: ServiceCall) -> ServiceResponse:
        if call.context.user_id:
            user = await call.hass.auth.async_get_user(call.context.user_id)
            if user is None:
                raise UnknownUser(context=call.context)
            if not user.is_admin:
                raise Unauthorized(context=call.context)
        return await handler(call)

    return checked


async def _async_author(call: ServiceCall) -> Author:
    """The caller, noted with the facts it writes."""
    if not (user_id := call.context.user_id):
        return Author()
    user = await call.hass.auth.async_get_user(user_id)
    return Author(name=user.name or "" if user else "", user_id=user_id, person=True)


def _too_long(what: str, limit: int) -> ServiceValidationError:
    return ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key="memory_too_long",
        translation_placeholders={"what": what, "limit": str(limit)},
    )


def _check_caps(data: dict[str, Any]) -> None:
    """Refuse, with a clear answer and writing nothing, what the memory cannot hold."""
    for key, limit in ((ATTR_PROFILE, MAX_PROFILE_CHARS), (ATTR_DYNAMIC, MAX_DYNAMIC_CHARS)):
        if len(data.get(key, "").strip()) > limit:
            raise _too_long(key, limit)
    facts = [fact for fact in data.get(ATTR_FACTS, ()) if fact.strip()]
    if len(facts) > MAX_FACTS:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="memory_too_many_facts",
            translation_placeholders={"count": str(len(facts)), "limit": str(MAX_FACTS)},
        )
    if any(len(" ".join(fact.split())) > MAX_FACT_CHARS for fact in facts):
        raise _too_long("fact", MAX_FACT_CHARS)


@_admin_only
async def _async_get(call: ServiceCall) -> ServiceResponse:
    return _as_response(_store(call.hass, call).memory)


@_admin_only
async def _async_set(call: ServiceCall) -> ServiceResponse:
    _check_caps(dict(call.data))
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
        changes["facts"] = tuple(call.data[ATTR_FACTS])
    return _as_response(store.update(author=await _async_author(call), **changes))


@_admin_only
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
