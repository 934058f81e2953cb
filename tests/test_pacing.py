"""Many turns at once do their CPU-bound steps a few per pass of the event loop.

Fifty users speaking together made Home Assistant's loop late by half a second and more
(issue 12's fault bench): every turn built its tools, prompt and request in the same
pass. Counted here by passes of the loop, never by the clock.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.majordome import pacing, tools
from devtools.scripted_server import ScriptedServer, text
from homeassistant.core import HomeAssistant
from homeassistant.helpers import llm

from .helpers import converse, speech

USERS = 12


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
