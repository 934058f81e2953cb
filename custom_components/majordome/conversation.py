"""The conversation agent: thin, the turn itself lives in entity.py."""

from __future__ import annotations

from typing import Literal

from homeassistant.components import conversation
from homeassistant.components.conversation.models import AbstractConversationAgent
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import MATCH_ALL
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import CONF_LLM_HASS_API, LLM_API_ASSIST
from .entity import MajordomeEntity
from .models import MajordomeConfigEntry, agents_of, default_agent


async def async_setup_entry(
    hass: HomeAssistant,
    entry: MajordomeConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add one agent per agent subentry."""
    for subentry in agents_of(entry):
        async_add_entities(
            [MajordomeConversationEntity(entry, subentry)],
            config_subentry_id=subentry.subentry_id,
        )


class MajordomeConversationEntity(
    MajordomeEntity, conversation.ConversationEntity, AbstractConversationAgent
):
    """Majordome as a conversation agent, for every language."""

    # Home Assistant >= 2025.6 starts speaking while the reply streams in.
    _attr_supports_streaming = True

    def __init__(self, entry: MajordomeConfigEntry, subentry: ConfigSubentry) -> None:
        """Announce device control only when the Assist tools are on."""
        super().__init__(entry, subentry)
        if self.options.get(CONF_LLM_HASS_API) == LLM_API_ASSIST:
            self._attr_supported_features = conversation.ConversationEntityFeature.CONTROL
        # The oldest agent also answers to the entry's id, as the only agent of 0.1 did.
        self._answers_for_entry = default_agent(entry) is subentry

    @property
    def supported_languages(self) -> list[str] | Literal["*"]:
        """Every language: the model answers in the user's."""
        return MATCH_ALL

    async def async_added_to_hass(self) -> None:
        """Register under the entry's id too, for the default agent."""
        await super().async_added_to_hass()
        if self._answers_for_entry:
            conversation.async_set_agent(self.hass, self.entry, self)

    async def async_will_remove_from_hass(self) -> None:
        """Unregister the entry's id."""
        if self._answers_for_entry:
            conversation.async_unset_agent(self.hass, self.entry)
        await super().async_will_remove_from_hass()

    async def _async_handle_message(
        self, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog
    ) -> conversation.ConversationResult:
        """Answer one message."""
        return await self.async_handle_turn(user_input, chat_log)
