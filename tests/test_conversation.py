"""Turns through conversation.async_converse, as automations and the Assist dialog send them.

The model is the scripted server; the house is real (template entities backed by
helpers), so a tool call that works changes a real state.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
import json
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.majordome import compat
from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import (
    CONF_LOCAL_INTENTS,
    CONF_MAX_HISTORY,
    CONF_MAX_ITERATIONS,
)
from custom_components.majordome.tools import SPEECH_KEY
from devtools.house import async_setup_house
from devtools.scripted_server import Reply, ScriptedServer, error, text, tool_calls
from homeassistant.components import conversation
from homeassistant.core import HomeAssistant
from homeassistant.helpers import llm
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util

from .helpers import CLOCK_TOOL, converse, speech, tool_messages

KITCHEN = "light.kitchen_light"
GARAGE = "light.garage_light"
THERMOSTAT = "climate.thermostat_du_salon"


@pytest.fixture
async def house(hass: HomeAssistant) -> None:
    """The demo house: a kitchen light exposed to Assist, a garage light that is not."""
    assert await async_setup_component(hass, "homeassistant", {})
    await async_setup_house(hass, "demo")


async def test_exposed_light_turns_on(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    assert hass.states.get(KITCHEN).state == "off"
    scripted.add(
        tool_calls(("HassTurnOn", {"name": "Kitchen Light"})),
        text("The kitchen ", "light is on."),
    )

    result = await converse(hass, entry, "turn on the kitchen light")

    assert hass.states.get(KITCHEN).state == "on"
    assert speech(result) == "The kitchen light is on."
    first, second = scripted.chat_requests
    assert "Kitchen Light" in first["messages"][0]["content"]  # the static context
    [tool_message] = tool_messages(second)
    assert json.loads(tool_message["content"])["data"]["success"][0]["name"] == "Kitchen Light"


async def test_unexposed_light_cannot_be_touched(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(
        tool_calls(("HassTurnOn", {"name": "Garage Light"})),
        text("I cannot control that light."),
    )

    await converse(hass, entry, "turn on the garage light")

    assert hass.states.get(GARAGE).state == "off"
    first, second = scripted.chat_requests
    assert "Garage Light" not in first["messages"][0]["content"]
    [tool_message] = tool_messages(second)
    assert "error" in json.loads(tool_message["content"])


async def test_time_question_uses_the_tool(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(tool_calls(("get_time", {})), text("It is late."))

    await converse(hass, entry, "what time is it?")

    result = json.loads(tool_messages(scripted.chat_requests[1])[0]["content"])
    now = dt_util.now()
    # Majordome's get_time says "time_24h" (HH:MM); Home Assistant's GetDateTime "time".
    said = result.get("time_24h") or result["time"][:5]
    assert said in {now.strftime("%H:%M"), (now - timedelta(minutes=1)).strftime("%H:%M")}
    # The clock is never in the system prompt: that would defeat prefix caching.
    assert now.strftime("%H:%M") not in scripted.chat_requests[0]["messages"][0]["content"]


async def test_french_time_and_instructions(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(tool_calls(("get_time", {}), ("get_date", {})), text("Il est tard."))

    await converse(hass, entry, "quelle heure est-il ?", language="fr")

    system = scripted.chat_requests[0]["messages"][0]["content"]
    assert system.startswith("Tu es un assistant vocal pour Home Assistant.")
    time_result, date_result = (
        json.loads(m["content"]) for m in tool_messages(scripted.chat_requests[1])
    )
    # Ready to say, in French (Home Assistant's GetDateTime answers both with both).
    assert " h " in time_result[SPEECH_KEY]
    weekday = ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"]
    assert weekday[dt_util.now().weekday()] in date_result[SPEECH_KEY].split()


async def test_two_step_task(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """A tool, its result read, another tool, then the answer."""
    scripted.add(
        tool_calls(("GetLiveContext", {})),
        tool_calls(("HassTurnOn", {"name": "Kitchen Light"})),
        text("Done: it was off, it is on now."),
    )

    result = await converse(hass, entry, "if the kitchen light is off, turn it on")

    assert speech(result) == "Done: it was off, it is on now."
    assert hass.states.get(KITCHEN).state == "on"
    assert len(scripted.chat_requests) == 3
    live_context, turn_on = tool_messages(scripted.chat_requests[2])
    assert "Kitchen Light" in live_context["content"]
    assert json.loads(turn_on["content"])["response_type"] == "action_done"
    # Every tool call the model made is answered, in order, with its id.
    assistant_calls = [
        call["id"]
        for m in scripted.chat_requests[2]["messages"]
        if m["role"] == "assistant"
        for call in m.get("tool_calls", [])
    ]
    assert assistant_calls == [live_context["tool_call_id"], turn_on["tool_call_id"]]


async def test_parallel_calls_in_one_step(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(
        tool_calls(("HassTurnOn", {"name": "Kitchen Light"}), ("get_time", {})),
        text("Light on."),
    )

    await converse(hass, entry, "kitchen light on and tell me the time")

    assert hass.states.get(KITCHEN).state == "on"
    ids = [m["tool_call_id"] for m in tool_messages(scripted.chat_requests[1])]
    assert ids == ["call_0_HassTurnOn", "call_1_get_time"]


@pytest.fixture
def entry_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Options per test, through indirect parametrisation; the model takes every turn."""
    return {**DEFAULT_OPTIONS, CONF_LOCAL_INTENTS: False, **getattr(request, "param", {})}


@pytest.mark.parametrize("entry_options", [{CONF_MAX_ITERATIONS: 3}], indirect=True)
async def test_iteration_cap_ends_with_an_apology(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(*(tool_calls(("get_date", {"days_from_today": day})) for day in range(5)))

    result = await converse(hass, entry, "loop forever")

    assert len(scripted.chat_requests) == 3
    assert speech(result) == "Sorry, I could not finish that in the steps I am allowed."
    # The apology closes the turn: the next turn's history is well formed.
    scripted.replies.clear()
    scripted.add(text("Hello."))
    await converse(hass, entry, "hi", result.conversation_id)
    messages = scripted.chat_requests[-1]["messages"]
    assert messages[-2] == {
        "role": "assistant",
        "content": "Sorry, I could not finish that in the steps I am allowed.",
    }


async def test_system_prompt_and_tools_are_byte_identical_between_turns(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """The prefix a server can reuse: system prompt and tools do not change."""
    scripted.add(text("One."), tool_calls(("get_time", {})), text("Two."), text("Three."))

    first = await converse(hass, entry, "first")
    await asyncio.sleep(1.1)  # the clock moves on: nothing in the prompt may follow it
    await converse(hass, entry, "second", first.conversation_id)
    await converse(hass, entry, "third")  # another conversation

    requests = scripted.chat_requests
    assert len(requests) == 4
    for request in requests[1:]:
        assert request["messages"][0] == requests[0]["messages"][0]
        assert json.dumps(request["tools"]) == json.dumps(requests[0]["tools"])
    names = [tool["function"]["name"] for tool in requests[0]["tools"]]
    # Assist's tools in Home Assistant's own order, then Majordome's, sorted.
    assist = await llm.async_get_api(
        hass,
        llm.LLM_API_ASSIST,
        llm.LLMContext(
            **{
                key: value
                for key, value in {
                    "platform": "test",
                    "context": None,
                    "user_prompt": None,
                    "language": "en",
                    "assistant": conversation.DOMAIN,
                    "device_id": None,
                }.items()
                if key in {field.name for field in dataclasses.fields(llm.LLMContext)}
            }
        ),
    )
    # Majordome's clock only where Assist has none (Home Assistant's GetDateTime, 2025.11+).
    clock = ["get_date", "get_time"] if CLOCK_TOOL == "get_time" else []
    # Named without 2026's integration prefix (intent__HassTurnOn), which small models
    # misread; each name is unique.
    assist_names = [compat.base_tool_name(tool.name) for tool in assist.tools]
    assert names == [*assist_names, *sorted(["forget", "remember", *clock])]
    assert len(names) == len(set(names))
    assert requests[0].get("cache_prompt") is True
    # The user's words are sent as they were said.
    assert requests[1]["messages"][-1] == {"role": "user", "content": "second"}


@pytest.mark.parametrize("entry_options", [{CONF_MAX_HISTORY: 2}], indirect=True)
async def test_history_is_trimmed_to_whole_turns(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(text("A."), tool_calls(("get_time", {})), text("B."), text("C."))

    result = await converse(hass, entry, "one")
    await converse(hass, entry, "two", result.conversation_id)
    await converse(hass, entry, "three", result.conversation_id)

    roles = [m["role"] for m in scripted.chat_requests[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
    contents = [m["content"] for m in scripted.chat_requests[-1]["messages"] if m["role"] == "user"]
    assert contents == ["two", "three"]


async def test_question_continues_the_conversation(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(text("Which light?"), text("Okay."))

    asked = await converse(hass, entry, "turn on the light")
    answered = await converse(hass, entry, "never mind", asked.conversation_id)

    assert asked.continue_conversation is True
    assert answered.continue_conversation is False


async def test_server_timings_reach_the_turn_trace(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(Reply(deltas=[{"content": "Hi."}], timings={"cache_n": 812, "prompt_n": 9}))

    await converse(hass, entry, "hello")

    trace = entry.runtime_data.last_turn
    assert trace is not None
    [stats] = trace.completions
    assert (stats.cache_n, stats.prompt_n) == (812, 9)
    assert stats.first_token_s is not None
    assert trace.total_s >= trace.server_s > 0


async def test_made_up_floor_and_empty_slots_still_reach_the_named_light(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """What the 0.5B model really sends: a right name with a wrong floor and blanks."""
    scripted.add(
        tool_calls(
            (
                "HassTurnOn",
                {"name": "Kitchen Light", "area": "Kitchen", "floor": "Kitchen", "domain": [""]},
            )
        ),
        text("On."),
    )

    await converse(hass, entry, "turn on the kitchen light")

    assert hass.states.get(KITCHEN).state == "on"
    [tool_message] = tool_messages(scripted.chat_requests[1])
    assert json.loads(tool_message["content"])["response_type"] == "action_done"


async def test_a_retry_by_name_keeps_the_settings(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(
        tool_calls(
            ("HassLightSet", {"name": "kitchen_light", "floor": "Kitchen", "brightness": 30})
        ),
        text("Dimmed."),
    )

    await converse(hass, entry, "set the kitchen light to 30 percent")

    state = hass.states.get(KITCHEN)
    assert state.state == "on"
    assert round(state.attributes["brightness"] / 255 * 100) == 30


async def test_an_abbreviated_tool_name_calls_the_real_tool(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """What the 0.5B model really sends for "set the living room thermostat to 22"."""
    arguments = {
        "temperature": 22,
        "area": "Living Room",
        "floor": "Chambre d'amis",
        "domain": "temperature",
    }
    scripted.add(tool_calls(("HassSetTemperature", arguments)), text("Set."))

    await converse(hass, entry, "set the living room thermostat to 22 degrees")

    assert hass.states.get(THERMOSTAT).attributes["temperature"] == 22
    [tool_message] = tool_messages(scripted.chat_requests[1])
    assert json.loads(tool_message["content"])["response_type"] == "action_done"


NOT_DONE = {"en": "Sorry, I could not do that.", "fr": "Désolé, je n'ai pas pu le faire."}


@pytest.mark.usefixtures("house")
@pytest.mark.parametrize("language", ["en", "fr"])
@pytest.mark.parametrize(
    "after", [Reply(), text('{"name": "HassClimateSetTemperature", "argu')], ids=["silent", "cut"]
)
async def test_a_refused_action_then_silence_says_it_was_not_done(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    language: str,
    after: Reply,
) -> None:
    """The thermostat takes 7-30 °C; the 0.5B model then writes nothing usable."""
    scripted.add(tool_calls(("HassClimateSetTemperature", {"temperature": 45})), after)

    result = await converse(hass, entry, "45 degrees in the living room", language=language)

    assert hass.states.get(THERMOSTAT).attributes["temperature"] == 20
    assert json.loads(tool_messages(scripted.chat_requests[1])[0]["content"])["error"]
    assert speech(result) == NOT_DONE[language]


async def test_a_refused_action_repeated_says_it_was_not_done(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    refused = tool_calls(("HassClimateSetTemperature", {"temperature": 45}))
    scripted.add(refused, refused, refused)

    result = await converse(hass, entry, "45 degrees in the living room")

    assert len(scripted.chat_requests) == 2
    assert speech(result) == NOT_DONE["en"]


@pytest.mark.parametrize("name", ["HassTurn", "Hass", "HassLightTurnOn"])
async def test_a_tool_name_meaning_no_single_tool_is_refused(
    hass: HomeAssistant,
    house: None,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    name: str,
) -> None:
    scripted.add(tool_calls((name, {"name": "Kitchen Light"})), text("No."))

    await converse(hass, entry, "turn on the kitchen light")

    assert hass.states.get(KITCHEN).state == "off"
    [tool_message] = tool_messages(scripted.chat_requests[1])
    assert json.loads(tool_message["content"])["error_text"].startswith(
        f"There is no tool named {name!r}."
    )


async def test_retry_by_name_never_reaches_an_unexposed_entity(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(
        tool_calls(("HassTurnOn", {"name": "Garage Light", "floor": "Ground"})), text("No.")
    )

    await converse(hass, entry, "turn on the garage light")

    assert hass.states.get(GARAGE).state == "off"
    [tool_message] = tool_messages(scripted.chat_requests[1])
    assert json.loads(tool_message["content"])["error"] == "MatchFailedError"


@pytest.mark.parametrize(
    "follow_up",
    [Reply(deltas=[{"content": "The light"}], break_after=2), error(500), Reply()],
    ids=["broken-stream", "server-error", "silence"],
)
async def test_a_failed_follow_up_after_an_action_says_done(
    hass: HomeAssistant,
    house: None,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    follow_up: Reply,
) -> None:
    """llama.cpp's tool-call parser sometimes breaks the stream after the tool ran."""
    scripted.add(tool_calls(("HassTurnOn", {"name": "Kitchen Light"})), follow_up)

    result = await converse(hass, entry, "turn on the kitchen light")

    assert hass.states.get(KITCHEN).state == "on"
    assert speech(result) == "Done."


async def test_a_model_repeating_its_calls_is_stopped(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    turn_on = tool_calls(("HassTurnOn", {"name": "Kitchen Light"}))
    scripted.add(turn_on, turn_on, turn_on)

    result = await converse(hass, entry, "turn on the kitchen light")

    assert len(scripted.chat_requests) == 2
    assert speech(result) == "Done."


@pytest.mark.parametrize(
    ("language", "said"),
    [
        (
            "en",
            "It is 9:05." if CLOCK_TOOL == "get_time" else "It is 9:05 on Tuesday 1 December 2026.",
        ),
        (
            "fr",
            "Il est 9 h 05."
            if CLOCK_TOOL == "get_time"
            else "Il est 9 h 05, le mardi 1er décembre 2026.",
        ),
    ],
    ids=["en", "fr"],
)
async def test_a_model_asking_the_time_twice_hears_it_from_the_tool(
    hass: HomeAssistant,
    house: None,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    freezer: Any,
    *,
    language: str,
    said: str,
) -> None:
    """The 0.5B model calls get_time again instead of saying the time it got."""
    await hass.config.async_set_time_zone("Europe/Paris")
    freezer.move_to("2026-12-01 08:05:00+00:00")  # 9:05 in Paris
    scripted.add(tool_calls(("get_time", {})), tool_calls(("get_time", {})))

    result = await converse(hass, entry, "what time is it", language=language)

    assert len(scripted.chat_requests) == 2
    assert speech(result) == said
    # The tool told the model as much: a sentence it may simply repeat.
    [tool_message] = tool_messages(scripted.chat_requests[1])
    assert json.loads(tool_message["content"])["speech"] == said


async def test_a_query_other_than_ours_is_not_answered_for_the_model(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """The live context is data only the model can put into words."""
    live = tool_calls(("GetLiveContext", {}))
    scripted.add(live, live, live, text('{"success": true}'))

    repeated = await converse(hass, entry, "is the kitchen light on")
    echoed = await converse(hass, entry, "is the kitchen light on")

    assert speech(repeated) == "Sorry, I could not finish that in the steps I am allowed."
    assert speech(echoed) == "Sorry, the language model gave me no answer."
    for request in scripted.chat_requests[1::2]:
        [tool_message] = tool_messages(request)
        assert "error" not in json.loads(tool_message["content"])
        assert "Kitchen Light" in tool_message["content"]


@pytest.mark.parametrize("name", ["kitchen_light", "light.kitchen_light", "KITCHEN LIGHT"])
async def test_an_entity_id_written_as_the_name_reaches_the_entity(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer, name: str
) -> None:
    """Small models write the object id where the name goes (seen: "hallway_light").

    With a made-up area: a real one elsewhere (the hallway) stays, see test_retry_scope.py.
    """
    scripted.add(tool_calls(("HassTurnOn", {"name": name, "area": "attic"})), text("On."))
    await converse(hass, entry, "turn on the kitchen light")
    assert hass.states.get(KITCHEN).state == "on"


async def test_an_unexposed_entity_id_is_not_resolved(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(tool_calls(("HassTurnOn", {"name": "garage_light", "area": "x"})), text("No."))
    await converse(hass, entry, "turn on the garage light")
    assert hass.states.get(GARAGE).state == "off"
    [tool_message] = tool_messages(scripted.chat_requests[1])
    assert json.loads(tool_message["content"])["error"] == "MatchFailedError"


SLOT_FILLER = {"color": "white", "temperature": 25, "brightness": 50}  # what the 0.5B sends


async def test_a_light_set_filling_every_slot_is_refused_for_a_question(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """Seen for "Is the bedroom lamp on?": HassLightSet with made-up settings."""
    before = hass.states.get(KITCHEN)
    scripted.add(
        tool_calls(("HassLightSet", {"name": "Kitchen Light", **SLOT_FILLER})), text("It is off.")
    )

    result = await converse(hass, entry, "is the kitchen light on?")

    assert hass.states.get(KITCHEN) == before
    [tool_message] = tool_messages(scripted.chat_requests[1])
    assert "asked for no brightness, color or color temperature" in tool_message["content"]
    assert speech(result) == "It is off."


@pytest.mark.parametrize(
    ("said", "brightness"),
    [("set the kitchen light to 50 %", 128), ("mets la lumière de la cuisine à 50 %", 128)],
)
async def test_a_light_set_filling_every_slot_keeps_what_was_said(
    hass: HomeAssistant,
    house: None,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    *,
    said: str,
    brightness: int,
) -> None:
    scripted.add(
        tool_calls(("HassLightSet", {"name": "Kitchen Light", **SLOT_FILLER})), text("Done.")
    )

    await converse(hass, entry, said)

    state = hass.states.get(KITCHEN)
    assert state.state == "on"
    assert state.attributes["brightness"] == brightness


async def test_a_light_set_with_one_setting_is_left_alone(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """A good model dims "a bit" with a number the user never said: that is its job."""
    scripted.add(
        tool_calls(("HassLightSet", {"name": "Kitchen Light", "brightness": 30})), text("Done.")
    )
    await converse(hass, entry, "dim the kitchen light a bit")
    assert hass.states.get(KITCHEN).attributes["brightness"] == 76


async def test_a_full_context_is_retried_with_this_turn_only(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    too_long = error(400, "request (9360 tokens) exceeds the available context size (8192 tokens)")
    scripted.add(text("First."), too_long, text("Second."))

    first = await converse(hass, entry, "one")
    second = await converse(hass, entry, "two", first.conversation_id)

    assert speech(second) == "Second."
    retried = scripted.chat_requests[-1]["messages"]
    assert [m["role"] for m in retried] == ["system", "user"]
    assert retried[1]["content"] == "two"


async def test_a_context_still_too_long_says_so(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(error(400, "This model's maximum context length is 4096 tokens."))
    result = await converse(hass, entry, "x" * 1000)
    assert speech(result) == (
        "Sorry, this conversation got too long for the model. Please start a new one."
    )


async def test_a_device_name_used_as_a_tool_gets_a_hint(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """The 0.5B model writes {"name": "Kitchen Light"} as if the device were a tool."""
    scripted.add(
        tool_calls(("Kitchen Light", {})),
        tool_calls(("HassTurnOn", {"name": "Kitchen Light"})),
        text("On."),
    )

    await converse(hass, entry, "turn on the kitchen light")

    [error_message] = tool_messages(scripted.chat_requests[1])
    assert "'Kitchen Light' is a device, not a tool" in error_message["content"]
    assert hass.states.get(KITCHEN).state == "on"


async def test_no_hint_reveals_an_unexposed_device(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(tool_calls(("Garage Light", {})), text("No."))
    await converse(hass, entry, "garage light")
    [error_message] = tool_messages(scripted.chat_requests[1])
    assert "is a device" not in error_message["content"]


INVALID_DIFF = 'data: {"error": {"code": 500, "message": "Invalid diff: now finding less tool calls!", "type": "server_error"}}\n\n'


async def test_a_stream_the_server_breaks_is_asked_again_without_streaming(
    hass: HomeAssistant, house: None, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """llama.cpp's streaming tool-call parser gives up; its non-streamed path does not."""
    scripted.add(Reply(raw_lines=[INVALID_DIFF]), text("On."))
    scripted.add_side(tool_calls(("HassTurnOn", {"name": "Kitchen Light"})))

    result = await converse(hass, entry, "turn on the kitchen light")

    assert hass.states.get(KITCHEN).state == "on"
    assert speech(result) == "On."
    streamed, retried, answered = scripted.chat_requests
    assert streamed["stream"] is True
    assert not retried.get("stream")
    assert retried["messages"] == streamed["messages"]
    assert answered["messages"][-1]["role"] == "tool"
