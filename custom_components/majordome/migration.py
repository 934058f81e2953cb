"""From 0.1's entries (one server, one model, its options) to a server with agents.

Version 1: data = url, api_key, model, memory; options = the agent's options and the
voice servers; the conversation entity and its device keyed by the entry id.
Version 2: data = url, api_key, memory; options = the voice servers; one subentry per
agent (model and options), its entity and device keyed by the subentry id.
"""

from __future__ import annotations

from types import MappingProxyType

from homeassistant.components import conversation
from homeassistant.config_entries import ConfigEntry, ConfigSubentry
from homeassistant.const import CONF_MODEL, CONF_URL
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.util import slugify

from . import compat
from .backend import public_url, url_secrets
from .const import DOMAIN, HOUSEHOLD_OPTIONS, LOGGER, SUBENTRY_AGENT

VERSION = 2


def migrate_to_agents(hass: HomeAssistant, entry: ConfigEntry) -> None:
    """Turn a version-1 entry into a server entry whose one agent is the old entry's.

    The memory and every option value are kept; the agent keeps its entity id (and
    so its place in voice pipelines and automations) and its device.
    """
    household = {key: value for key, value in entry.options.items() if key in HOUSEHOLD_OPTIONS}
    agent = {key: value for key, value in entry.options.items() if key not in HOUSEHOLD_OPTIONS}
    subentry = ConfigSubentry(
        data=MappingProxyType({CONF_MODEL: entry.data[CONF_MODEL], **agent}),
        subentry_type=SUBENTRY_AGENT,
        # 0.1 titled entries "model (URL)": never with the URL's credentials.
        title=entry.title.replace(entry.data[CONF_URL], public_url(entry.data[CONF_URL])),
        unique_id=None,
    )
    hass.config_entries.async_add_subentry(entry, subentry)

    entities = er.async_get(hass)
    if entity_id := entities.async_get_entity_id(conversation.DOMAIN, DOMAIN, entry.entry_id):
        entities.async_update_entity(
            entity_id,
            config_subentry_id=subentry.subentry_id,
            new_entity_id=_without_secrets(entities, entity_id, entry.data[CONF_URL], subentry),
            new_unique_id=subentry.subentry_id,
        )
    devices = dr.async_get(hass)
    if device := compat.device_of(devices, (DOMAIN, entry.entry_id), entry.entry_id):
        compat.move_device_to_subentry(
            devices,
            device.id,
            entry.entry_id,
            subentry.subentry_id,
            {(DOMAIN, subentry.subentry_id)},
        )

    hass.config_entries.async_update_entry(
        entry,
        title=public_url(entry.data[CONF_URL]),
        data={key: value for key, value in entry.data.items() if key != CONF_MODEL},
        options=household,
        # Servers are told apart by their URL; the old "url|model" names no entry now.
        unique_id=None,
        version=VERSION,
    )
    LOGGER.info("Majordome entry %s now has its agent as a subentry", entry.entry_id)


def _without_secrets(
    entities: er.EntityRegistry, entity_id: str, url: str, subentry: ConfigSubentry
) -> str:
    """The agent's entity id, or a new one if the old one spells the URL's credentials.

    0.1 named the entity after its "model (URL)" title, so a URL with a password made an
    entity id that shows it wherever entities are listed.
    """
    if not any(slugify(secret) in entity_id for secret in url_secrets(url)):
        return entity_id
    new_entity_id = entities.async_generate_entity_id(conversation.DOMAIN, slugify(subentry.title))
    LOGGER.warning(
        "The agent's entity id spelled its server's credentials: it is now %s (a voice "
        "pipeline or an automation that named the old one needs the new one)",
        new_entity_id,
    )
    return new_entity_id
