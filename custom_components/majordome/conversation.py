"""The conversation agent: thin, the turn itself lives in entity.py."""

from __future__ import annotations

from typing import Literal

from homeassistant.components import conversation
from homeassistant.components.conversation.models import AbstractConversationAgent
from homeassistant.const import MATCH_ALL
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .const import CONF_LLM_HASS_API, LLM_API_ASSIST
from .entity import MajordomeEntity
from .models import MajordomeConfigEntry


async def async_setup_entry(
    hass: HomeAssistant,
    entry: MajordomeConfigEntry,
    async_add_entities: AddEntitiesCallback,
) -> None:
    """Add the agent of this entry."""
    async_add_entities([MajordomeConversationEntity(entry)])


class MajordomeConversationEntity(
    MajordomeEntity, conversation.ConversationEntity, AbstractConversationAgent
):
    """Majordome as a conversation agent, for every language."""

    # Home Assistant >= 2025.6 starts speaking while the reply streams in.
    _attr_supports_streaming = True

    def __init__(self, entry: MajordomeConfigEntry) -> None:
        """Announce device control only when the Assist tools are on."""
        super().__init__(entry)
        if entry.options.get(CONF_LLM_HASS_API) == LLM_API_ASSIST:
            self._attr_supported_features = conversation.ConversationEntityFeature.CONTROL

    @property
    def supported_languages(self) -> list[str] | Literal["*"]:
        """Every language: the model answers in the user's."""
        return MATCH_ALL

    async def async_added_to_hass(self) -> None:
        """Register as an agent."""
        await super().async_added_to_hass()
        conversation.async_set_agent(self.hass, self.entry, self)

    async def async_will_remove_from_hass(self) -> None:
        """Unregister as an agent."""
        conversation.async_unset_agent(self.hass, self.entry)
        await super().async_will_remove_from_hass()

    async def _async_handle_message(
        self, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog
    ) -> conversation.ConversationResult:
        """Answer one message."""
        return await self.async_handle_turn(user_input, chat_log)
