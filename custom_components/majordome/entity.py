"""One turn of conversation: the place where the parts of the brain meet.

prompt (stable system prompt) -> tools (one llm.API) -> backend (a stream of deltas)
-> the chat log runs the tool calls -> back to the model until it answers.
Every failure ends as a short sentence in the user's language, never as an exception
into Home Assistant, and the history keeps its shape.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from homeassistant.components import conversation
from homeassistant.const import CONF_MODEL, CONF_URL
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, intent, llm, translation
from homeassistant.helpers.entity import Entity

from . import backend, prompt, tools
from .const import (
    CONF_LLM_HASS_API,
    CONF_MAX_HISTORY,
    CONF_MAX_ITERATIONS,
    CONF_MAX_TOKENS,
    CONF_PROMPT,
    CONF_TEMPERATURE,
    DEFAULT_MAX_HISTORY,
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMPERATURE,
    DOMAIN,
    LLM_API_ASSIST,
    LOGGER,
)
from .models import MajordomeConfigEntry, TurnTrace

# LLMContext lost `user_prompt` in 2025.7: build it from the fields this version has.
_LLM_CONTEXT_FIELDS = {f.name for f in dataclasses.fields(llm.LLMContext)}


def llm_context_for(user_input: conversation.ConversationInput) -> llm.LLMContext:
    """Return the context the tools run in: Assist's, so exposure rules apply."""
    values: dict[str, Any] = {
        "platform": DOMAIN,
        "context": user_input.context,
        "user_prompt": user_input.text,
        "language": user_input.language,
        "assistant": conversation.DOMAIN,
        "device_id": user_input.device_id,
    }
    return llm.LLMContext(**{k: v for k, v in values.items() if k in _LLM_CONTEXT_FIELDS})


async def async_spoken_message(hass: HomeAssistant, language: str | None, key: str) -> str:
    """Return a sentence from the `exceptions` translations, in the user's language."""
    strings = await translation.async_get_translations(
        hass, prompt.base_language(language), "exceptions", {DOMAIN}
    )
    return strings.get(f"component.{DOMAIN}.exceptions.{key}.message", key)


class MajordomeEntity(Entity):
    """Base of Majordome's entities: one device per config entry, and the turn logic."""

    _attr_has_entity_name = True
    _attr_name = None

    def __init__(self, entry: MajordomeConfigEntry) -> None:
        """Attach to the entry's device."""
        self.entry = entry
        self._attr_unique_id = entry.entry_id
        self._attr_device_info = dr.DeviceInfo(
            identifiers={(DOMAIN, entry.entry_id)},
            name=entry.title,
            manufacturer="Majordome",
            model=entry.data[CONF_MODEL],
            entry_type=dr.DeviceEntryType.SERVICE,
        )

    async def async_handle_turn(
        self, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog
    ) -> conversation.ConversationResult:
        """Answer one user message; failures become a short spoken sentence."""
        trace = TurnTrace()
        self.entry.runtime_data.last_turn = trace
        length_before = len(chat_log.content)
        response = intent.IntentResponse(language=user_input.language)
        try:
            speech = await self._async_run_turn(user_input, chat_log, trace)
            response.async_set_speech(speech)
        except Exception as err:  # noqa: BLE001 - HA must get an answer, never a traceback
            key = _error_key(err)
            trace.error = key
            if isinstance(err, backend.BackendError | prompt.PromptError):
                LOGGER.warning("Turn failed (%s): %s", key, err)
            else:
                LOGGER.exception("Unexpected error during a turn")
            speech = await async_spoken_message(self.hass, user_input.language, key)
            response.async_set_error(intent.IntentResponseErrorCode.UNKNOWN, speech)
            # A turn that already added messages (a tool ran) is closed with the
            # apology, so the history stays well formed; one that added nothing is
            # not stored at all, leaving the history as it was.
            if len(chat_log.content) > length_before:
                chat_log.async_add_assistant_content_without_tools(
                    conversation.AssistantContent(agent_id=user_input.agent_id, content=speech)
                )
        finally:
            trace.total_s = time.monotonic() - trace.started
            LOGGER.debug(
                "Turn: %.3fs total, %.3fs preparing, %d call(s) %s, %.3fs overhead",
                trace.total_s,
                trace.prepare_s,
                len(trace.completions),
                [
                    (round(s.first_token_s or 0, 3), round(s.total_s, 3), s.cache_n, s.prompt_n)
                    for s in trace.completions
                ],
                trace.overhead_s,
            )
        return conversation.ConversationResult(
            response=response,
            conversation_id=chat_log.conversation_id,
            continue_conversation=chat_log.continue_conversation,
        )

    async def _async_run_turn(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        trace: TurnTrace,
    ) -> str:
        """Run the tool loop and return the reply to speak."""
        options = self.entry.options
        api = await tools.MajordomeAPI(
            self.hass, include_assist=options.get(CONF_LLM_HASS_API) == LLM_API_ASSIST
        ).async_get_api_instance(llm_context_for(user_input))
        extra_system_prompt = user_input.extra_system_prompt or chat_log.extra_system_prompt
        system_prompt = prompt.build_system_prompt(
            self.hass,
            options.get(CONF_PROMPT) or prompt.default_instructions(user_input.language),
            api.api_prompt,
            extra_system_prompt,
        )
        chat_log.llm_api = api
        chat_log.extra_system_prompt = extra_system_prompt
        chat_log.content[0] = conversation.SystemContent(content=system_prompt)
        tool_specs = tools.format_tools(api)
        messages = prompt.build_messages(
            chat_log.content, int(options.get(CONF_MAX_HISTORY, DEFAULT_MAX_HISTORY))
        )
        trace.prepare_s = time.monotonic() - trace.started
        turn_start = len(chat_log.content)

        url = self.entry.data[CONF_URL]
        completion_args: dict[str, Any] = {
            "model": self.entry.data[CONF_MODEL],
            "tools": tool_specs,
            "temperature": float(options.get(CONF_TEMPERATURE, DEFAULT_TEMPERATURE)),
            "max_tokens": int(options.get(CONF_MAX_TOKENS, DEFAULT_MAX_TOKENS)),
            "extra_body": backend.cache_hints(url, f"{DOMAIN}-{self.entry.entry_id}"),
        }
        max_iterations = int(options.get(CONF_MAX_ITERATIONS, DEFAULT_MAX_ITERATIONS))
        for _ in range(max_iterations):
            stats = backend.StreamStats()
            trace.completions.append(stats)
            stream = backend.async_stream_completion(
                self.entry.runtime_data.client, messages=messages, stats=stats, **completion_args
            )
            try:
                async for content in chat_log.async_add_delta_content_stream(
                    user_input.agent_id, stream
                ):
                    messages.append(prompt.to_message(content))
            except backend.BackendError as err:
                # Small models often fall silent once the tools did the work: say so
                # rather than apologise for an action that happened.
                if err.kind is not backend.ErrorKind.EMPTY_REPLY or not _a_tool_succeeded(
                    chat_log, turn_start
                ):
                    raise
                return await self._async_answer_for_the_model(user_input, chat_log, "done")
            if not chat_log.unresponded_tool_results:
                break
        else:
            LOGGER.warning("Stopped after %d tool iterations", max_iterations)
            return await self._async_answer_for_the_model(user_input, chat_log, "iteration_limit")

        last = chat_log.content[-1]
        assert isinstance(last, conversation.AssistantContent)
        reply = last.content or ""
        if reply.lstrip()[:1] in ("{", "["):
            # A sentence never opens with a brace: small models echo tool results as
            # JSON. Speak for them, and keep the echo out of the history, where it
            # would invite more of the same.
            LOGGER.debug("Replacing a reply that is JSON, not speech: %s", reply[:200])
            chat_log.content.pop()
            succeeded = _a_tool_succeeded(chat_log, turn_start)
            key = "done" if succeeded else str(backend.ErrorKind.EMPTY_REPLY)
            return await self._async_answer_for_the_model(user_input, chat_log, key)
        return reply

    async def _async_answer_for_the_model(
        self, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog, key: str
    ) -> str:
        """End the turn with one of our sentences where the model gave none."""
        speech = await async_spoken_message(self.hass, user_input.language, key)
        chat_log.async_add_assistant_content_without_tools(
            conversation.AssistantContent(agent_id=user_input.agent_id, content=speech)
        )
        return speech


def _a_tool_succeeded(chat_log: conversation.ChatLog, turn_start: int) -> bool:
    """Whether a tool run during this turn succeeded (the model's stray calls aside)."""
    return any(
        isinstance(content, conversation.ToolResultContent)
        and "error" not in content.tool_result
        and content.tool_result.get("response_type") != "error"
        for content in chat_log.content[turn_start:]
    )


def _error_key(err: BaseException) -> str:
    """Return the translation key of the sentence that explains `err`."""
    if isinstance(err, backend.BackendError):
        return str(err.kind)
    if isinstance(err, prompt.PromptError):
        return "template_error"
    return str(backend.ErrorKind.UNKNOWN)
