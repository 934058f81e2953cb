"""What the tests say to the agent and read back, shared by the test modules."""

from __future__ import annotations

import json
from typing import Any

from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.auth.models import User
from homeassistant.components import conversation
from homeassistant.core import Context, HomeAssistant


async def converse(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    text: str,
    conversation_id: str | None = None,
    *,
    language: str | None = "en",
    user: User | None = None,
    device_id: str | None = None,
) -> conversation.ConversationResult:
    """Send one message to the agent, as the Assist dialog, a satellite or an automation."""
    return await conversation.async_converse(
        hass,
        text,
        conversation_id,
        Context(user_id=user.id if user else None),
        language=language,
        agent_id=entry.entry_id,
        device_id=device_id,
    )


def speech(result: conversation.ConversationResult) -> str:
    """The plain speech of a result ("" when nothing is to be said)."""
    return str(result.response.speech.get("plain", {}).get("speech", ""))


def tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool results a recorded request sent back to the model."""
    return [m for m in request["messages"] if m["role"] == "tool"]


def tool_results(request: dict[str, Any]) -> list[Any]:
    """The tool results a recorded request sent back to the model, decoded."""
    return [json.loads(message["content"]) for message in tool_messages(request)]
