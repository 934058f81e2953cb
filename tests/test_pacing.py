"""Many turns at once do their CPU-bound steps a few per pass of the event loop.

Fifty users speaking together made Home Assistant's loop late by half a second and more
(issue 12's fault bench): every turn built its tools, prompt and request in the same
pass. Counted here by passes of the loop, never by the clock.
"""

from __future__ import annotations

import asyncio
from typing import Any

from openai.resources.chat.completions import completions
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.majordome import compat, pacing, tools
from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import CONF_LOCAL_INTENTS
from devtools.scripted_server import ScriptedServer, text, tool_calls
from homeassistant.core import HomeAssistant
from homeassistant.helpers import llm

from .helpers import CLOCK_TOOL, converse, speech

USERS = 12


@pytest.fixture
def entry_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The default options, with overrides from indirect parametrization."""
    return {**DEFAULT_OPTIONS, **getattr(request, "param", {})}


async def _admitted_per_pass(started: list[int], users: int) -> list[int]:
    """How many of `users` started their step by each pass of the test's own task.

    The test's task runs once per pass: between two of its runs lie the end of a pass
    and the start of the next, so up to twice the steps of one pass.
    """
    counts: list[int] = []
    for _ in range(1000):
        before = len(started)
        await asyncio.sleep(0)
        counts.append(len(started) - before)
        if len(started) == users:
            return counts
    raise AssertionError(f"only {len(started)} of {users} steps ever started")


async def test_pacer_lets_a_few_through_per_pass() -> None:
    pacer = pacing.Pacer(per_pass=3)
    admitted: list[int] = []

    async def step(i: int) -> None:
        await pacer.async_wait()
        admitted.append(i)

    tasks = [asyncio.create_task(step(i)) for i in range(10)]
    counts = await _admitted_per_pass(admitted, 10)
    await asyncio.gather(*tasks)
    # The tasks started in the pass of the first count: three of them went through.
    assert counts[0] == 3
    assert max(counts) <= 3
    assert sorted(admitted) == list(range(10))  # every one, none lost


async def test_a_lone_step_never_waits() -> None:
    pacer = pacing.Pacer(per_pass=3)
    later: list[str] = []
    asyncio.get_running_loop().call_soon(later.append, "next pass")
    for _ in range(3):
        await pacer.async_wait()
    assert later == []  # all three went through in this pass, without yielding


async def test_a_cancelled_waiter_takes_no_slot_with_it() -> None:
    pacer = pacing.Pacer(per_pass=1)
    first = asyncio.create_task(pacer.async_wait())
    waiting = asyncio.create_task(pacer.async_wait())
    await asyncio.sleep(0)  # the first took the pass's slot, the second waits
    assert first.done()
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    admitted: list[int] = []

    async def step(i: int) -> None:
        await pacer.async_wait()
        admitted.append(i)

    tasks = [asyncio.create_task(step(i)) for i in range(4)]
    assert max(await _admitted_per_pass(admitted, 4)) == 1  # still one per pass
    await asyncio.gather(*tasks)


# Home Assistant's own sentences first (the local stage) or the model at once: with the
# local stage, 2025.4 matches in its executor, which spreads the turns by itself.
@pytest.mark.parametrize(
    "entry_options", [{CONF_LOCAL_INTENTS: False}, {CONF_LOCAL_INTENTS: True}], indirect=True
)
async def test_concurrent_turns_prepare_a_few_per_pass(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scripted.responder = lambda body: text("Hello.")
    prepared: list[int] = []
    format_tools = tools.format_tools

    def counted(api: llm.APIInstance) -> list[dict[str, Any]]:
        prepared.append(len(prepared))
        return format_tools(api)

    monkeypatch.setattr(tools, "format_tools", counted)
    turns = asyncio.gather(*(converse(hass, entry, f"hello {i}") for i in range(USERS)))
    counts = await _admitted_per_pass(prepared, USERS)
    results = await asyncio.wait_for(turns, 30)  # a generous bound: nothing hangs
    assert [speech(result) for result in results] == ["Hello."] * USERS
    # Before: all twelve in the first pass. Now a few per pass, and a turn's request
    # (its own paced step) shares the passes.
    assert max(counts) <= 2 * pacing.STEPS_PER_PASS
    assert len([count for count in counts if count]) >= USERS // (2 * pacing.STEPS_PER_PASS)


# Home Assistant would answer the time itself: the model's request is what is looked at.
@pytest.mark.parametrize("entry_options", [{CONF_LOCAL_INTENTS: False}], indirect=True)
async def test_messages_and_tools_skip_the_clients_conversion(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The request is JSON already: the client does not walk it by its type hints.

    openai 1.68 (Home Assistant 2025.4's) spent about 8 ms of the loop per call there
    with a dozen tools, more than the rest of the turn.
    """
    converted: list[dict[str, Any]] = []
    convert = completions.async_maybe_transform

    async def counted(data: Any, expected_type: Any) -> Any:
        converted.append(dict(data))
        return await convert(data, expected_type)

    monkeypatch.setattr(completions, "async_maybe_transform", counted)
    scripted.add(tool_calls((CLOCK_TOOL, {})), text("It is late."))
    result = await converse(hass, entry, "what time is it?")
    assert speech(result) == "It is late."
    assert len(converted) == 2
    assert [call["messages"] for call in converted] == [[], []]
    assert not any(isinstance(call["tools"], list) for call in converted)  # NOT_GIVEN
    # The server got everything, as before.
    first, second = scripted.chat_requests
    assert first["messages"][-1] == {"role": "user", "content": "what time is it?"}
    assert compat.base_tool_name(CLOCK_TOOL) in [
        tool["function"]["name"] for tool in first["tools"]
    ]
    assert second["messages"][-1]["role"] == "tool"
    assert second["tools"] == first["tools"]
