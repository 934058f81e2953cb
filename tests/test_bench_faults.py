"""The fault bench's counting (devtools/bench_faults.py), not the bench itself.

What it counts as an exception, a stall, a lost memory and an unanswered user, and the
scripted server's answers it relies on (made from the request; hanging up).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import aiohttp
import pytest

from custom_components.majordome.memory import Memory
from devtools.bench_faults import (
    SEEDED,
    ErrorLog,
    LagProbe,
    Tally,
    echo,
    is_answer,
    missing_memory,
    remembering,
)
from devtools.scripted_server import Reply, ScriptedServer


def _logged(name: str, level: int, *, thread: int | None = None) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, "message", None, None)
    if thread is not None:
        record.thread = thread
    return record


def test_an_exception_logged_by_majordome_is_counted() -> None:
    """A traceback Majordome logs (LOGGER.exception) reaches the count; a warning does not."""
    log = ErrorLog(outside_thread=None)
    logger = logging.getLogger("custom_components.majordome.test_bench_faults")
    logger.addHandler(log)
    try:
        try:
            int("boom")
        except ValueError:
            logger.exception("Voice reply failed")
        logger.warning("Turn failed (timeout)")  # handled: the user was told
    finally:
        logger.removeHandler(log)
    assert [record.getMessage() for record in log.records] == ["Voice reply failed"]


def test_unhandled_errors_count_but_not_the_outside_world_nor_the_bench() -> None:
    """asyncio's "never retrieved" is counted; the servers' thread and devtools are not."""
    log = ErrorLog(outside_thread=12345)
    for record in (
        _logged("asyncio", logging.ERROR),
        _logged("homeassistant.core", logging.CRITICAL),
        _logged("aiohttp.server", logging.ERROR, thread=12345),  # a scripted server's
        _logged("devtools.bench_faults", logging.ERROR),
        _logged("homeassistant.loader", logging.WARNING),
    ):
        log.handle(record)
    assert [record.name for record in log.records] == ["asyncio", "homeassistant.core"]


def test_a_late_tick_is_a_stall_counted_in_its_window_only() -> None:
    """Lateness over 100 ms is a stall, counted in the class's window (startup's is not)."""
    probe = LagProbe()
    probe.observe(due=1.0, now=1.5)  # during startup
    probe.observe(due=10.0, now=10.05)  # 50 ms: not a stall
    probe.observe(due=11.0, now=11.25)  # during the class
    assert probe.between(10.0, 12.0) == pytest.approx([0.25])
    assert probe.between(20.0, 30.0) == []


async def test_a_blocked_loop_is_seen_by_the_probe() -> None:
    """A callback that blocks the loop for 300 ms makes the next tick late by more than 100 ms."""
    probe = LagProbe()
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    probe.start(loop)
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # noqa: ASYNC251 - the fault under measure: a blocked event loop
        await asyncio.sleep(0.05)
    finally:
        probe.stop()
    stalls = probe.between(started, time.monotonic())
    assert len(stalls) == 1
    assert stalls[0] > 0.1


def test_a_stall_a_full_collection_explains_is_counted_apart() -> None:
    """Over half the lateness spent in a generation-2 collection: a gc stall, not a stall."""
    probe = LagProbe()
    probe.full_collections.append((11.0, 11.2))
    probe.observe(due=11.0, now=11.25)  # 250 ms late, 200 ms of it collecting
    probe.observe(due=12.0, now=12.3)  # 300 ms late, no collection
    probe.full_collections.append((13.0, 13.05))
    probe.observe(due=13.0, now=13.4)  # 400 ms late, 50 ms collecting: not explained
    stalls, collected = probe.split(10.0, 14.0)
    assert stalls == pytest.approx([0.3, 0.4])
    assert collected == pytest.approx([0.25])


async def test_the_probe_times_full_collections_while_it_runs() -> None:
    """gc.collect() (a full collection) is seen; after stop() nothing more is recorded."""
    probe = LagProbe()
    probe.start(asyncio.get_running_loop())
    try:
        before = time.monotonic()
        gc.collect()
        after = time.monotonic()
    finally:
        probe.stop()
    assert [
        (begin, end) for begin, end in probe.full_collections if before <= begin <= end <= after
    ]
    seen = len(probe.full_collections)
    gc.collect()
    assert len(probe.full_collections) == seen


def test_answers_count_only_when_given_and_not_someone_elses() -> None:
    """No answer, an empty one or another user's is not an answer; an error sentence is."""
    assert not is_answer(None, "user-1: hi")
    assert not is_answer("  ", "user-1: hi")
    assert not is_answer("Hello user-2.", "user-1: hi")  # cross-talk
    assert is_answer("The server did not answer.", "user-1: hi")
    assert not is_answer("The server did not answer.", "user-1: hi", own=True)
    assert is_answer("Hello user-1.", "user-1: hi", own=True)
    assert is_answer("(ignored)", "")


def test_lost_memory_counts_the_profile_seeded_facts_and_acknowledged_writes() -> None:
    """What was there or acknowledged and is gone is lost; what was added is not."""
    now = Memory(profile=SEEDED.profile, facts=(*SEEDED.facts[1:], "fact of user-1", "extra"))
    assert missing_memory(SEEDED, ["fact of user-1", "fact of user-2"], now) == 2
    assert missing_memory(SEEDED, [], Memory()) == 1 + len(SEEDED.facts)


def test_tallies_add_up_and_keep_the_longest_stall() -> None:
    """The total sums every figure but the longest stall, which is the largest."""
    total = Tally()
    total.add(Tally(tried=3, stalls=1, max_stall_ms=500, unanswered=1))
    total.add(Tally(tried=2, exceptions=1, stalls=2, max_stall_ms=200, lost=1))
    assert total == Tally(tried=5, exceptions=1, stalls=3, max_stall_ms=500, lost=1, unanswered=1)


async def test_the_scripted_server_answers_from_the_request_and_hangs_up(
    scripted: ScriptedServer,
) -> None:
    """With no reply queued, the responder answers; a hang-up closes without answering."""
    scripted.responder = echo
    url = f"{scripted.url}/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "user-7: hi"}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body) as response:
            answer = await response.json()
        assert answer["choices"][0]["message"]["content"] == "Hello user-7."
        scripted.responder = remembering
        async with session.post(url, json=body) as response:
            call = (await response.json())["choices"][0]["message"]["tool_calls"][0]
        assert call["function"]["name"] == "remember"
        assert "fact of user-7" in call["function"]["arguments"]
        scripted.add(Reply(hang_up=True))
        with pytest.raises(aiohttp.ClientError):
            async with session.post(url, json=body) as response:
                await response.read()
