"""The local stage: Home Assistant's own sentences, before any model call.

A command Home Assistant recognises exactly (strict matching on exposed entities, what
the pipeline's "prefer handling commands locally" runs) is carried out by Home
Assistant and answered in its words, in the user's language, in milliseconds. From
2026.10 (English), a sentence with no match goes to the built-in agent's gazetteer,
which reads wordings and near-miss names the sentences lack, on exposed entities, and
acts only on what it accepts; what it refuses goes on to the model. Anything
else goes on to the model, with the chat log as it was: no match, a matching error, and
Home Assistant's failure answers ("An unexpected error occurred") are never heard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from hassil.recognize import RecognizeResult

from homeassistant.components import conversation
from homeassistant.components.homeassistant.exposed_entities import async_should_expose
from homeassistant.core import HomeAssistant
from homeassistant.helpers import intent

from . import compat, names, tools
from .const import LOGGER


class LocalOutcome(StrEnum):
    """What the local stage did with a turn (recorded in the turn's trace)."""

    HANDLED = "handled"
    NO_MATCH = "no_match"
    FAILED = "failed"  # matched, but Home Assistant answered with an error
    ERROR = "error"  # the matching itself raised
    PIPELINE = "pipeline"  # the Assist pipeline already tried locally
    OFF = "off"


# Sentences Home Assistant matches that are not about the house: a greeting answered
# "Hello from Home Assistant." (HassRespond), "never mind" (HassNevermind, which says
# nothing). The model (or the screening) answers those in the butler's voice.
NOT_COMMANDS: frozenset[str] = frozenset({"HassRespond", "HassNevermind"})


# Home Assistant's clock intents: answered in the butler's words, the weekday with the
# date ("Thursday 3 December 2026"; Home Assistant says "December 3rd, 2026").
CLOCK_INTENTS: dict[str, dict[str, bool]] = {
    "HassGetCurrentDate": {"time": False, "date": True},
    "HassGetCurrentTime": {"time": True, "date": False},
}


def _not_a_command(result: RecognizeResult) -> bool:
    """Home Assistant's intent filter: True drops the match."""
    return result.intent.name in NOT_COMMANDS


@dataclass
class LocalResult:
    """The outcome, and when handled: what Home Assistant said and which intent ran.

    `acted`: the intent was an action (not a question); `targets`: the entities it
    reports acting on, as (entity_id, name).
    """

    outcome: LocalOutcome
    speech: str = ""
    intent: str | None = None
    acted: bool = False
    targets: list[tuple[str, str]] = field(default_factory=list)


async def async_try(
    hass: HomeAssistant, user_input: conversation.ConversationInput, chat_log: conversation.ChatLog
) -> LocalResult:
    """Let Home Assistant handle the command if it recognises it exactly.

    Handled: the speech is Home Assistant's (may be empty: the caller says "Done"), and
    the chat log holds what 2026.x records of the intent. Otherwise the chat log is as
    it was, and the turn goes on to the model.
    """
    if compat.pipeline_tried_locally(hass, user_input.context):
        return LocalResult(LocalOutcome.PIPELINE)
    length = len(chat_log.content)
    try:
        response = await compat.async_handle_intents(hass, user_input, chat_log, _not_a_command)
        if (
            response is None
            and compat.has_gazetteer(hass)
            and not _names_unexposed(hass, user_input.text)
        ):
            response = await compat.async_gazetteer_intents(hass, user_input, chat_log)
    except Exception:  # noqa: BLE001 - the model takes the turn instead
        LOGGER.debug("Local intent matching failed for %r", user_input.text[:200], exc_info=True)
        del chat_log.content[length:]
        return LocalResult(LocalOutcome.ERROR)
    if response is not None and _acted_in_part(response, chat_log.content[length:]):
        # A coordinated command whose later part failed: what was done stays in the
        # history, and Home Assistant's error is said; the model does not redo it.
        return LocalResult(LocalOutcome.HANDLED, _speech(response), _intent(response))
    if response is None or response.response_type is intent.IntentResponseType.ERROR:
        del chat_log.content[length:]
        if response is None:
            return LocalResult(LocalOutcome.NO_MATCH)
        LOGGER.debug("Home Assistant failed %r (%s)", user_input.text[:200], response.error_code)
        return LocalResult(LocalOutcome.FAILED)
    speech, name = _speech(response), _intent(response)
    targets = [
        (target.id, target.name)
        for target in response.success_results
        if target.type is intent.IntentResponseTargetType.ENTITY and target.id
    ]
    if name in CLOCK_INTENTS and not targets:
        speech = await tools.async_clock_sentence(hass, user_input.language, **CLOCK_INTENTS[name])
    return LocalResult(
        LocalOutcome.HANDLED,
        speech,
        name,
        acted=response.response_type is intent.IntentResponseType.ACTION_DONE,
        targets=targets,
    )


def _speech(response: intent.IntentResponse) -> str:
    return str(response.speech.get("plain", {}).get("speech", ""))


def _intent(response: intent.IntentResponse) -> str | None:
    return response.intent.intent_type if response.intent else None


def _names_unexposed(hass: HomeAssistant, text: str) -> bool:
    """Whether the text names a device that is not exposed ("the garage light").

    Home Assistant's own flow claims such a sentence before its gazetteer (which would
    read a near name of an exposed device for it); so does the local stage.
    """
    named = names.named_in(text, names.device_names(hass, only_exposed=False))
    return any(not async_should_expose(hass, conversation.DOMAIN, entity_id) for entity_id in named)


def _acted_in_part(response: intent.IntentResponse, added: list[conversation.Content]) -> bool:
    """An error answer after parts of the command were carried out (and recorded)."""
    return response.response_type is intent.IntentResponseType.ERROR and any(
        isinstance(content, conversation.ToolResultContent)
        and not compat.result_failed(content)
        and compat.result_data(content).get("response_type") == "action_done"
        for content in added
    )


def async_forget(hass: HomeAssistant, conversation_id: str) -> None:
    """The model took a turn: "it" in the next no longer means the local stage's target."""
    compat.async_forget_local_targets(hass, conversation_id)
