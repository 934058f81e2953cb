"""The prompt: default instructions and a layout built for prefix caching.

Servers (llama.cpp, Ollama, vLLM, OpenAI) reuse the work done on a prompt prefix that
is byte-identical to the previous request's. Home Assistant 2025.4 opens its system
prompt with the current time, so nothing is ever reused. Here the system prompt holds
only what changes when the house changes: instructions, then the API's static context.
Chat templates usually append the tool block after the system text, so one volatile
byte in the system prompt would invalidate the tools too. The time and the date come
from tools instead; the user's message stays the user's own words, which small models
read as the request.
"""

from __future__ import annotations

import json
from typing import Any

from homeassistant.components import conversation
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import TemplateError
from homeassistant.helpers import llm, template

from . import compat
from .const import INVALID_ARGUMENTS_KEY, LOGGER

# Home Assistant's own default instructions, word for word in English. Measured on the
# embedded 0.5B model, anything longer or more "persona" (a butler who "calls the
# matching tool") made it invent tools named after devices on follow-up turns. How
# to use the tools is said by the Assist API's prompt and by the tools themselves.
DEFAULT_INSTRUCTIONS: dict[str, str] = {
    "en": """You are a voice assistant for Home Assistant.
Answer questions about the world truthfully.
Answer in plain text. Keep it simple and to the point.""",
    "fr": """Tu es un assistant vocal pour Home Assistant.
Réponds honnêtement aux questions sur le monde.
Réponds en texte simple. Sois simple et va droit au but.""",
}


def base_language(language: str | None) -> str:
    """Return the two-letter language ("fr" for "fr-CA"), English by default."""
    return (language or "en").split("-")[0].split("_")[0].lower() or "en"


def default_instructions(language: str | None) -> str:
    """Return the default instructions in the language, English when we have none."""
    return DEFAULT_INSTRUCTIONS.get(base_language(language), DEFAULT_INSTRUCTIONS["en"])


class PromptError(Exception):
    """The user's instructions template could not be rendered."""


def build_system_prompt(
    hass: HomeAssistant,
    instructions: str,
    api_prompt: str | None,
    extra_system_prompt: str | None,
    memory_block: str = "",
) -> str:
    """Return the system prompt: stable parts only, most stable first.

    Memory comes last: it changes every few turns, and everything before it stays a
    prefix the server can reuse.

    Instructions are a template, as in Home Assistant's own agents; a template that
    uses now() makes the prompt volatile again, which the README warns about.
    """
    try:
        rendered = template.Template(instructions, hass).async_render(
            {"ha_name": hass.config.location_name}, parse_result=False
        )
    except TemplateError as err:
        raise PromptError(str(err)) from err
    parts = [rendered.strip()]
    if api_prompt:
        parts.append(api_prompt.strip())
    if extra_system_prompt:
        parts.append(extra_system_prompt.strip())
    if memory_block:
        parts.append(memory_block)
    return "\n\n".join(parts)


def to_message(content: conversation.Content) -> dict[str, Any]:
    """Convert one chat-log entry to a chat-completions message."""
    if isinstance(content, conversation.ToolResultContent):
        return {
            "role": "tool",
            "tool_call_id": content.tool_call_id,
            "content": json.dumps(compat.result_data(content), ensure_ascii=False, default=str),
        }
    if isinstance(content, conversation.AssistantContent):
        message: dict[str, Any] = {"role": "assistant", "content": content.content or ""}
        if content.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.tool_name, "arguments": _arguments(call)},
                }
                for call in content.tool_calls
            ]
        return message
    return {"role": content.role, "content": content.content}


def _arguments(call: llm.ToolInput) -> str:
    """Return the arguments as JSON; unparsable ones go back as {}.

    Some servers parse the history's arguments and reject the whole request when
    they are not JSON, which would break every later turn of the conversation. The
    tool's error result already quotes what the model wrote.
    """
    if INVALID_ARGUMENTS_KEY in call.tool_args:
        return "{}"
    return json.dumps(call.tool_args, ensure_ascii=False)


def build_messages(
    chat_log_content: list[conversation.Content], max_history: int
) -> list[dict[str, Any]]:
    """Return the messages to send: the system prompt and the last `max_history` turns.

    A turn starts at a user message, so a trimmed history never opens on an orphan
    tool result. 0 keeps everything.
    """
    system, *history = chat_log_content
    if max_history > 0:
        user_indexes = [i for i, item in enumerate(history) if item.role == "user"]
        if len(user_indexes) > max_history:
            cut = user_indexes[-max_history]
            LOGGER.debug("Trimming %d old messages from the history", cut)
            history = history[cut:]
    messages = without_turn_notes([to_message(item) for item in history])
    return [to_message(system), *well_formed(messages)]


def without_turn_notes(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop Home Assistant's notes of unanswered turns, with the question they follow.

    A live chat log (2026.11+) ends a turn that produced nothing with "(no response)",
    and a cancelled one with its error: a question without its answer, and words a
    small model repeats as its own next time.
    """
    kept: list[dict[str, Any]] = []
    for message in messages:
        note = message["content"] in compat.TURN_NOTES and not message.get("tool_calls")
        if message["role"] == "assistant" and note:
            if kept and kept[-1]["role"] == "user":
                kept.pop()
            continue
        kept.append(message)
    return kept


def well_formed(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history as servers take it: every tool call answered, every answer called.

    A turn cancelled or failed halfway (Home Assistant 2026.11 keeps such turns, with
    its own error note) can leave calls without results, which servers refuse, or
    results without their call: those are dropped, the words around them kept.
    """
    answered = {m.get("tool_call_id") for m in messages if m["role"] == "tool"}
    called: set[str] = set()
    kept: list[dict[str, Any]] = []
    for original in messages:
        if original["role"] == "tool":
            if original.get("tool_call_id") in called:
                kept.append(original)
            continue
        message = original
        calls = message.get("tool_calls", [])
        if any(call["id"] not in answered for call in calls):
            message = {k: v for k, v in message.items() if k != "tool_calls"}
            if not message["content"]:
                called = set()
                continue
        called = {call["id"] for call in message.get("tool_calls", [])}
        kept.append(message)
    return kept


def without_old_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Return the system prompt and the current turn only, or None if that is all there is.

    The way out when the history no longer fits the model's context window.
    """
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=0)
    if last_user <= 1:
        return None
    return [messages[0], *messages[last_user:]]
