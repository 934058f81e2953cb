"""What a voice user hears: the whole reply, whatever Majordome adds after the model.

Home Assistant 2025.6+ (`_attr_supports_streaming`) speaks a reply from the chat log's
deltas once more than 60 characters of it have streamed (or text was followed by a tool
call), and then never reads the final speech. So any sentence Majordome adds after the
model's stream (the introduction question, "Done.", an apology) must stream as well.
`heard` plays the pipeline's rule (assist_pipeline's chat_log_delta_listener) on the deltas
a listener saw; the real pipeline with a satellite is tested in test_voice_satellite.
"""

from __future__ import annotations

from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import CONF_LOCAL_INTENTS
from devtools.house import async_setup_house
from devtools.scripted_server import ScriptedServer, error, text, tool_calls
from homeassistant.auth.models import User
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component

from .helpers import converse, speech

STREAM_RESPONSE_CHARS = 60  # Home Assistant's threshold (assist_pipeline)
LONG = "The kitchen light has been on since this morning, and it is quite bright now."


@pytest.fixture
def entry_options() -> dict[str, Any]:
    """The default options; the model takes every turn (not Home Assistant's sentences)."""
    return {**DEFAULT_OPTIONS, CONF_LOCAL_INTENTS: False}


def heard(deltas: list[dict[str, Any]], final_speech: str) -> str:
    """What Home Assistant's pipeline speaks, from the deltas and the final speech."""
    parts: list[str] = []
    role = None
    last = ""  # the last content queued, as the pipeline keeps it
    count = 0
    streaming = False
    for delta in deltas:
        if new_role := delta.get("role"):
            role = new_role
            if role == "assistant" and last and not last[-1].isspace():
                parts.append(" ")
                last = " "
        if role != "assistant":
            continue
        if content := delta.get("content") or "":
            parts.append(content)
            last = content
        streaming = streaming or (count > 0 and bool(delta.get("tool_calls")))
        count += len(content)
        streaming = streaming or count > STREAM_RESPONSE_CHARS
    return "".join(parts).strip() if streaming else final_speech


async def test_the_introduction_question_is_heard_after_a_long_reply(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, hass_admin_user: User
) -> None:
    scripted.add(text(LONG[:30], LONG[30:]))
    deltas: list[dict[str, Any]] = []
    result = await converse(hass, entry, "is the light on?", user=hass_admin_user, deltas=deltas)
    assert speech(result).startswith(LONG)
    assert speech(result) != LONG  # the question was added...
    assert heard(deltas, speech(result)) == speech(result)  # ...and is heard


async def test_done_is_heard_after_a_streamed_preamble(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    assert await async_setup_component(hass, "homeassistant", {})
    await async_setup_house(hass, "demo")
    preamble = tool_calls(("HassTurnOn", {"name": "Kitchen Light"}))
    preamble.deltas.insert(0, {"content": LONG})
    scripted.add(preamble, text(""))
    deltas: list[dict[str, Any]] = []
    result = await converse(hass, entry, "turn on the kitchen light", deltas=deltas)
    assert speech(result) == "Done."
    assert heard(deltas, speech(result)) == f"{LONG} Done."


async def test_an_apology_is_heard_after_a_streamed_preamble(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    preamble = tool_calls(("remember", {"fact": 1}))  # refused: the model must go on
    preamble.deltas.insert(0, {"content": LONG})
    scripted.add(preamble, error(500))
    deltas: list[dict[str, Any]] = []
    result = await converse(hass, entry, "remember this", deltas=deltas)
    apology = "Sorry, the language model server had an error."
    assert speech(result) == apology
    assert heard(deltas, speech(result)) == f"{LONG} {apology}"
