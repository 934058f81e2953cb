"""Metacognition through the agent: what a satellite transcribed is screened before any
model call; an ignored utterance costs nothing, says nothing and leaves no trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_capture_events
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
import yaml

from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import (
    CONF_ALLOWED_SCRIPTS,
    CONF_FAST_MODEL,
    CONF_LOCAL_INTENTS,
    CONF_MEMORY_EVERY,
    CONF_SCREEN_LLM,
    CONF_SCREEN_TYPED,
    CONF_SCREEN_VOICE,
    EVENT_UTTERANCE_IGNORED,
)
from custom_components.majordome.memory import Onboarding
from devtools.scripted_server import Reply, ScriptedServer, error, text
from homeassistant.components import conversation
from homeassistant.core import HomeAssistant

from .helpers import converse, speech

CORPUS = yaml.safe_load((Path(__file__).parent / "corpus" / "gate.yaml").read_text("utf-8"))
SATELLITE = "satellite-kitchen"


@pytest.fixture
def entry_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """No background memory summary here: it would take replies meant for the turns."""
    return {
        **DEFAULT_OPTIONS,
        CONF_MEMORY_EVERY: 0,
        CONF_LOCAL_INTENTS: False,  # the model takes every turn
        **getattr(request, "param", {}),
    }


@pytest.fixture(autouse=True)
def introduced(entry: MockConfigEntry) -> None:
    """The household was introduced already: no question is added to the replies."""
    entry.runtime_data.memory.update(onboarding=Onboarding.DONE)


async def hear(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    sentence: str,
    conversation_id: str | None = None,
    *,
    device_id: str | None = SATELLITE,
) -> conversation.ConversationResult:
    """What a voice satellite sends: the transcript, with its device id."""
    return await converse(hass, entry, sentence, conversation_id, device_id=device_id)


async def test_every_hallucination_is_dropped_before_any_model_call(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    events = async_capture_events(hass, EVENT_UTTERANCE_IGNORED)

    for utterance in CORPUS["hallucinations"]:
        result = await hear(hass, entry, utterance)
        assert speech(result) == "", utterance
        assert result.continue_conversation is False

    await hass.async_block_till_done()
    assert scripted.chat_requests == []
    assert [event.data["length"] for event in events] == [len(u) for u in CORPUS["hallucinations"]]
    assert {event.data["stage"] for event in events} == {1}
    assert all(event.data["device_id"] == SATELLITE for event in events)
    assert sum(entry.runtime_data.ignored.values()) == len(CORPUS["hallucinations"])


async def test_no_genuine_request_is_dropped(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(*(text("Okay.") for _ in CORPUS["genuine"]))
    for utterance in CORPUS["genuine"]:
        assert speech(await hear(hass, entry, utterance)) == "Okay.", utterance
    assert [r["messages"][-1]["content"] for r in scripted.chat_requests] == CORPUS["genuine"]


async def test_an_ignored_utterance_leaves_the_history_clean(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(text("Which room?"), text("Kitchen light on."))
    asked = await hear(hass, entry, "turn on the light")
    ignored = await hear(
        hass, entry, "Sous-titres réalisés par la communauté d'Amara.org", asked.conversation_id
    )
    await hear(hass, entry, "the kitchen", asked.conversation_id)

    assert speech(ignored) == ""
    assert [m["content"] for m in scripted.chat_requests[-1]["messages"][1:]] == [
        "turn on the light",
        "Which room?",
        "the kitchen",
    ]


async def test_typed_text_is_not_screened_by_default(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(text("You are welcome."))
    result = await hear(hass, entry, "Thank you.", device_id=None)
    assert speech(result) == "You are welcome."


@pytest.mark.parametrize(
    "entry_options", [{CONF_SCREEN_TYPED: True, CONF_SCREEN_VOICE: False}], indirect=True
)
async def test_screening_options_choose_the_doors(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(text("You are welcome."))
    assert speech(await hear(hass, entry, "Thank you.", device_id=None)) == ""
    assert speech(await hear(hass, entry, "Thank you.")) == "You are welcome."
    assert len(scripted.chat_requests) == 1


@pytest.mark.parametrize(
    "entry_options", [{CONF_ALLOWED_SCRIPTS: ["Latin", "Cyrillic"]}], indirect=True
)
async def test_allowed_scripts_option(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(text("Включаю."))
    assert speech(await hear(hass, entry, "включи свет на кухне")) == "Включаю."
    assert speech(await hear(hass, entry, "把厨房的灯打开")) == ""


# --- Stage 2 -------------------------------------------------------------------------

STAGE2 = {CONF_SCREEN_LLM: True}


@pytest.mark.parametrize("entry_options", [STAGE2], indirect=True)
async def test_stage2_no_drops_the_utterance_without_a_main_call(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    events = async_capture_events(hass, EVENT_UTTERANCE_IGNORED)
    scripted.add_side(text("NO"))
    result = await hear(hass, entry, "and then she told him to leave")
    await hass.async_block_till_done()

    assert speech(result) == ""
    [check] = scripted.chat_requests
    assert not check.get("stream")
    assert "and then she told him to leave" in check["messages"][-1]["content"]
    [event] = events
    assert (event.data["reason"], event.data["stage"]) == ("not_addressed", 2)


@pytest.mark.parametrize("entry_options", [STAGE2], indirect=True)
async def test_stage2_yes_answers_and_shares_the_prefix(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add_side(text("YES"))
    scripted.add(text("Light on."))
    result = await hear(hass, entry, "kitchen light on")

    assert speech(result) == "Light on."
    check, main = scripted.chat_requests
    # Same system prompt, same history, same tools: the server's cache carries over.
    assert check["messages"][:-1] == main["messages"][:-1]
    assert check["tools"] == main["tools"]


@pytest.mark.parametrize("entry_options", [STAGE2], indirect=True)
@pytest.mark.parametrize(
    "check_reply",
    [error(500), text("maybe"), Reply(deltas=[{"content": "NO"}], headers_delay_s=6.0)],
    ids=["server-error", "garbage", "timeout"],
)
async def test_stage2_fails_open(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, check_reply: Reply
) -> None:
    scripted.add_side(check_reply)
    scripted.add(text("Light on."))
    assert speech(await hear(hass, entry, "kitchen light on")) == "Light on."


@pytest.mark.parametrize(
    "entry_options", [{**STAGE2, CONF_FAST_MODEL: "other-model"}], indirect=True
)
async def test_stage2_fast_model(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add_side(text("YES"))
    scripted.add(text("Okay."))
    await hear(hass, entry, "lights off")
    check, main = scripted.chat_requests
    assert check["model"] == "other-model"
    assert "tools" not in check  # another model shares no cache: no need for the tools
    assert main["model"] == "scripted-model"


@pytest.mark.parametrize("entry_options", [STAGE2], indirect=True)
async def test_stage2_skips_what_stage1_dropped(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    assert speech(await hear(hass, entry, "Thanks for watching!")) == ""
    assert scripted.chat_requests == []


async def test_diagnostics_count_ignored_utterances(
    hass: HomeAssistant, entry: MockConfigEntry, hass_client: Any
) -> None:
    await hear(hass, entry, "[Music]")
    await hear(hass, entry, "Thank you.")
    await hear(hass, entry, "you")
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    assert sum(diagnostics["ignored_utterances"].values()) == 3
