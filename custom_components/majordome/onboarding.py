"""The model's side of memory: the introduction question and the background summary.

Onboarding: once, while the household's profile is empty, a reply ends with the
introduction question; the next message in that conversation is condensed into the
profile (or, not being an introduction, dismisses the question for good). Every few user
turns the dynamic memory is re-summarised in the background. memory.py keeps what is
stored and the requests' wording; this is what a turn does with them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import dataclasses
from typing import TYPE_CHECKING, Any

import openai

from homeassistant.components import conversation
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr

from . import backend, memory
from .const import DOMAIN, LOGGER, MEMORY_TIMEOUT
from .memory import MemoryStore, Onboarding

if TYPE_CHECKING:
    from .entity import PreparedTurn


async def _async_memory_task(
    client: openai.AsyncOpenAI,
    turn: PreparedTurn,
    messages: list[dict[str, Any]],
    request: dict[str, str],
) -> str:
    """Ask the turn's model for a memory text: the conversation so far, then `request`."""
    return await backend.async_side_completion(
        client,
        model=turn.completion_args["model"],
        messages=[*messages, request],
        tools=None,  # see memory.py: offered tools, small models answer with a call
        max_tokens=200,
        time_limit=MEMORY_TIMEOUT,
        extra_body=turn.completion_args["extra_body"],
    )


# --- Onboarding -------------------------------------------------------------------


async def async_read_introduction(
    store: MemoryStore,
    client: openai.AsyncOpenAI,
    chat_log: conversation.ChatLog,
    user_input: conversation.ConversationInput,
    turn: PreparedTurn,
) -> bool:
    """Whether this message answered the introduction question and became the profile.

    Only while the question waits for its answer, which is the next message in the
    conversation it was asked in; any other message dismisses it.
    """
    if store.memory.onboarding is not Onboarding.ASKED:
        return False
    profile = None
    written = store.written["profile"]
    if store.asked_in_conversation == chat_log.conversation_id and may_write(store):
        store.asked_in_conversation = None
        profile = await _async_condense(client, turn, user_input.text)
    if store.written["profile"] != written:
        # The profile was written while the model condensed (a service, the options):
        # that newer write wins.
        LOGGER.debug("The profile changed meanwhile: the introduction is not stored")
        return False
    if profile is None:
        # Not answered (or answered elsewhere): the question is never asked again.
        store.update(onboarding=Onboarding.DISMISSED)
        return False
    store.update(profile=profile, onboarding=Onboarding.DONE)
    return True


async def async_author(
    hass: HomeAssistant, user_input: conversation.ConversationInput
) -> memory.Author:
    """Who is behind a turn: a user, someone at a satellite, or no one (an automation)."""
    if user_input.context and (user_id := user_input.context.user_id):
        user = await hass.auth.async_get_user(user_id)
        return (
            memory.Author(name=user.name or "", user_id=user_id, person=True)
            if user
            else memory.NOBODY
        )
    if user_input.device_id and (device := dr.async_get(hass).async_get(user_input.device_id)):
        return memory.Author(name=device.name_by_user or device.name or "", person=True)
    return memory.NOBODY


def may_write(store: MemoryStore) -> bool:
    """Whether this turn may write memory: a person is behind it, or the option allows it."""
    return memory.AUTHOR.get().person or store.automations_may_write


async def _async_condense(
    client: openai.AsyncOpenAI, turn: PreparedTurn, answer: str
) -> str | None:
    """Condense the answer to the introduction question into a profile, if it is one."""
    try:
        text = await _async_memory_task(
            client, turn, turn.messages[:-1], memory.condense_request(answer)
        )
    except backend.BackendError as err:
        LOGGER.warning("Could not condense the introduction (%s); answering normally", err)
        return None
    LOGGER.debug("The introduction condensed to %r", text[:300])
    return memory.parse_memory_text(text)


def introduction_due(current: memory.Memory, user_input: conversation.ConversationInput) -> bool:
    """Whether this reply ends with the introduction question: once, while the profile is empty.

    Only people are asked (a user in the dialog, a voice satellite), never an
    automation calling conversation.process.
    """
    from_person = user_input.device_id is not None or bool(
        user_input.context and user_input.context.user_id
    )
    return current.onboarding is Onboarding.PENDING and not current.profile and from_person


async def async_ask_introduction(
    store: MemoryStore,
    chat_log: conversation.ChatLog,
    reply: str,
    question: str,
    say: Callable[[str], Awaitable[None]],
) -> str:
    """End the reply (the chat log's last message) with the question; return both."""
    speech = f"{reply.rstrip()} {question}".strip()
    answer = chat_log.content[-1]
    assert isinstance(answer, conversation.AssistantContent)
    await say(question)
    # Heard as two messages, kept as one: the reply and its question.
    chat_log.content[-2:] = [dataclasses.replace(answer, content=speech)]
    store.update(onboarding=Onboarding.ASKED)
    store.asked_in_conversation = chat_log.conversation_id
    return speech


# --- The dynamic memory -----------------------------------------------------------


def maybe_schedule_summary(
    store: MemoryStore,
    client: openai.AsyncOpenAI,
    every: int,
    turn: PreparedTurn,
) -> None:
    """Every `every` user turns, re-summarise the dynamic memory in the background."""
    if not may_write(store) or not store.summary_due(every):
        return
    store.summary_running = True
    store.entry.async_create_background_task(
        store.hass,
        _async_summarize(store, client, list(turn.messages), turn),
        name=f"{DOMAIN}_memory_summary",
    )


async def _async_summarize(
    store: MemoryStore,
    client: openai.AsyncOpenAI,
    messages: list[dict[str, Any]],
    turn: PreparedTurn,
) -> None:
    """Replace the dynamic memory; on any failure keep the previous one."""
    written = store.written["dynamic"]
    try:
        text = await _async_memory_task(
            client, turn, messages, memory.summary_request(store.memory.dynamic)
        )
        if store.written["dynamic"] != written:
            # Cleared or set while the model wrote: that newer write wins.
            LOGGER.debug("The dynamic memory changed meanwhile: the summary is dropped")
        elif (dynamic := memory.parse_memory_text(text)) is not None:
            store.update(dynamic=dynamic)
    except backend.BackendError as err:
        LOGGER.warning("Dynamic memory not updated (%s); the previous one is kept", err)
    finally:
        store.summary_running = False
