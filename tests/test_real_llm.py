"""End to end on the embedded model: llama.cpp's server, Qwen2.5-Coder 0.5B, real HTTP.

The model is weak, so these tests check structure (a tool was called, the state
changed, the stream ended), not eloquence. Temperature 0 and the server's fixed
sampling seed (devtools/llm_server_main.py) keep them repeatable.
The server starts once for the module; scripts/setup-llm installs it on first use.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
import pytest_socket

from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import (
    CONF_LOCAL_INTENTS,
    CONF_MAX_TOKENS,
    CONF_TEMPERATURE,
    CONF_TIMEOUT,
)
from devtools.house import async_setup_house
from devtools.llm import LocalLlmServer
from homeassistant.auth.models import User
from homeassistant.components import conversation
from homeassistant.components.conversation.chat_log import DATA_CHAT_LOGS
from homeassistant.core import Context, HomeAssistant
from homeassistant.setup import async_setup_component

from .helpers import majordome_entry

pytestmark = pytest.mark.real_llm


@pytest.fixture(scope="module")
def llm_server() -> Iterator[LocalLlmServer]:
    """The real llama.cpp server on 127.0.0.1."""
    # Module fixtures run before the per-test socket guard is lifted; the server's
    # readiness probe needs loopback now.
    pytest_socket.enable_socket()
    with LocalLlmServer() as server:
        yield server


@pytest.fixture
async def real_entry(
    hass: HomeAssistant, socket_enabled: None, llm_server: LocalLlmServer
) -> MockConfigEntry:
    assert await async_setup_component(hass, "homeassistant", {})
    await async_setup_house(hass, "demo")
    entry = majordome_entry(
        llm_server.base_url,
        # A slow CI machine may take a minute to read the first prompt.
        {
            **DEFAULT_OPTIONS,
            CONF_LOCAL_INTENTS: False,
            CONF_TEMPERATURE: 0.0,
            CONF_MAX_TOKENS: 96,
            CONF_TIMEOUT: 600,
        },
        model=llm_server.model,
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


async def test_turn_on_the_kitchen_light(hass: HomeAssistant, real_entry: MockConfigEntry) -> None:
    assert hass.states.get("light.kitchen_light").state == "off"

    result = await conversation.async_converse(
        hass, "turn on the kitchen light", None, Context(), agent_id=real_entry.entry_id
    )

    trace = real_entry.runtime_data.last_turn
    assert trace is not None
    assert trace.error is None, result.response.speech
    # A tool call, then a final answer that ended the stream normally.
    assert len(trace.completions) >= 2
    # The server ended the last completion itself (stop, or max_tokens for a model
    # that rambles), and Majordome answered something.
    assert trace.completions[-1].finish_reason is not None
    assert result.response.speech["plain"]["speech"]
    assert hass.states.get("light.kitchen_light").state == "on"
    # The second call reused the first one's prompt from the server's cache.
    assert (trace.completions[1].cache_n or 0) > 0


async def test_onboarding_answer_becomes_the_profile(
    hass: HomeAssistant, real_entry: MockConfigEntry, hass_admin_user: User
) -> None:
    """The household introduces itself; the model condenses it into the profile."""
    context = Context(user_id=hass_admin_user.id)
    first = await conversation.async_converse(
        hass, "good evening", None, context, agent_id=real_entry.entry_id
    )
    assert first.continue_conversation is True  # it asked the introduction question

    await conversation.async_converse(
        hass,
        "We are Alice and Bob. Bob loves jazz and Alice wants short answers.",
        first.conversation_id,
        context,
        agent_id=real_entry.entry_id,
    )
    profile = real_entry.runtime_data.memory.memory.profile
    assert profile

    third = await conversation.async_converse(
        hass, "what time is it?", None, context, agent_id=real_entry.entry_id
    )
    chat_log = hass.data[DATA_CHAT_LOGS][third.conversation_id]
    assert profile in chat_log.content[0].content
