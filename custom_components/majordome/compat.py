"""What differs between the Home Assistant releases Majordome supports (2025.4 to the newest).

Found by feature detection, in one place: the rest of the code speaks one dialect.

- Tool schemas: voluptuous-openapi until 2026.8, probatio from 2026.9 (which no longer
  ships voluptuous-openapi).
- Tool names: `HassTurnOn` until 2026.8, `intent__HassTurnOn` from 2026.9. Majordome
  matches names by their base (`base_tool_name`), whatever the prefix, and shows the model
  the base names where they are unique (`shown_tool_names`).
- Tool results: a JSON object until 2026.9, an `llm.ToolResult(data, error)` from 2026.10,
  read back from `ToolResultContent.result` instead of `.tool_result`.
- The date and time: Assist offers `GetDateTime` from 2025.11; Majordome's own clock tools
  are only offered where it does not.
- Chat sessions: an owner context from 2026.11 (another user's context raises
  `Unauthorized`); a second turn in a busy conversation raises `ConversationBusyError`
  from 2026.11.
- Home Assistant's own intents (the local stage): `conversation.async_handle_intents`
  takes the chat log from 2026.x (and records its tool call and result there), not in
  2025.4. The pipeline's "prefer handling commands locally" leaves its failed attempt and
  the question a second time in the chat log on 2026.x (`drop_pipeline_attempt`).
  From 2026.10 the built-in agent falls back on a gazetteer of the home (English) for
  wordings and near-miss names its sentences do not have; `async_gazetteer_intents`
  runs it where it exists.
- Devices: moved onto a config subentry with `add_`/`remove_config_subentry_id` until
  2025.6, `new_config_subentry_id` later; found by identifier with `async_get_device`
  until 2026.9, `async_get_device_by_identifier` (scoped to one entry) later. The former
  are deprecated and reported from 2026.10.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
import dataclasses
import inspect
from typing import Any

from hassil.recognize import RecognizeResult

from homeassistant.components import conversation
from homeassistant.components.conversation.agent_manager import get_agent_manager
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import Unauthorized
from homeassistant.helpers import chat_session, device_registry as dr, intent, llm
from homeassistant.util.json import JsonObjectType

from .const import LOGGER

try:  # Home Assistant 2026.9+
    import probatio

    _BOOLEAN = inspect.unwrap(probatio.Boolean)

    def _serializer(custom: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
        """Home Assistant's serializer, knowing probatio's Boolean() (rendered untyped)."""

        def serialize(value: Any) -> Any:
            if callable(value) and inspect.unwrap(value) is _BOOLEAN:
                return {"type": "boolean"}
            return custom(value) if custom else probatio.UNSUPPORTED

        return serialize

    def _to_openapi(schema: Any, custom_serializer: Callable[[Any], Any] | None) -> Any:
        return probatio.to_openapi(
            schema, custom_serializer=_serializer(custom_serializer), openapi_version="3.1.0"
        )

except ImportError:  # Home Assistant 2025.4 - 2026.8
    from voluptuous_openapi import convert

    def _to_openapi(schema: Any, custom_serializer: Callable[[Any], Any] | None) -> Any:
        return convert(schema, custom_serializer=custom_serializer)


# Keys that say what a JSON schema accepts; a property with none of them (only a
# description) makes llama.cpp refuse the whole request ("Unrecognized schema").
_SCHEMA_KINDS = frozenset(
    {"type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "properties", "items"}
)


def tool_schema(schema: Any, custom_serializer: Callable[[Any], Any] | None) -> Any:
    """A tool's parameters as an OpenAPI schema every server takes.

    A property whose validator the converter cannot describe is sent as a string: the
    tool's own validation still checks (and coerces) what the model writes.
    """
    converted = _to_openapi(schema, custom_serializer)
    for name, prop in (converted.get("properties") or {}).items():
        if isinstance(prop, dict) and not prop.keys() & _SCHEMA_KINDS:
            prop["type"] = "string"
            LOGGER.debug("Tool parameter %s has no type in its schema: sent as a string", name)
    return converted


# --- Tool names -------------------------------------------------------------------

TOOL_PREFIX_SEPARATOR = "__"


def base_tool_name(name: str) -> str:
    """A tool's name without the integration prefix of 2026.9+: HassTurnOn."""
    return name.rpartition(TOOL_PREFIX_SEPARATOR)[2]


def tool_named(name: str, tool_names: list[str]) -> str | None:
    """The real tool a name designates: itself, or the one tool with that base name.

    Small models write `HassTurnOn` for `intent__HassTurnOn` (and the reverse).
    """
    if name in tool_names:
        return name
    wanted = base_tool_name(name)
    matches = [real for real in tool_names if base_tool_name(real) == wanted]
    return matches[0] if len(matches) == 1 else None


def shown_tool_names(tool_names: Iterable[str]) -> dict[str, str]:
    """The name the model sees for each tool: its base name where no other tool has it.

    The names models were trained on and 2025.4 sent (fewer tokens, no namespace to copy
    into arguments). Not a measured gain: on HA 2026.11.0 the embedded 0.5B model made 2
    right calls out of 12 with them, 3 before (bench prompt-cache), within its noise.
    The model's calls come back by base name, which `tool_named` maps to the real tool.
    """
    names = list(tool_names)
    bases = Counter(base_tool_name(name) for name in names)
    return {
        name: base_tool_name(name) if bases[base_tool_name(name)] == 1 else name for name in names
    }


def with_shown_names(text: str, shown: Mapping[str, str]) -> str:
    """`text` (Home Assistant's tool instructions) naming the tools as the model sees them."""
    for real in sorted(shown, key=len, reverse=True):  # intent__X before a shorter X
        if shown[real] != real:
            text = text.replace(real, shown[real])
    return text


# --- Tool results -----------------------------------------------------------------

HAS_TOOL_RESULT = hasattr(llm, "ToolResult")
_RESULT_IS_FIELD = "result" in {f.name for f in dataclasses.fields(conversation.ToolResultContent)}


def tool_result(data: JsonObjectType) -> Any:
    """What a tool returns: an `llm.ToolResult` where it exists, else the JSON object."""
    return llm.ToolResult(data=data) if HAS_TOOL_RESULT else data  # type: ignore[attr-defined]


def result_data(content: conversation.ToolResultContent) -> JsonObjectType:
    """The JSON object of a tool's result, as the model reads it."""
    if _RESULT_IS_FIELD:
        data: JsonObjectType = content.result.data  # type: ignore[attr-defined]
        return data
    return content.tool_result


def result_failed(content: conversation.ToolResultContent) -> bool:
    """Whether the tool failed (HA writes {"error": ..., "error_text": ...})."""
    if _RESULT_IS_FIELD and content.result.error:  # type: ignore[attr-defined]
        return True
    return "error" in result_data(content)


def as_data(result: Any) -> JsonObjectType:
    """The JSON object of what `APIInstance.async_call_tool` returned, on any release."""
    if HAS_TOOL_RESULT and isinstance(result, llm.ToolResult):  # type: ignore[attr-defined]
        data: JsonObjectType = result.data
        return data
    assert isinstance(result, dict)
    return result


# --- Contexts and sessions ---------------------------------------------------------

_LLM_CONTEXT_FIELDS = {f.name for f in dataclasses.fields(llm.LLMContext)}


def llm_context(user_input: conversation.ConversationInput, domain: str) -> llm.LLMContext:
    """The context tools run in: Assist's, so exposure rules apply.

    LLMContext lost `user_prompt` in 2025.7 and gained `agent_id` in 2026.11: it is
    built from the fields this release has.
    """
    values: dict[str, Any] = {
        "platform": domain,
        "context": user_input.context,
        "user_prompt": user_input.text,
        "language": user_input.language,
        "assistant": conversation.DOMAIN,
        "device_id": user_input.device_id,
        "agent_id": user_input.agent_id,
    }
    return llm.LLMContext(**{k: v for k, v in values.items() if k in _LLM_CONTEXT_FIELDS})


_INPUT_FIELDS = {f.name for f in dataclasses.fields(conversation.ConversationInput)}


def conversation_input(**values: Any) -> conversation.ConversationInput:
    """A ConversationInput from the fields this release has (`satellite_id`: 2025.10+)."""
    values.setdefault("satellite_id", None)
    return conversation.ConversationInput(
        **{key: value for key, value in values.items() if key in _INPUT_FIELDS}
    )


async def async_provide_llm_data(
    chat_log: conversation.ChatLog,
    user_input: conversation.ConversationInput,
    domain: str,
    api_id: str | None,
) -> None:
    """Let Home Assistant build its own system prompt and tools into the chat log.

    `async_provide_llm_data` from 2025.7 (and `async_update_llm_data` deprecated),
    only `async_update_llm_data` before. (Majordome builds its own; the benchmarks
    compare with Home Assistant's.)
    """
    if hasattr(chat_log, "async_provide_llm_data"):
        await chat_log.async_provide_llm_data(llm_context(user_input, domain), api_id, None)
    else:
        await chat_log.async_update_llm_data(domain, user_input, api_id, None)


_SESSION_TAKES_CONTEXT = (
    "context" in inspect.signature(chat_session.async_get_chat_session).parameters
)


@contextmanager
def chat_session_for(
    hass: HomeAssistant, conversation_id: str | None, context: Context
) -> Iterator[chat_session.ChatSession]:
    """A chat session, owned by the user's context where the release records it."""
    if _SESSION_TAKES_CONTEXT:
        session = chat_session.async_get_chat_session(hass, conversation_id, context=context)  # type: ignore[call-arg]
    else:
        session = chat_session.async_get_chat_session(hass, conversation_id)
    with session as opened:
        yield opened


# Raised by Home Assistant 2026.11+ when a user opens a conversation another user owns
# (the first user of a conversation owns it); before, conversations have no owner.
NOT_OWNER_ERRORS: tuple[type[Exception], ...] = (Unauthorized,) if _SESSION_TAKES_CONTEXT else ()

# Raised by Home Assistant 2026.11+ when a conversation already has a turn running.
BUSY_ERRORS: tuple[type[Exception], ...] = tuple(
    error
    for error in (getattr(conversation, "ConversationBusyError", None),)
    if isinstance(error, type) and issubclass(error, Exception)
)


def chat_log_is_live(chat_log: conversation.ChatLog) -> bool:
    """Whether the release keeps every turn in the chat log as it happens (2026.11+).

    A live chat log is the one the user sees: a turn that failed before any output keeps
    Majordome's apology there, or Home Assistant fills the gap with a note of its own.
    """
    return hasattr(chat_log, "turn_active")


# What Home Assistant 2026.11+ writes into a live chat log for a turn that ended without
# an answer: after no reply at all, and after a cancelled turn. Neither is the model's
# nor the user's words; a small model shown them copies them.
TURN_NOTES: frozenset[str] = frozenset({"(no response)", "Error: CancelledError"})


# --- Home Assistant's own intents -------------------------------------------------

_INTENTS_TAKE_CHAT_LOG = (
    "chat_log" in inspect.signature(conversation.async_handle_intents).parameters
)


async def async_handle_intents(
    hass: HomeAssistant,
    user_input: conversation.ConversationInput,
    chat_log: conversation.ChatLog,
    intent_filter: Callable[[RecognizeResult], bool],
) -> intent.IntentResponse | None:
    """Home Assistant's strict sentence matching on exposed entities, run if it matched.

    What the pipeline's "prefer handling commands locally" calls. From 2026.x it records
    the intent as a tool call and its result in the chat log; 2025.4 records nothing.
    """
    handle: Callable[..., Awaitable[intent.IntentResponse | None]] = (
        conversation.async_handle_intents
    )
    args = (hass, user_input, chat_log) if _INTENTS_TAKE_CHAT_LOG else (hass, user_input)
    return await handle(*args, intent_filter=intent_filter)


async def async_gazetteer_intents(
    hass: HomeAssistant, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog
) -> intent.IntentResponse | None:
    """The built-in agent's gazetteer fallback (2026.10+), run if it is sure; None if not.

    It reads a sentence against the exposed entities, areas and floors, acts only on an
    interpretation it accepts and can answer, and refuses the rest (an error response).
    None: no gazetteer in this release or language, or nothing recognised.
    """
    fallback = _gazetteer_fallback(hass)
    if fallback is None:
        return None
    return await fallback(None, user_input, chat_log)


def has_gazetteer(hass: HomeAssistant) -> bool:
    """Whether the built-in agent has a gazetteer fallback (2026.10+)."""
    return _gazetteer_fallback(hass) is not None


def _gazetteer_fallback(
    hass: HomeAssistant,
) -> Callable[..., Awaitable[intent.IntentResponse | None]] | None:
    agent = getattr(get_agent_manager(hass), "default_agent", None)
    fallback: Callable[..., Awaitable[intent.IntentResponse | None]] | None = getattr(
        agent, "_async_gazetteer_fallback", None
    )
    return fallback


def async_forget_local_targets(hass: HomeAssistant, conversation_id: str) -> None:
    """Make the built-in agent forget what "it" means in a conversation (2026.10+).

    Its gazetteer remembers the targets of the turns it (or its sentences) handled; a
    turn the model took is not among them.
    """
    agent = getattr(get_agent_manager(hass), "default_agent", None)
    forget = getattr(getattr(agent, "_gazetteer", None), "async_forget", None)
    if callable(forget):
        forget(conversation_id)


def pipeline_tried_locally(hass: HomeAssistant, context: Context) -> bool:
    """Whether an Assist pipeline that prefers local commands runs this turn.

    Such a pipeline ran Home Assistant's own matching before calling the agent, and
    called it only because nothing matched. Its runs are found by the context they give
    the agent (the same structure on every release, kept by `assist_pipeline`).
    """
    data = hass.data.get("assist_pipeline")
    runs = getattr(getattr(data, "pipeline_runs", None), "_pipeline_runs", None)
    if not isinstance(runs, dict):
        return False
    return any(
        getattr(run, "context", None) is not None
        and run.context.id == context.id
        and getattr(run.pipeline, "prefer_local_intents", False)
        for by_id in runs.values()
        for run in by_id.values()
    )


def drop_pipeline_attempt(chat_log: conversation.ChatLog, text: str) -> bool:
    """Remove what a pipeline's failed local attempt left in the chat log; say if it did.

    On 2026.x the pipeline opens the chat log with the question, its attempt adds an
    intent call and its (failed) result, then the agent's own chat log adds the question
    again: [question, call, result, question] becomes [question].
    """
    content = chat_log.content
    last = len(content) - 1
    if last < 1 or not _is_question(content[last], text):
        return False
    first = last - 1
    while first > 0 and _is_external_step(content[first]):
        first -= 1
    if not _is_question(content[first], text):
        return False
    del content[first + 1 :]
    return True


def _is_question(content: conversation.Content, text: str) -> bool:
    return isinstance(content, conversation.UserContent) and content.content == text


def _is_external_step(content: conversation.Content) -> bool:
    """An intent Home Assistant ran itself: its call (external) or its result."""
    if isinstance(content, conversation.ToolResultContent):
        return True
    return (
        isinstance(content, conversation.AssistantContent)
        and not content.content
        and bool(content.tool_calls)
        and all(getattr(call, "external", False) for call in content.tool_calls or ())
    )


# --- Devices ---------------------------------------------------------------------

_DEVICE_MOVES = (
    "new_config_subentry_id" in inspect.signature(dr.DeviceRegistry.async_update_device).parameters
)


def device_of(
    devices: dr.DeviceRegistry, identifier: tuple[str, str], entry_id: str
) -> dr.DeviceEntry | None:
    """The entry's device with this identifier."""
    if hasattr(devices, "async_get_device_by_identifier"):
        device: dr.DeviceEntry | None = devices.async_get_device_by_identifier(identifier, entry_id)
        return device
    return devices.async_get_device(identifiers={identifier})


def move_device_to_subentry(
    devices: dr.DeviceRegistry,
    device_id: str,
    entry_id: str,
    subentry_id: str,
    identifiers: set[tuple[str, str]],
) -> None:
    """Give a device of the entry to one of its subentries, under new identifiers."""
    if _DEVICE_MOVES:
        devices.async_update_device(
            device_id,
            new_identifiers=identifiers,
            new_config_entry_id=entry_id,  # type: ignore[call-arg]
            new_config_subentry_id=subentry_id,
        )
        return
    # Two calls: 2025.4 computes a removal from the device as it was before the call.
    devices.async_update_device(
        device_id,
        new_identifiers=identifiers,
        add_config_entry_id=entry_id,
        add_config_subentry_id=subentry_id,
    )
    devices.async_update_device(
        device_id, remove_config_entry_id=entry_id, remove_config_subentry_id=None
    )
