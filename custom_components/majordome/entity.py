"""One turn of conversation: the place where the parts of the brain meet.

metacognition (drop what was not meant for us) -> local (Home Assistant's own sentences
answer the commands it recognises exactly, in milliseconds) -> prompt (stable system prompt, memory
last) -> tools (one llm.API) -> routing (a simple request to the fast model first, the main
model when it fails) -> backend (a stream of deltas) -> the chat log runs the
tool calls -> back to the model until it answers -> onboarding (the introduction
question, the re-summary of the dynamic memory).
Every failure ends as a short sentence in the user's language, never as an exception
into Home Assistant, and the history keeps its shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
import dataclasses
from dataclasses import dataclass
import functools
import time
from typing import Any

import openai

from homeassistant.components import conversation
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import CONF_MODEL, CONF_URL
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, intent, translation
from homeassistant.helpers.entity import Entity

from . import (
    backend,
    compat,
    local,
    memory,
    metacognition,
    onboarding,
    pacing,
    prompt,
    routing,
    tools,
    truth,
)
from .const import (
    CONF_ALLOWED_SCRIPTS,
    CONF_FAST_MODEL,
    CONF_FAST_URL,
    CONF_IGNORED_EVENT_TEXT,
    CONF_LLM_HASS_API,
    CONF_LOCAL_INTENTS,
    CONF_MAX_HISTORY,
    CONF_MAX_ITERATIONS,
    CONF_MAX_TOKENS,
    CONF_MEMORY_EVERY,
    CONF_PROMPT,
    CONF_SCREEN_LLM,
    CONF_SCREEN_TYPED,
    CONF_SCREEN_VOICE,
    CONF_TEMPERATURE,
    CONF_TIMEOUT,
    DEFAULT_ALLOWED_SCRIPTS,
    DEFAULT_LOCAL_INTENTS,
    DEFAULT_MAX_HISTORY,
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_MAX_TOKENS,
    DEFAULT_MEMORY_EVERY,
    DEFAULT_TEMPERATURE,
    DEFAULT_TIMEOUT,
    DOMAIN,
    EVENT_UTTERANCE_IGNORED,
    LLM_API_ASSIST,
    LOGGER,
    MAX_UTTERANCE_CHARS,
    SCREEN_TIMEOUT,
)
from .models import SPOKEN_INPUT, MajordomeConfigEntry, TurnTrace


async def async_spoken_message(hass: HomeAssistant, language: str | None, key: str) -> str:
    """Return a sentence from the `exceptions` translations, in the user's language."""
    strings = await translation.async_get_translations(
        hass, prompt.base_language(language), "exceptions", {DOMAIN}
    )
    return strings.get(f"component.{DOMAIN}.exceptions.{key}.message", key)


@dataclass
class PreparedTurn:
    """What is sent to the model this turn, built once and grown as tools run."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    completion_args: dict[str, Any]
    turn_start: int  # index in the chat log where this turn's model output begins


@dataclass(frozen=True)
class ModelChoice:
    """A model a turn may be given to: the fast one or the main one, on its server."""

    role: str  # "fast" or "main"
    name: str
    url: str
    client: openai.AsyncOpenAI


# Majordome's own answer where the model gave none: a sentence's translation key, or a
# tool's ready sentence: ("done", "") after an action, ("", "It is 5 pm.") after the time.
# A ready sentence wins over the key; the key "done" marks a claim that something was done.
type OwnAnswer = truth.OwnAnswer


class _Ignored(Exception):
    """The utterance was not meant for the agent: end the turn silently."""


class _TooLong(Exception):
    """The user's message is over MAX_UTTERANCE_CHARS: refused, it never reaches the model."""


class MajordomeEntity(Entity):
    """Base of Majordome's entities: one device per agent, and the turn logic.

    The agent's settings (model, instructions, options) are its subentry's; the server,
    the client and the household's memory are the entry's, shared by its agents.
    """

    _attr_has_entity_name = True
    _attr_name = None

    def __init__(self, entry: MajordomeConfigEntry, subentry: ConfigSubentry) -> None:
        """Attach to the agent's device."""
        self.entry = entry
        self.subentry = subentry
        # Held for the entity's life: a turn still running while the entry reloads
        # (reconfigure) ends on it, after Home Assistant removed the entry's.
        self.runtime = entry.runtime_data
        self._attr_unique_id = subentry.subentry_id
        self._attr_device_info = dr.DeviceInfo(
            identifiers={(DOMAIN, subentry.subentry_id)},
            name=subentry.title,
            manufacturer="Majordome",
            model=subentry.data[CONF_MODEL],
            entry_type=dr.DeviceEntryType.SERVICE,
        )
        # The entry's client, with this agent's patience.
        timeout = float(subentry.data.get(CONF_TIMEOUT, DEFAULT_TIMEOUT))
        self.client: openai.AsyncOpenAI = self.runtime.client.with_options(timeout=timeout)
        fast_client = self.runtime.fast_clients.get(subentry.subentry_id, self.runtime.client)
        self.fast_client: openai.AsyncOpenAI = fast_client.with_options(timeout=timeout)

    @property
    def options(self) -> Mapping[str, Any]:
        """The agent's options."""
        return self.subentry.data

    async def async_handle_turn(
        self, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog
    ) -> conversation.ConversationResult:
        """Answer one user message; failures become a short spoken sentence."""
        trace = TurnTrace()
        self.runtime.last_turn = trace
        length_before = len(chat_log.content)
        response = intent.IntentResponse(language=user_input.language)
        author = memory.AUTHOR.set(await onboarding.async_author(self.hass, user_input))
        watch = truth.ChangeWatch(self.hass, user_input.context)
        try:
            _refuse_too_long(user_input, chat_log)
            self._screen_by_rules(user_input, chat_log, trace)
            speech = await self._async_try_locally(user_input, chat_log, trace, watch)
            if speech is None:
                speech = await self._async_model_turn(user_input, chat_log, trace, watch)
            response.async_set_speech(speech)
        except asyncio.CancelledError:
            # Home Assistant 2026.11 keeps a cancelled turn in its live chat log (and
            # adds its own note of the error): not this turn's half-done tool chatter.
            del chat_log.content[length_before:]
            raise
        except _Ignored:
            # Nothing was added to the chat log, so it is not stored: the history
            # stays clean, and an empty speech makes the voice pipeline skip TTS.
            pass
        except Exception as err:  # noqa: BLE001 - HA must get an answer, never a traceback
            speech = await self._async_apologize(user_input, chat_log, err, trace, length_before)
            response.async_set_error(intent.IntentResponseErrorCode.UNKNOWN, speech)
        finally:
            watch.async_close()
            memory.AUTHOR.reset(author)
            _close_trace(trace)
        return conversation.ConversationResult(
            response=response,
            conversation_id=chat_log.conversation_id,
            continue_conversation=chat_log.continue_conversation,
        )

    async def _async_try_locally(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        trace: TurnTrace,
        watch: truth.ChangeWatch,
    ) -> str | None:
        """Home Assistant's own sentences first: what it said when it handled the command.

        Its answer is said (streamed) into the chat log like the model's, so a follow-up
        has it as history; None: the model takes the turn.
        """
        # On 2026.x, a pipeline's failed local attempt is left in the chat log.
        pipeline_tried = compat.drop_pipeline_attempt(chat_log, user_input.text)
        result: local.LocalResult | None = None
        if not self.options.get(CONF_LOCAL_INTENTS, DEFAULT_LOCAL_INTENTS):
            trace.local = local.LocalOutcome.OFF
        elif pipeline_tried:
            trace.local = local.LocalOutcome.PIPELINE
        else:
            await pacing.async_wait_pass(self.hass)  # many turns at once: a few per pass
            started = time.monotonic()
            result = await local.async_try(self.hass, user_input, chat_log)
            trace.local_s = time.monotonic() - started
            trace.local, trace.local_intent = result.outcome, result.intent
        if result is None or result.outcome is not local.LocalOutcome.HANDLED:
            local.async_forget(self.hass, chat_log.conversation_id)  # the model's turn
            return None
        said: OwnAnswer = ("done" if result.acted or not result.speech else "", result.speech)
        evidence = truth.Evidence(targets=result.targets, other_action=not result.targets)
        answer = await self._async_keep_truthful(user_input, chat_log, watch, evidence, said)
        return await self._async_answer(user_input, chat_log, answer)

    async def _async_model_turn(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        trace: TurnTrace,
        watch: truth.ChangeWatch,
    ) -> str:
        """The model's turn: prompt, screening by a model, tools, memory; its answer."""
        await pacing.async_wait_pass(self.hass)  # many turns at once: a few per pass
        turn = await self._async_prepare(user_input, chat_log, trace)
        await self._async_screen_with_model(user_input, chat_log, turn, trace)
        if await self._async_read_introduction(user_input, chat_log, turn):
            return await self._async_answer(user_input, chat_log, ("profile_saved", ""))
        answer = await self._async_cascade(user_input, chat_log, turn, trace)
        evidence = truth.evidence_from_tools(chat_log, turn.turn_start)
        said = await self._async_keep_truthful(user_input, chat_log, watch, evidence, answer)
        if said is not answer and isinstance(answer, str):
            turn.messages.pop()  # nor does the memory's summary read the untrue reply
        speech = await self._async_answer(user_input, chat_log, said)
        return await self._async_remember(user_input, chat_log, turn, speech)

    async def _async_prepare(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        trace: TurnTrace,
    ) -> PreparedTurn:
        """Build the tools, the cache-stable system prompt and the messages."""
        options = self.options
        api = await tools.MajordomeAPI(
            self.hass,
            include_assist=options.get(CONF_LLM_HASS_API) == LLM_API_ASSIST,
            memory=self.runtime.memory,
            utterance=user_input.text,
        ).async_get_api_instance(compat.llm_context(user_input, DOMAIN))
        # Turns that waited together there (a platform loading) resume together.
        await pacing.async_wait_pass(self.hass)
        extra_system_prompt = user_input.extra_system_prompt or chat_log.extra_system_prompt
        language = prompt.base_language(user_input.language)
        system_prompt = prompt.build_system_prompt(
            self.hass,
            options.get(CONF_PROMPT) or prompt.default_instructions(language),
            api.api_prompt,
            extra_system_prompt,
            memory.prompt_block(self.runtime.memory.memory, language),
        )
        chat_log.llm_api = api
        chat_log.extra_system_prompt = extra_system_prompt
        chat_log.content[0] = conversation.SystemContent(content=system_prompt)
        tool_specs = tools.format_tools(api)
        url = self.entry.data[CONF_URL]
        turn = PreparedTurn(
            messages=prompt.build_messages(
                chat_log.content, int(options.get(CONF_MAX_HISTORY, DEFAULT_MAX_HISTORY))
            ),
            tools=tool_specs,
            completion_args={
                "model": options[CONF_MODEL],
                "tools": tool_specs,
                "temperature": float(options.get(CONF_TEMPERATURE, DEFAULT_TEMPERATURE)),
                "max_tokens": int(options.get(CONF_MAX_TOKENS, DEFAULT_MAX_TOKENS)),
                "extra_body": backend.cache_hints(url, self._cache_key),
            },
            turn_start=len(chat_log.content),
        )
        trace.prepare_s = time.monotonic() - trace.started - trace.screen_s - trace.local_s
        return turn

    # --- The cascade (routing.py) -------------------------------------------------

    def _main_model(self) -> ModelChoice:
        return ModelChoice("main", self.options[CONF_MODEL], self.entry.data[CONF_URL], self.client)

    def _fast_model(self) -> ModelChoice | None:
        """The agent's fast model, None when it has none (no cascade)."""
        if not (name := self.options.get(CONF_FAST_MODEL)):
            return None
        url = self.options.get(CONF_FAST_URL) or self.entry.data[CONF_URL]
        return ModelChoice("fast", name, url, self.fast_client)

    async def _async_cascade(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        turn: PreparedTurn,
        trace: TurnTrace,
    ) -> str | OwnAnswer:
        """A simple request to the fast model first; the main model takes the rest.

        And the fast model's failed turns, once, from where the turn began.
        """
        fast = self._fast_model()
        route = (
            routing.Route.NO_CASCADE
            if fast is None
            else routing.route(
                user_input.text,
                _last_reply(chat_log, turn.turn_start),
                routing.house_names(self.hass),
            )
        )
        trace.route = str(route)
        model = self._main_model()
        answer: str | OwnAnswer | None = None
        if fast is not None and route is routing.Route.FAST:
            answer = await self._async_fast_turn(user_input, chat_log, turn, trace, fast)
            model = model if answer is None else fast
        if answer is None:
            answer = await self._async_tool_loop(user_input, chat_log, turn, trace, model)
        trace.answered_by = model.role
        self.runtime.model_turns[model.role] += 1
        return answer

    async def _async_fast_turn(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        turn: PreparedTurn,
        trace: TurnTrace,
        fast: ModelChoice,
    ) -> str | OwnAnswer | None:
        """The fast model's turn, or None when it failed and left no trace.

        What it streams is held until it is known to stand: a listener (the Assist
        dialog, a pipeline's speech) never gets the words of an attempt taken again.
        """
        messages = list(turn.messages)
        listener = chat_log.delta_listener
        held: list[dict[str, Any]] = []
        chat_log.delta_listener = lambda _, delta: held.append(delta)
        answer: str | OwnAnswer | None = None
        try:
            answer = await self._async_tool_loop(user_input, chat_log, turn, trace, fast)
        except backend.BackendError as err:
            if routing.summarize(chat_log.content[turn.turn_start :]).acted:
                raise  # an action ran: never twice
            LOGGER.debug("The fast model failed (%s): the main model takes the turn", err.kind)
            failure: routing.Failure | None = routing.Failure.SERVER_ERROR
        else:
            reply = answer if isinstance(answer, str) else answer[1] or None
            summary = routing.summarize(chat_log.content[turn.turn_start :])
            failure = routing.failure(summary, reply)
        finally:
            chat_log.delta_listener = listener
        if failure is None and answer is not None:
            if listener is not None:
                for delta in held:
                    listener(chat_log, delta)
            return answer
        LOGGER.debug("The fast model's turn failed (%s): the main model takes it", failure)
        trace.fast_failure = str(failure)
        self.runtime.model_turns["fast_failed"] += 1
        del chat_log.content[turn.turn_start :]
        turn.messages[:] = messages
        return None

    @property
    def _cache_key(self) -> str:
        """The agent's prompt-cache key, for servers that take one."""
        return f"{DOMAIN}-{self.subentry.subentry_id}"

    async def _async_tool_loop(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        turn: PreparedTurn,
        trace: TurnTrace,
        model: ModelChoice,
    ) -> str | OwnAnswer:
        """Call the model, let the chat log run its tools, until it answers in words.

        Its words, or what Majordome says for it when it falls silent, fails after a
        tool or goes round in circles.
        """
        max_iterations = int(self.options.get(CONF_MAX_ITERATIONS, DEFAULT_MAX_ITERATIONS))
        calls = 0
        trimmed = False
        while calls < max_iterations:
            calls += 1
            await pacing.async_wait_pass(self.hass)  # building the request costs CPU too
            stats = backend.StreamStats()
            trace.completions.append(stats)
            stream = backend.async_stream_completion(
                model.client,
                messages=turn.messages,
                stats=stats,
                **{
                    **turn.completion_args,
                    "model": model.name,
                    "extra_body": backend.cache_hints(model.url, self._cache_key),
                },
            )
            try:
                async for content in chat_log.async_add_delta_content_stream(
                    user_input.agent_id, stream
                ):
                    turn.messages.append(prompt.to_message(content))
            except backend.BackendError as err:
                if (
                    err.kind is backend.ErrorKind.CONTEXT_TOO_LONG
                    and not trimmed
                    and (shorter := prompt.without_old_turns(turn.messages))
                ):
                    LOGGER.warning("The history no longer fits the context: sending this turn only")
                    turn.messages[:] = shorter
                    trimmed = True
                    calls -= 1
                    continue
                # Once an action succeeded, a model that falls silent or a follow-up
                # call that fails (small models, llama.cpp's tool-call parser) should
                # not make the user hear an apology for something that happened; nor,
                # when it fell silent, hear of the model rather than of a refused action.
                if err.kind is backend.ErrorKind.EMPTY_REPLY:
                    answer = _answer_for_silence(chat_log, turn.turn_start)
                else:
                    answer = _answer_from_tools(chat_log, turn.turn_start)
                if not answer:
                    raise
                LOGGER.debug("Follow-up failed after a tool (%s): answering for the model", err)
                return answer
            finally:
                # A turn cancelled while the stream waits at a chunk (a barge-in) closes
                # the request now, not when the collector finds the stream.
                await stream.aclose()
            if not chat_log.unresponded_tool_results:
                break
            if _repeats_itself(chat_log, turn.turn_start):
                # Small models loop on the same call; each lap grows the prompt.
                LOGGER.debug("The model repeats its tool calls: ending the turn")
                return _answer_for_silence(chat_log, turn.turn_start) or ("iteration_limit", "")
        else:
            LOGGER.warning("Stopped after %d tool iterations", max_iterations)
            return ("iteration_limit", "")

        last = chat_log.content[-1]
        assert isinstance(last, conversation.AssistantContent)
        return last.content or ""

    async def _async_answer(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        answer: str | OwnAnswer,
    ) -> str:
        """The model's words, already said; else one of our sentences (or a tool's), said now."""
        if isinstance(answer, str):
            return answer
        key, speech = answer
        speech = speech or await async_spoken_message(self.hass, user_input.language, key)
        await _async_say(chat_log, user_input.agent_id, speech)
        return speech

    async def _async_keep_truthful(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        watch: truth.ChangeWatch,
        evidence: truth.Evidence,
        answer: str | OwnAnswer,
    ) -> str | OwnAnswer:
        """Truthful endings (truth.py): "Done" only after a change, the date from the clock.

        A model's reply found untrue leaves the chat log; what replaces it is said
        (and kept in the history) as Majordome's own sentences are.
        """
        claimed = truth.claims_done(answer) if isinstance(answer, str) else answer[0] == "done"
        truer = await truth.async_truthful(watch, evidence, user_input, answer, claimed=claimed)
        if truer is None:
            return answer
        LOGGER.debug("Not saying %r: %r instead", answer, truer)
        last = chat_log.content[-1]
        if isinstance(answer, str) and isinstance(last, conversation.AssistantContent):
            chat_log.content.pop()
        return truer

    async def _async_apologize(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        err: Exception,
        trace: TurnTrace,
        length_before: int,
    ) -> str:
        """Log a failed turn, and say (and return) the short sentence that explains it."""
        key = _error_key(err)
        trace.error = key
        if isinstance(err, _TooLong):
            LOGGER.warning("Refused a message of %d characters: %s", len(user_input.text), err)
        elif isinstance(err, backend.BackendError | prompt.PromptError):
            LOGGER.warning("Turn failed (%s): %s", key, err)
        else:
            LOGGER.exception("Unexpected error during a turn")
        speech = await async_spoken_message(self.hass, user_input.language, key)
        # A turn that added messages (a tool ran) is stored as the question and
        # the apology: its tool chatter would only weigh on every later prompt.
        # A turn that added nothing is not stored at all where the release allows
        # it: the history is as it was. A live chat log keeps the apology the user
        # heard (without it, Home Assistant would note "(no response)").
        # Either way the apology streams, to be heard where the reply was.
        added = len(chat_log.content) > length_before
        del chat_log.content[length_before:]
        await _async_say(chat_log, user_input.agent_id, speech)
        if not added and not compat.chat_log_is_live(chat_log):
            del chat_log.content[length_before:]
        return speech

    # --- Metacognition ------------------------------------------------------------

    def _screening_applies(self, user_input: conversation.ConversationInput) -> bool:
        """Voice input (a satellite, the voice endpoint) is screened by default; typed opts in."""
        from_voice = user_input.device_id is not None or SPOKEN_INPUT.get()
        option = CONF_SCREEN_VOICE if from_voice else CONF_SCREEN_TYPED
        return bool(self.options.get(option, from_voice))

    def _screen_by_rules(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        trace: TurnTrace,
    ) -> None:
        """Stage 1, before anything else: microseconds, no model."""
        if not self._screening_applies(user_input):
            return
        started = time.monotonic()
        scripts = frozenset(self.options.get(CONF_ALLOWED_SCRIPTS, DEFAULT_ALLOWED_SCRIPTS))
        verdict = metacognition.screen_rules(user_input.text, scripts)
        trace.screen_s += time.monotonic() - started
        if verdict.ignore:
            self._ignore(user_input, chat_log, verdict)

    async def _async_screen_with_model(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        turn: PreparedTurn,
        trace: TurnTrace,
    ) -> None:
        """Stage 2, optional: ask a model whether this was meant for the butler."""
        if not (self._screening_applies(user_input) and self.options.get(CONF_SCREEN_LLM)):
            return
        started = time.monotonic()
        main = self._main_model()
        model = self._fast_model() or main
        same_model = (model.name, model.url) == (main.name, main.url)
        verdict = await metacognition.async_check_with_llm(
            model.client,
            model=model.name,
            # The main call's prefix (and tools, for the same model) keeps the
            # server's cache warm for the turn that follows.
            prefix_messages=turn.messages[:-1],
            tools=turn.tools if same_model else None,
            utterance=user_input.text,
            language=user_input.language,
            timeout=SCREEN_TIMEOUT,
            extra_body=backend.cache_hints(model.url, self._cache_key),
        )
        trace.screen_s += time.monotonic() - started
        if verdict.ignore:
            self._ignore(user_input, chat_log, verdict)

    def _ignore(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        verdict: metacognition.Verdict,
    ) -> None:
        """Tell automations why, count it for diagnostics, and end the turn silently."""
        LOGGER.debug(
            "Ignoring %r: %s (stage %d)", user_input.text[:200], verdict.reason, verdict.stage
        )
        self.runtime.ignored[str(verdict.reason)] += 1
        # The chat log got the utterance on its way in. Whoever opened the log (a
        # plain converse, HA's pipeline, the voice endpoint), an ignored one leaves
        # no trace in the history.
        last = chat_log.content[-1]
        if isinstance(last, conversation.UserContent) and last.content == user_input.text:
            chat_log.content.pop()
        # The recorder stores events: what was overheard (and what of it matched) only
        # if the user opts in.
        event: dict[str, Any] = {
            "reason": str(verdict.reason),
            "stage": verdict.stage,
            "length": len(user_input.text),
            "agent_id": user_input.agent_id,
            "device_id": user_input.device_id,
            "conversation_id": chat_log.conversation_id,
            "language": user_input.language,
        }
        if self.options.get(CONF_IGNORED_EVENT_TEXT, False):
            event.update(text=user_input.text, detail=verdict.detail)
        self.hass.bus.async_fire(EVENT_UTTERANCE_IGNORED, event, context=user_input.context)
        raise _Ignored

    # --- Memory (onboarding.py) ---------------------------------------------------

    async def _async_read_introduction(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        turn: PreparedTurn,
    ) -> bool:
        """Whether this message answered the introduction question and became the profile."""
        return await onboarding.async_read_introduction(
            self.runtime.memory, self.client, chat_log, user_input, turn
        )

    async def _async_remember(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
        turn: PreparedTurn,
        reply: str,
    ) -> str:
        """Ask the introduction question once; re-summarise the dynamic memory every N turns."""
        store = self.runtime.memory
        if onboarding.introduction_due(store.memory, user_input):
            question = await async_spoken_message(self.hass, user_input.language, "introduction")
            say = functools.partial(_async_say, chat_log, user_input.agent_id)
            reply = await onboarding.async_ask_introduction(store, chat_log, reply, question, say)
        every = int(self.options.get(CONF_MEMORY_EVERY, DEFAULT_MEMORY_EVERY))
        onboarding.maybe_schedule_summary(store, self.client, every, turn)
        return reply


async def _async_say(chat_log: conversation.ChatLog, agent_id: str, speech: str) -> None:
    """Add one of Majordome's own sentences as the model's are added: streamed.

    Home Assistant 2025.6+ speaks a reply's deltas once about 60 characters have
    streamed, and then never its final speech: a sentence added after the model's
    stream (an apology, "Done.", the introduction question) must stream too.
    """

    async def message() -> AsyncGenerator[conversation.AssistantContentDeltaDict]:
        yield {"role": "assistant"}
        yield {"content": speech}

    async for _ in chat_log.async_add_delta_content_stream(agent_id, message()):
        pass


def _last_reply(chat_log: conversation.ChatLog, turn_start: int) -> str | None:
    """What the agent said last before this turn, None when it has not spoken yet."""
    for content in reversed(chat_log.content[:turn_start]):
        if isinstance(content, conversation.AssistantContent) and content.content:
            return content.content
    return None


def _an_action_succeeded(chat_log: conversation.ChatLog, turn_start: int) -> bool:
    """Whether a tool acted during this turn and said it succeeded ("action_done").

    Queries (the time, the live context) do not count: their answer is the data, which
    only the model can put into words.
    """
    for content in chat_log.content[turn_start:]:
        if not isinstance(content, conversation.ToolResultContent):
            continue
        result = compat.result_data(content)
        data = result.get("data")
        succeeded = data.get("success") if isinstance(data, dict) else True
        if result.get("response_type") == "action_done" and succeeded:
            return True
    return False


def _answer_from_tools(chat_log: conversation.ChatLog, turn_start: int) -> OwnAnswer | None:
    """What to say for a model that gave no answer after its tools worked, if anything.

    ("done", "") after an action; ("", sentence) after one of Majordome's own queries,
    whose result carries its answer ready to say (the time, the date). Other queries'
    answers are data only the model can put into words: None.
    """
    if _an_action_succeeded(chat_log, turn_start):
        return ("done", "")
    for content in reversed(chat_log.content[turn_start:]):
        if (
            isinstance(content, conversation.ToolResultContent)
            and compat.base_tool_name(content.tool_name) in tools.SPOKEN_TOOLS
            and isinstance(speech := compat.result_data(content).get(tools.SPEECH_KEY), str)
            and speech
        ):
            return ("", speech)
    return None


def _answer_for_silence(chat_log: conversation.ChatLog, turn_start: int) -> OwnAnswer | None:
    """What to say for a model that fell silent or went round in circles.

    What its tools did, as above; else, when the last tool refused (a temperature out
    of range, no such device), that it was not done: the user hears the truth about
    the house rather than that the model said nothing.
    """
    if answer := _answer_from_tools(chat_log, turn_start):
        return answer
    for content in reversed(chat_log.content[turn_start:]):
        if isinstance(content, conversation.ToolResultContent):
            return ("action_failed", "") if compat.result_failed(content) else None
    return None


def _repeats_itself(chat_log: conversation.ChatLog, turn_start: int) -> bool:
    """Whether the model's last tool calls were all made already during this turn."""
    steps = [
        [(call.tool_name, call.tool_args) for call in content.tool_calls]
        for content in chat_log.content[turn_start:]
        if isinstance(content, conversation.AssistantContent) and content.tool_calls
    ]
    if len(steps) < 2:
        return False
    earlier = [call for step in steps[:-1] for call in step]
    return all(call in earlier for call in steps[-1])


def _refuse_too_long(
    user_input: conversation.ConversationInput, chat_log: conversation.ChatLog
) -> None:
    """Refuse a message too long to read; the history keeps a short note in its place.

    The note, not the text: the next turns' prompts stay small, and the question the
    refusal answers is still there.
    """
    if len(user_input.text) <= MAX_UTTERANCE_CHARS:
        return
    for index in range(len(chat_log.content) - 1, 0, -1):
        content = chat_log.content[index]
        if isinstance(content, conversation.UserContent) and content.content == user_input.text:
            note = f"({len(user_input.text)} characters, too long to read)"
            chat_log.content[index] = dataclasses.replace(content, content=note)
            break
    raise _TooLong(f"over {MAX_UTTERANCE_CHARS} characters")


def _error_key(err: BaseException) -> str:
    """Return the translation key of the sentence that explains `err`."""
    if isinstance(err, _TooLong):
        return "input_too_long"
    if isinstance(err, backend.BackendError):
        return str(err.kind)
    if isinstance(err, prompt.PromptError):
        return "template_error"
    return str(backend.ErrorKind.UNKNOWN)


def _close_trace(trace: TurnTrace) -> None:
    """Note the turn's total time, and log where it went."""
    trace.total_s = time.monotonic() - trace.started
    LOGGER.debug(
        "Turn: %.3fs total, %.3fs screening, local %s (%s) in %.3fs, %.3fs preparing, "
        "%d call(s) %s, %.3fs overhead",
        trace.total_s,
        trace.screen_s,
        trace.local,
        trace.local_intent,
        trace.local_s,
        trace.prepare_s,
        len(trace.completions),
        [
            (round(s.first_token_s or 0, 3), round(s.total_s, 3), s.cache_n, s.prompt_n)
            for s in trace.completions
        ],
        trace.overhead_s,
    )
