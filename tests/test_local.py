"""The local stage: Home Assistant's own sentences answer what they recognise, before
any model call; everything else reaches the model as if the stage were not there.

The house is real (the demo house) and so is Home Assistant's intent matching; the
model is the scripted server, whose requests show whether the model was asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest.mock import patch

from freezegun.api import FrozenDateTimeFactory
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.majordome import compat, local
from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import CONF_LOCAL_INTENTS, CONF_MEMORY_EVERY
from custom_components.majordome.memory import Onboarding
from devtools.house import async_setup_house
from devtools.scripted_server import ScriptedServer, text
from homeassistant.components import conversation
from homeassistant.components.assist_pipeline import async_update_pipeline
from homeassistant.components.assist_pipeline.pipeline import async_get_pipeline
from homeassistant.components.conversation.default_agent import DefaultAgent
from homeassistant.core import HomeAssistant
from homeassistant.helpers import intent
from homeassistant.setup import async_setup_component

from .helpers import agent_entity_id, converse, speech, user_messages

# Home Assistant 2026.10+: the built-in agent's gazetteer fallback.
HAS_GAZETTEER = hasattr(DefaultAgent, "_async_gazetteer_fallback")

KITCHEN = "light.kitchen_light"
GARAGE = "light.garage_light"
GUEST_CEILING = "light.plafonnier_de_la_chambre_d_amis"
SALON_LAMP = "light.lampe_du_salon"
OFFICE_LAMP = "light.lampe_du_bureau"


@pytest.fixture
def entry_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The defaults (local stage on), no background memory summary."""
    return {**DEFAULT_OPTIONS, CONF_MEMORY_EVERY: 0, **getattr(request, "param", {})}


@pytest.fixture
async def house(hass: HomeAssistant) -> None:
    """The demo house: the kitchen light exposed, the garage light not."""
    assert await async_setup_component(hass, "homeassistant", {})
    await async_setup_house(hass, "demo")


@pytest.fixture(autouse=True)
def introduced(entry: MockConfigEntry) -> None:
    """The household was introduced already: no question is added to the replies."""
    entry.runtime_data.memory.update(onboarding=Onboarding.DONE)


def assistant_texts(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "assistant"]


def local_outcome(entry: MockConfigEntry) -> str | None:
    trace = entry.runtime_data.last_turn
    assert trace is not None
    return trace.local


# (language, command, entity, its state after)
COMMANDS = [
    ("en", "turn on the kitchen light", KITCHEN, "on"),
    ("en", "turn off the lampe du salon", SALON_LAMP, "off"),
    ("fr", "allume le plafonnier de la chambre d'amis", GUEST_CEILING, "on"),
    ("fr", "éteins la lampe du salon", SALON_LAMP, "off"),
]


@pytest.mark.parametrize("case", COMMANDS, ids=[command for _, command, _, _ in COMMANDS])
async def test_a_command_home_assistant_knows_is_handled_without_the_model(
    hass: HomeAssistant,
    house: None,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    case: tuple[str, str, str, str],
) -> None:
    language, command, entity_id, after = case
    assert hass.states.get(entity_id).state != after

    result = await converse(hass, entry, command, language=language)

    assert hass.states.get(entity_id).state == after
    assert speech(result)
    assert result.response.language == language
    assert result.response.error_code is None
    assert scripted.chat_requests == []
    trace = entry.runtime_data.last_turn
    assert trace is not None
    assert trace.local == local.LocalOutcome.HANDLED
    assert trace.local_intent in {"HassTurnOn", "HassTurnOff"}
    assert trace.completions == []


# (language, command, temperature): Home Assistant 2025.4 sets a thermostat's
# temperature outside the turn's context; Home Assistant's own answer stays.
THERMOSTAT = [
    ("fr", "Mets le thermostat du salon à 19 degrés", 19),
    ("en", "set the living room temperature to 23 degrees", 23),
]


@pytest.mark.parametrize("case", THERMOSTAT, ids=[command for _, command, _ in THERMOSTAT])
async def test_a_change_made_outside_the_turns_context_is_still_a_change(
    hass: HomeAssistant,
    house: None,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    case: tuple[str, str, int],
) -> None:
    language, command, temperature = case

    result = await converse(hass, entry, command, language=language)

    thermostat = hass.states.get("climate.thermostat_du_salon")
    assert thermostat.attributes["temperature"] == temperature
    assert local_outcome(entry) == local.LocalOutcome.HANDLED
    assert str(temperature) in speech(result)  # "Température réglée sur 19 degrés"
    assert scripted.chat_requests == []


DATE_QUESTIONS = [
    ("en", "what is the date", "Thursday 3 December 2026"),
    ("fr", "quelle est la date", "jeudi 3 décembre 2026"),
]


@pytest.mark.usefixtures("house")
@pytest.mark.parametrize("case", DATE_QUESTIONS, ids=[case[1] for case in DATE_QUESTIONS])
async def test_home_assistants_date_is_said_with_the_weekday(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    freezer: FrozenDateTimeFactory,
    case: tuple[str, str, str],
) -> None:
    language, question, answer = case
    freezer.move_to("2026-12-03 12:00:00+00:00")

    result = await converse(hass, entry, question, language=language)

    assert local_outcome(entry) == local.LocalOutcome.HANDLED
    assert entry.runtime_data.last_turn.local_intent == "HassGetCurrentDate"
    assert answer in speech(result)
    assert scripted.chat_requests == []


async def test_the_answer_is_in_the_users_language(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    english = speech(await converse(hass, entry, "turn on the kitchen light"))
    french = speech(await converse(hass, entry, "éteins la lumière de la cuisine", language="fr"))

    assert hass.states.get(KITCHEN).state == "off"
    assert english != french
    assert scripted.chat_requests == []


async def test_an_unexposed_entity_is_not_touched_and_goes_to_the_model(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(text("I cannot control that light."))

    result = await converse(hass, entry, "turn on the garage light")

    assert hass.states.get(GARAGE).state == "off"
    assert speech(result) == "I cannot control that light."
    assert len(scripted.chat_requests) == 1
    # No sentence matches an unexposed name, and the gazetteer is not asked (it would
    # read an exposed device's near name for it).
    assert local_outcome(entry) == local.LocalOutcome.NO_MATCH


async def test_a_wording_without_a_sentence_is_taken_by_the_gazetteer_where_there_is_one(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """Home Assistant has no sentence for "dim ... to N percent" with the lamp called
    by its area; from 2026.10 its gazetteer reads it, and the local stage takes it."""
    scripted.add(text("The model's turn."))

    result = await converse(hass, entry, "Dim the office lamp to 30 percent")

    if not HAS_GAZETTEER:
        assert local_outcome(entry) == local.LocalOutcome.NO_MATCH
        assert speech(result) == "The model's turn."
        return
    assert local_outcome(entry) == local.LocalOutcome.HANDLED
    assert round(hass.states.get(OFFICE_LAMP).attributes["brightness"] / 2.55) == 30
    assert scripted.chat_requests == []


async def test_it_after_a_model_turn_is_not_the_local_stages_last_target(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """Turn 1 (local) turned the kitchen light on; turn 2 was the model's: "it" in
    turn 3 is not the kitchen light (Home Assistant's gazetteer remembers only turn 1)."""
    scripted.add(text("Which one?"), text("I am not sure what you mean."))

    first = await converse(hass, entry, "turn on the kitchen light")
    await converse(hass, entry, "the quiet one in the corner", first.conversation_id)
    await converse(hass, entry, "turn it off", first.conversation_id)

    assert hass.states.get(KITCHEN).state == "on"
    assert len(scripted.chat_requests) == 2


async def test_no_match_goes_to_the_model_with_a_clean_history(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """A sentence HA's matching gets as far as running (no blinds in the kitchen),
    then fails, reaches the model with the history as it was."""
    scripted.add(text("There are no blinds in the kitchen."), text("Sure."))

    result = await converse(hass, entry, "open the blinds in the kitchen")
    await converse(hass, entry, "thanks", result.conversation_id)

    assert speech(result) == "There are no blinds in the kitchen."
    first, second = scripted.chat_requests
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "user"]
    assert user_messages(second) == ["open the blinds in the kitchen", "thanks"]


async def test_home_assistants_failure_is_never_heard(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """A matched command whose action fails ("An unexpected error occurred") goes to
    the model; the failed attempt leaves nothing in the conversation."""

    class Broken(intent.IntentHandler):
        """HassTurnOn, crashing as a faulty integration would."""

        intent_type = intent.INTENT_TURN_ON

        async def async_handle(self, intent_obj: intent.Intent) -> intent.IntentResponse:
            raise RuntimeError("the light's driver crashed")

    intent.async_register(hass, Broken())
    scripted.add(text("The kitchen light does not answer."), text("Sure."))

    result = await converse(hass, entry, "turn on the kitchen light")
    assert local_outcome(entry) == local.LocalOutcome.FAILED
    await converse(hass, entry, "thanks", result.conversation_id)

    assert speech(result) == "The kitchen light does not answer."
    assert result.response.error_code is None
    first, second = scripted.chat_requests
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert assistant_texts(second) == ["The kitchen light does not answer."]
    assert "unexpected" not in str(second["messages"]).lower()


async def test_a_failure_of_the_matching_itself_goes_to_the_model(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(text("Handled by the model."))

    with patch(
        "custom_components.majordome.compat.async_handle_intents",
        side_effect=RuntimeError("matching broke"),
    ):
        result = await converse(hass, entry, "turn on the kitchen light")

    assert speech(result) == "Handled by the model."
    assert local_outcome(entry) == local.LocalOutcome.ERROR
    assert [m["role"] for m in scripted.chat_requests[0]["messages"]] == ["system", "user"]


async def test_a_follow_up_sees_the_local_exchange_as_history(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(text("It is the kitchen light."))

    local_result = await converse(hass, entry, "turn on the kitchen light")
    await converse(hass, entry, "which light was that?", local_result.conversation_id)

    [request] = scripted.chat_requests
    assert user_messages(request) == ["turn on the kitchen light", "which light was that?"]
    assert speech(local_result) in assistant_texts(request)
    assert request["messages"][-1] == {"role": "user", "content": "which light was that?"}


@pytest.mark.parametrize("entry_options", [{CONF_LOCAL_INTENTS: False}], indirect=True)
async def test_with_the_option_off_the_model_takes_every_command(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(text("I would rather not."))

    result = await converse(hass, entry, "turn on the kitchen light")

    assert speech(result) == "I would rather not."
    assert hass.states.get(KITCHEN).state == "off"
    assert len(scripted.chat_requests) == 1
    assert local_outcome(entry) == local.LocalOutcome.OFF


# --- Behind Home Assistant's Assist pipeline ------------------------------------------


async def run_text_pipeline(
    hass: HomeAssistant, ws: Any, pipeline_id: str, sentence: str
) -> list[dict[str, Any]]:
    """One text run of the pipeline (intent stage only); its events."""
    await ws.send_json_auto_id(
        {
            "type": "assist_pipeline/run",
            "start_stage": "intent",
            "end_stage": "intent",
            "input": {"text": sentence},
            "pipeline": pipeline_id,
        }
    )
    assert (await ws.receive_json())["success"]
    events = []
    while True:
        event = (await ws.receive_json())["event"]
        events.append(event)
        if event["type"] == "run-end":
            return events


@pytest.fixture
async def pipeline(hass: HomeAssistant, house: None, entry: MockConfigEntry, tmp_path: Path) -> str:
    """The preferred pipeline, with Majordome and "prefer handling commands locally"."""
    with patch("homeassistant.components.tts._init_tts_cache_dir", return_value=str(tmp_path)):
        assert await async_setup_component(hass, "assist_pipeline", {})
        await hass.async_block_till_done()
    preferred = async_get_pipeline(hass)
    await async_update_pipeline(
        hass,
        preferred,
        conversation_engine=agent_entity_id(hass, entry),
        language="en",
        conversation_language="en",
        prefer_local_intents=True,
    )
    return preferred.id


async def test_a_pipeline_that_prefers_local_commands_is_not_doubled(
    hass: HomeAssistant,
    pipeline: str,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    hass_ws_client: WebSocketGenerator,
) -> None:
    """The pipeline tried Home Assistant's sentences itself: Majordome does not again.

    A state question is what the pipeline leaves to an agent that controls the house:
    Majordome's own stage would have answered it, here the model does.
    """
    ws = await hass_ws_client(hass)
    scripted.add(text("Yes, it is on."))

    handled = await run_text_pipeline(hass, ws, pipeline, "turn on the kitchen light")
    asked = await run_text_pipeline(hass, ws, pipeline, "is the kitchen light on?")

    assert hass.states.get(KITCHEN).state == "on"
    [handled_end] = [e for e in handled if e["type"] == "intent-end"]
    assert handled_end["data"]["processed_locally"] is True
    [asked_end] = [e for e in asked if e["type"] == "intent-end"]
    assert asked_end["data"]["processed_locally"] is False
    speech_said = asked_end["data"]["intent_output"]["response"]["speech"]["plain"]["speech"]
    assert speech_said == "Yes, it is on."
    [request] = scripted.chat_requests
    assert user_messages(request)[-1] == "is the kitchen light on?"
    assert local_outcome(entry) == local.LocalOutcome.PIPELINE


async def test_a_pipelines_failed_attempt_leaves_the_question_once(
    hass: HomeAssistant,
    pipeline: str,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    hass_ws_client: WebSocketGenerator,
) -> None:
    """The pipeline's matching got as far as running (no blinds in the kitchen) and
    failed: the model sees the question once, without the failed attempt."""
    ws = await hass_ws_client(hass)
    scripted.add(text("There are no blinds in the kitchen."))

    await run_text_pipeline(hass, ws, pipeline, "open the blinds in the kitchen")

    [request] = scripted.chat_requests
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert local_outcome(entry) == local.LocalOutcome.PIPELINE


def test_an_error_after_a_part_was_done_is_handled_not_handed_on() -> None:
    """A coordinated command whose second part failed: the first part's recorded
    result makes it handled (said as Home Assistant's error), so the model does not
    redo it; an error with nothing done is handed on."""
    error = intent.IntentResponse(language="en")
    error.async_set_error(intent.IntentResponseErrorCode.NO_VALID_TARGETS, "No porch light")
    result = {"response_type": "action_done", "data": {"success": []}}
    field = "result" if compat._RESULT_IS_FIELD else "tool_result"
    done = conversation.ToolResultContent(
        agent_id="conversation.home_assistant",
        tool_call_id="1",
        tool_name="HassTurnOn",
        **{field: compat.tool_result(result)},
    )

    assert local._acted_in_part(error, [done])
    assert not local._acted_in_part(error, [])
