"""The cascade: simple requests to a fast model, the rest (and its failures) to the main one.

Two scripted servers on 127.0.0.1, one per model; the house is real (the demo house),
so an action that ran changed a real state, and ran once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
import json
import logging
import subprocess
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.majordome import routing
from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import (
    CONF_FAST_MODEL,
    CONF_FAST_URL,
    CONF_LOCAL_INTENTS,
    SUBENTRY_AGENT,
)
from devtools.house import async_setup_house
from devtools.llm import SETUP_SCRIPT, LocalLlmServer, ensure_llm
from devtools.route_suite import demo_house_names
from devtools.scripted_server import Reply, ScriptedServer, text, tool_calls
from homeassistant.config_entries import SOURCE_RECONFIGURE
from homeassistant.const import CONF_MODEL, CONF_NAME
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.setup import async_setup_component

from .helpers import CLOCK_TOOL, MODEL, TURN_ON_TOOL, agent_of, converse, majordome_entry, speech

FAST_MODEL = "fast-model"
KITCHEN = "light.kitchen_light"
SIMPLE = "turn on the kitchen light"
MAIN_ANSWER = "The kitchen light is on now."


@pytest.fixture
async def fast_server(socket_enabled: None) -> AsyncGenerator[ScriptedServer]:
    """The fast model's own scripted server on 127.0.0.1."""
    server = ScriptedServer(models=[FAST_MODEL])
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def entry_options(fast_server: ScriptedServer) -> dict[str, Any]:
    """An agent whose fast model is on the fast server; the model takes every turn."""
    return {
        **DEFAULT_OPTIONS,
        CONF_LOCAL_INTENTS: False,
        CONF_FAST_MODEL: FAST_MODEL,
        CONF_FAST_URL: fast_server.url,
    }


@pytest.fixture
async def house(hass: HomeAssistant) -> None:
    """The demo house: the kitchen light exposed, the garage light not."""
    assert await async_setup_component(hass, "homeassistant", {})
    await async_setup_house(hass, "demo")


@pytest.fixture
def entry(house: None, entry: MockConfigEntry, entry_options: dict[str, Any]) -> MockConfigEntry:
    """The loaded entry (its agent on the fast and the main model), in the demo house.

    `entry_options` is named here so that a test can still parametrize it.
    """
    return entry


def _turn_on_kitchen() -> tuple[Reply, Reply]:
    return tool_calls((TURN_ON_TOOL, {"name": "Kitchen Light"})), text(MAIN_ANSWER)


def _said(deltas: list[dict[str, Any]]) -> str:
    return "".join(str(delta.get("content") or "") for delta in deltas)


async def test_simple_command_goes_to_the_fast_model_only(
    hass: HomeAssistant,
    *,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    fast_server: ScriptedServer,
    hass_client: ClientSessionGenerator,
) -> None:
    fast_server.add(tool_calls((TURN_ON_TOOL, {"name": "Kitchen Light"})), text("Done, it is on."))
    deltas: list[dict[str, Any]] = []

    result = await converse(hass, entry, SIMPLE, deltas=deltas)

    assert speech(result) == "Done, it is on."
    assert "Done, it is on." in _said(deltas)  # held, then given to the listener
    assert hass.states.get(KITCHEN).state == "on"
    assert scripted.chat_requests == []
    assert [body["model"] for body in fast_server.chat_requests] == [FAST_MODEL, FAST_MODEL]
    trace = entry.runtime_data.last_turn
    assert trace is not None
    assert (trace.route, trace.answered_by, trace.fast_failure) == ("fast", "fast", None)
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    assert diagnostics["model_turns"] == {
        "fast": 1,
        "main": 0,
        "fast_failed": 0,
        "share": {"fast": 1.0, "main": 0.0},
    }


@pytest.mark.parametrize(
    "text_in",
    [
        "turn on the kitchen light and tell me a joke",  # two requests
        "what is the capital of France?",  # names nothing of the house
        "turn it off",  # refers back
    ],
)
async def test_other_requests_go_to_the_main_model_only(
    hass: HomeAssistant,
    *,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    fast_server: ScriptedServer,
    text_in: str,
) -> None:
    scripted.add(text("Main here."))

    result = await converse(hass, entry, text_in)

    assert speech(result) == "Main here."
    assert fast_server.chat_requests == []
    assert [body["model"] for body in scripted.chat_requests] == [MODEL]
    trace = entry.runtime_data.last_turn
    assert trace is not None
    assert trace.answered_by == "main"
    assert trace.route != "fast"


@pytest.mark.parametrize(
    ("fast_replies", "failure"),
    [
        ([text("The kitchen light is on.")], "no_tool_call"),
        ([tool_calls(("MadeUpTool", {"x": 1})), text("Done.")], "tool_error"),
        ([tool_calls((TURN_ON_TOOL, "{not json")), text("Done.")], "tool_error"),
        ([tool_calls((TURN_ON_TOOL, {"name": "Garage Light"})), text("Done.")], "tool_error"),
        ([tool_calls((CLOCK_TOOL, {})), text("Sorry, I can't do that.")], "refusal"),
    ],
    ids=["no_call", "unknown_tool", "invalid_arguments", "tool_error", "refusal"],
)
async def test_a_failed_fast_turn_is_taken_again_by_the_main_model(
    hass: HomeAssistant,
    *,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    fast_server: ScriptedServer,
    hass_client: ClientSessionGenerator,
    fast_replies: list[Reply],
    failure: str,
) -> None:
    fast_server.add(*fast_replies)
    scripted.add(*_turn_on_kitchen())
    deltas: list[dict[str, Any]] = []

    result = await converse(hass, entry, SIMPLE, deltas=deltas)

    assert speech(result) == MAIN_ANSWER
    assert hass.states.get(KITCHEN).state == "on"
    assert len(fast_server.chat_requests) == len(fast_replies)
    # The main model starts from the user's words: none of the fast attempt.
    first = scripted.chat_requests[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user"]
    assert first[-1]["content"] == SIMPLE
    # The listener heard the main model, not the fast attempt's words.
    said = _said(deltas)
    assert MAIN_ANSWER in said
    fast_words = [d["content"] for r in fast_replies for d in r.deltas if d.get("content")]
    assert fast_words
    assert not any(words in said for words in fast_words)
    trace = entry.runtime_data.last_turn
    assert trace is not None
    assert (trace.answered_by, trace.fast_failure) == ("main", failure)

    # The history the next turn sends is the main model's turn only, well formed.
    scripted.add(text("Anything else?"))
    await converse(hass, entry, "what is the capital of France?", result.conversation_id)
    history = scripted.chat_requests[-1]["messages"]
    assert [m["role"] for m in history] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert history[2]["tool_calls"][0]["function"]["name"] == TURN_ON_TOOL
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    assert diagnostics["model_turns"]["fast_failed"] == 1
    assert diagnostics["model_turns"]["main"] == 2


async def test_a_fast_action_that_ran_is_not_run_again(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    fast_server: ScriptedServer,
) -> None:
    """It acted, then said it could not: the turn stands, no second action."""
    fast_server.add(
        tool_calls((TURN_ON_TOOL, {"name": "Kitchen Light"})), text("Sorry, I could not.")
    )

    await converse(hass, entry, SIMPLE)

    assert scripted.chat_requests == []
    assert entry.runtime_data.last_turn.answered_by == "fast"


async def test_an_unreachable_fast_server_falls_back_to_main(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    fast_server: ScriptedServer,
) -> None:
    await fast_server.stop()
    scripted.add(*_turn_on_kitchen())

    result = await converse(hass, entry, SIMPLE)

    assert speech(result) == MAIN_ANSWER
    assert entry.runtime_data.last_turn.fast_failure == "server_error"


@pytest.mark.parametrize(
    "entry_options",
    [{**DEFAULT_OPTIONS, CONF_LOCAL_INTENTS: False, CONF_FAST_MODEL: MODEL}],
)
async def test_the_same_model_on_the_same_server(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    fast_server: ScriptedServer,
) -> None:
    scripted.add(text("It is on."), *_turn_on_kitchen())

    result = await converse(hass, entry, SIMPLE)

    assert speech(result) == MAIN_ANSWER
    assert fast_server.requests == []
    bodies = scripted.chat_requests
    assert [body["model"] for body in bodies] == [MODEL] * 3
    assert [m["role"] for m in bodies[1]["messages"]] == ["system", "user"]
    assert entry.runtime_data.last_turn.fast_failure == "no_tool_call"


USER, PASSWORD, QUERY_KEY, MAIN_KEY = "fastuser", "fast-secret-pw", "fast-query-key-9", "sk-main-77"


async def test_fast_server_credentials_stay_secret(
    hass: HomeAssistant,
    house: None,
    *,
    scripted: ScriptedServer,
    fast_server: ScriptedServer,
    hass_client: ClientSessionGenerator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = fast_server.url.replace("http://", f"http://{USER}:{PASSWORD}@")
    options = {
        **DEFAULT_OPTIONS,
        CONF_LOCAL_INTENTS: False,
        CONF_FAST_MODEL: FAST_MODEL,
        CONF_FAST_URL: f"{url}?api_key={QUERY_KEY}",
    }
    entry = majordome_entry(scripted.url, options, api_key=MAIN_KEY)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    fast_server.add(text("I cannot."))
    scripted.add(*_turn_on_kitchen())

    await converse(hass, entry, SIMPLE)

    [request] = [r for r in fast_server.requests if r.path.endswith("/chat/completions")]
    assert request.query == {"api_key": QUERY_KEY}
    assert request.headers["Authorization"].startswith("Basic ")  # its own, not the entry's key
    assert MAIN_KEY not in json.dumps(request.headers)
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    assert diagnostics["agents"][0]["data"][CONF_FAST_URL].startswith("http://**REDACTED**@")
    for where in (json.dumps(diagnostics), caplog.text, entry.title, agent_of(entry).title):
        for secret in (PASSWORD, QUERY_KEY, MAIN_KEY):
            assert secret not in where


async def test_agent_form_takes_the_fast_model_and_its_server(
    hass: HomeAssistant, entry: MockConfigEntry, fast_server: ScriptedServer
) -> None:
    agent = agent_of(entry)
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, SUBENTRY_AGENT),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": agent.subentry_id},
    )
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {CONF_MODEL: MODEL}
    )
    assert result["step_id"] == "agent"
    form = {**DEFAULT_OPTIONS, CONF_NAME: "Alfred", CONF_FAST_MODEL: f" {FAST_MODEL} "}

    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {**form, CONF_FAST_URL: "ftp://nowhere"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_FAST_URL: "invalid_url"}

    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {**form, CONF_FAST_URL: f" {fast_server.url} "}
    )
    await hass.async_block_till_done()
    assert result["type"] is FlowResultType.ABORT
    data = agent_of(entry).data
    assert (data[CONF_FAST_MODEL], data[CONF_FAST_URL]) == (FAST_MODEL, fast_server.url)


# --- The rule itself -------------------------------------------------------------------

NAMES = [routing.words(name) for name in ("Kitchen Light", "Chambre", "Salle de bain", "Entrée")]


@pytest.mark.parametrize(
    ("text_in", "last_reply", "expected"),
    [
        ("Turn on the kitchen light.", None, routing.Route.FAST),
        ("allume la lumière de la chambre", None, routing.Route.FAST),
        ("Éteins la lumière de l’entrée", None, routing.Route.FAST),  # "Entrée", elided
        ("Est-ce que la lumière de la chambre brille ?", None, routing.Route.FAST),  # 8 words
        ("Is the KITCHEN LIGHT on?", "Done.", routing.Route.FAST),
        ("and the chambre too", "Done.", routing.Route.SEVERAL),
        ("turn on the kitchen light, then the chambre", None, routing.Route.SEVERAL),
        ("éteins-la", "Done.", routing.Route.REFERS_BACK),
        ("the same in the chambre", "Done.", routing.Route.REFERS_BACK),
        ("the chambre", "Which room?", routing.Route.REFERS_BACK),
        ("turn on the kitchen lights", None, routing.Route.NAMES_NOTHING),
        ("tell me a joke", None, routing.Route.NAMES_NOTHING),
        ("please could you be so kind as to light the kitchen light", None, routing.Route.LONG),
    ],
)
def test_the_routing_rule(text_in: str, last_reply: str | None, expected: routing.Route) -> None:
    assert routing.route(text_in, last_reply, NAMES) is expected


async def test_house_names_are_the_exposed_ones(hass: HomeAssistant, house: None) -> None:
    names = routing.house_names(hass)
    assert routing.words("Kitchen Light") in names
    assert routing.words("Cuisine") in names  # an area's alias
    assert routing.words("Garage Light") not in names  # not exposed
    # What devtools.route_suite measures with: the same names, without a house.
    assert {tuple(name) for name in names} == {tuple(name) for name in demo_house_names()}


# --- Two embedded models: 0.5b fast, 1.5b main -----------------------------------------


def test_setup_llm_names_its_models() -> None:
    """An unknown model name is refused before anything is installed."""
    with pytest.raises(ValueError, match=r"known: 0\.5b, 1\.5b"):
        ensure_llm("3b")
    done = subprocess.run(
        [str(SETUP_SCRIPT), "3b"], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 1
    assert "unknown model '3b' (known: 0.5b, 1.5b)" in done.stderr
    assert LocalLlmServer(model_name="1.5b").model_name == "1.5b"
