"""The fault bench: every class of fault on a real Home Assistant, in figures.

    scripts/bench faults [--only NAME,...]

A real Home Assistant core (devtools/hass_runner.py) with a Majordome entry, its scripted
OpenAI-compatible server and its voice endpoint's clients; each class of fault is played
by a few users (conversations or voice-endpoint clients) and counted:

- tried: the attempts (users, or writes for the memory races);
- exceptions: ERROR records in Home Assistant's log (Majordome's, Home Assistant's,
  asyncio's "never retrieved") and exceptions raised to a caller, during the class;
- stalls: event-loop lateness over 100 ms seen by a probe in Home Assistant's loop, during
  the class (startup is over before the first class; an idle window is the baseline);
- gc_stalls: the stalls a full garbage collection of the interpreter explains (over half
  the lateness spent in a generation-2 collection), counted apart from `stalls`: Python
  3.13's collector stops the whole process, whose heap holds this bench's servers and
  clients too;
- lost: memory missing after the class (the seeded household memory, and every write that
  was acknowledged);
- unanswered: users without an answer within the deadline, or with someone else's.

The servers and clients run on a loop of their own, in a thread ("outside"): their work
is not Home Assistant's and is neither probed nor logged as its. The last line of stdout
is the JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine, Iterator, Sequence
import contextlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
import gc
import json
import logging
from pathlib import Path
import re
import sys
import tempfile
import threading
import time
from typing import Any

import aiohttp

from custom_components.majordome.const import CONF_MEMORY_EVERY, CONF_TIMEOUT, DOMAIN, VOICE_URL
from custom_components.majordome.memory import Memory
from custom_components.majordome.models import MajordomeConfigEntry
from devtools.bench_common import async_configure_agent, async_create_entry, print_summary, progress
from devtools.hass_runner import running_home_assistant
from devtools.scripted_server import (
    Reply,
    ScriptedServer,
    endless,
    error,
    huge,
    not_utf8,
    text,
    tool_calls,
)
from homeassistant.components import conversation
from homeassistant.config_entries import SOURCE_RECONFIGURE
from homeassistant.const import CONF_URL
from homeassistant.core import Context, HomeAssistant
from homeassistant.setup import async_setup_component

STALL_S = 0.1  # event-loop lateness counted as a stall
PROBE_EVERY_S = 0.02
SETTLE_S = 0.5  # after a class: late log lines and background work are still its own
DEADLINE_S = 30.0  # a user without an answer by then was not answered
TIMEOUT_S = 5  # the agent's server timeout (the option's minimum): faults end quickly
BASELINE_S = 1.0
LOG = logging.getLogger(__name__)

type Responder = Callable[[dict[str, Any]], Reply]

# --- What is counted (pure: tests/test_bench_faults.py) ------------------------------


def reaches_home_assistant(record: logging.LogRecord, outside_thread: int | None) -> bool:
    """Whether a log record is an error of Home Assistant's (Majordome's included).

    Errors of the outside thread (the scripted servers, the clients) and of the bench
    itself are not.
    """
    return (
        record.levelno >= logging.ERROR
        and record.thread != outside_thread
        and not record.name.startswith("devtools")
    )


class ErrorLog(logging.Handler):
    """Keeps the records that reach Home Assistant, in order."""

    def __init__(self, outside_thread: int | None = None) -> None:
        """Count nothing from `outside_thread`."""
        super().__init__(logging.ERROR)
        self.outside_thread = outside_thread
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record if it is Home Assistant's."""
        if reaches_home_assistant(record, self.outside_thread):
            self.records.append(record)


@dataclass
class LagProbe:
    """How late the event loop runs a callback due every `every_s`: its stalls.

    It also times the interpreter's full (generation 2) garbage collections, to tell the
    stalls they explain from the others. (The loop's clock is time.monotonic.)
    """

    every_s: float = PROBE_EVERY_S
    threshold_s: float = STALL_S
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (when, lateness)
    full_collections: list[tuple[float, float]] = field(default_factory=list)  # (start, end)
    _handle: asyncio.TimerHandle | None = None
    _collecting_since: float | None = None

    def observe(self, due: float, now: float) -> None:
        """Note a tick due at `due` that ran at `now` (monotonic seconds)."""
        if (late := now - due) > self.threshold_s:
            self.stalls.append((now, late))

    def between(self, start: float, end: float) -> list[float]:
        """The stalls (their lateness) that ended within [start, end]."""
        return [late for when, late in self.stalls if start <= when <= end]

    def collected_during(self, when: float, late: float) -> float:
        """Seconds of full garbage collection within the stall that ended at `when`."""
        start = when - late
        return sum(
            max(0.0, min(end, when) - max(begin, start)) for begin, end in self.full_collections
        )

    def split(self, start: float, end: float) -> tuple[list[float], list[float]]:
        """The stalls within [start, end]: those a full collection does not explain, and the rest.

        A collection explains a stall when over half its lateness was spent collecting.
        """
        others: list[float] = []
        collected: list[float] = []
        for when, late in self.stalls:
            if start <= when <= end:
                explained = self.collected_during(when, late) > late / 2
                (collected if explained else others).append(late)
        return others, collected

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._collecting_since = time.monotonic()
        elif self._collecting_since is not None:
            self.full_collections.append((self._collecting_since, time.monotonic()))
            self._collecting_since = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Tick on `loop` until stop()."""

        def tick(due: float) -> None:
            now = loop.time()
            self.observe(due, now)
            self._handle = loop.call_at(now + self.every_s, tick, now + self.every_s)

        first = loop.time() + self.every_s
        self._handle = loop.call_at(first, tick, first)
        gc.callbacks.append(self._on_collection)

    def stop(self) -> None:
        """Stop ticking."""
        if self._handle is not None:
            self._handle.cancel()
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_collection)


TAG_RE = re.compile(r"user-\d+")


def tag_of(said: str) -> str | None:
    """The user's tag ("user-7") in what it said, looked for in its first 100 characters."""
    match = TAG_RE.search(said[:100])
    return match.group() if match else None


def is_answer(answer: str | None, said: str, own: bool = False) -> bool:
    """Whether a user got an answer and not someone else's (`own`: one naming the user)."""
    if not answer or not answer.strip():
        return False
    named = TAG_RE.findall(answer)
    return named == [tag_of(said)] if own else not named or named == [tag_of(said)]


def missing_memory(expected: Memory, facts: Sequence[str], now: Memory) -> int:
    """What `now` lost of the `expected` profile and facts, and of the acknowledged `facts`."""
    wanted = set(expected.facts) | set(facts)
    return int(expected.profile != now.profile) + len(wanted - set(now.facts))


@dataclass
class Played:
    """What a class did: its attempts, the users not answered, the facts acknowledged."""

    tried: int
    unanswered: int
    facts: list[str] = field(default_factory=list)  # must all be in memory after
    lost: int = 0  # writes lost otherwise (a cleared part that came back)


@dataclass
class Tally:
    """The figures of one class."""

    tried: int = 0
    exceptions: int = 0
    stalls: int = 0
    max_stall_ms: int = 0
    gc_stalls: int = 0
    lost: int = 0
    unanswered: int = 0

    def add(self, other: Tally) -> None:
        """Add another's figures (max_stall_ms: the larger)."""
        for name, value in asdict(other).items():
            merged = max if name == "max_stall_ms" else int.__add__
            setattr(self, name, merged(getattr(self, name), value))


# --- The scripted server's answers -------------------------------------------------


def _last(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or [{}]
    return dict(messages[-1])


def echo(body: dict[str, Any]) -> Reply:
    """Name the user back: whose answer it is shows in it."""
    said = next(
        (str(m.get("content") or "") for m in reversed(body["messages"]) if m["role"] == "user"),
        "",
    )
    return text("Hello ", f"{tag_of(said) or 'there'}.")


def after_tool(first: Reply) -> Responder:
    """`first` (a tool call), then an echo once a tool answered."""
    return lambda body: echo(body) if _last(body).get("role") == "tool" else first


def remembering(body: dict[str, Any]) -> Reply:
    """Call `remember` with a fact of the user's own, then echo."""
    if _last(body).get("role") == "tool":
        return echo(body)
    return tool_calls(("remember", {"fact": f"fact of {tag_of(str(_last(body)['content']))}"}))


def slow_summary(body: dict[str, Any]) -> Reply:
    """Echo turns; a summary (not streamed) comes after 1.5 s."""
    if body.get("stream"):
        return echo(body)
    return Reply(deltas=[{"content": "Likes jazz."}], headers_delay_s=1.5)


def loop_forever(body: dict[str, Any]) -> Reply:
    """A model that calls a tool again after every tool result."""
    return tool_calls(("get_time", {}))


# --- The classes, as data -----------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """Users sending `say` ("{i}": their number) while the server answers with `responder`."""

    name: str
    responder: Responder = echo
    users: int = 3
    say: str = "user-{i}: is the kitchen light on?"
    conversation: bool = True  # through Home Assistant's conversation API
    voice: bool = False  # through the voice endpoint's text message
    server_down: bool = False  # nothing listens on the server's port
    own: bool = False  # each answer must name its user (the server echoes the tag): no cross-talk
    raw: bool = False  # the voice client sends `say` as its whole frame, not in a text message


def _always(reply: Reply) -> Responder:
    return lambda body: reply


PATHOLOGICAL = "(" * 80_000  # unclosed brackets: 80 kB, not 1 MB, while the screening is quadratic

FAULTS: tuple[Fault, ...] = (
    Fault("server_down", server_down=True),
    Fault("server_refusing", _always(Reply(hang_up=True))),
    Fault("server_4xx", _always(error(404, "model not found"))),
    Fault("server_5xx", _always(error(503, "overloaded"))),
    Fault("server_timing_out", _always(Reply(deltas=[{"content": "late"}], headers_delay_s=12))),
    Fault(
        "stream_broken",
        _always(Reply(deltas=[{"content": "Hello "}] * 5, break_after=3)),
    ),
    Fault("stream_forever", _always(endless("la ", chunk_delay_s=0.005))),
    Fault("invalid_utf8", _always(not_utf8("Caf\u00e9 ouvert, \u00ff."))),
    Fault("reply_10mb", _always(huge(10 * 1024 * 1024)), users=1),
    Fault("tool_invalid_json", after_tool(tool_calls(("HassTurnOn", '{"name": "Kitchen Li')))),
    Fault("tool_unknown", after_tool(tool_calls(("open_the_pod_bay_doors", {"now": True})))),
    Fault("tool_loop", loop_forever),
    Fault("input_empty", say="", users=1, voice=True),
    Fault("input_100kb", say="user-{i} " + "word " * 20_000, users=1, voice=True),
    Fault("input_1mb", say="user-{i} " + "word " * 200_000, users=1, voice=True),
    Fault("input_pathological", say=PATHOLOGICAL, users=1, voice=True),
    Fault("input_10mb_voice_frame", say="x" * 10_000_000, users=1, conversation=False, voice=True),
    Fault(
        "input_deep_json_voice_frame",
        say="[" * 100_000,
        users=1,
        conversation=False,
        voice=True,
        raw=True,
    ),
    Fault("concurrent_50_conversations", users=50, own=True),
    Fault("concurrent_50_voice_clients", users=50, conversation=False, voice=True, own=True),
)

SEEDED = Memory(
    profile="Alice and Bob live here.",
    facts=("The door code is 4821.", "Bob is allergic to nuts.", "The cat is called Miso."),
)


# --- The bench ----------------------------------------------------------------------


class Outside:
    """The world outside Home Assistant (servers, clients): a loop of its own, in a thread."""

    def __init__(self) -> None:
        """Start the thread."""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="outside", daemon=True)
        self.thread.start()

    async def run[T](self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` outside, from a loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def run_sync[T](self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` outside, from no loop."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        """Stop the loop and the thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Bench:
    """One Home Assistant's bench: its entry, server, probe and log."""

    hass: HomeAssistant
    entry: MajordomeConfigEntry
    outside: Outside
    server: ScriptedServer
    probe: LagProbe
    log: ErrorLog
    token: str = ""
    user_id: str | None = None  # the person the users speak as (memory is a person's)
    raised: int = 0  # exceptions raised to the bench (a caller of Home Assistant)

    @property
    def memory(self) -> Memory:
        """The household's memory now."""
        return self.entry.runtime_data.memory.memory

    async def async_converse(self, said: str, conversation_id: str | None = None) -> str | None:
        """One user's turn through Home Assistant's conversation API: the answer's speech."""
        try:
            async with asyncio.timeout(DEADLINE_S):
                result = await conversation.async_converse(
                    self.hass, said, conversation_id, Context(user_id=self.user_id), language="en",
                    agent_id=self.entry.entry_id,
                )  # fmt: skip
        except TimeoutError:
            return None
        except Exception as err:  # noqa: BLE001 - an exception that reached the caller: counted
            self._raised(err)
            return None
        return str(result.response.speech.get("plain", {}).get("speech", ""))

    async def async_voice(self, said: str, raw: bool = False) -> str | None:
        """One client of the voice endpoint saying `said` as text: what it was answered.

        `raw`: `said` is sent as the whole frame, not in a text message.
        """
        url = f"ws://127.0.0.1:{self.hass.http.server_port}{VOICE_URL}"
        return await self.outside.run(
            _async_voice_client(url, self.token, self.entry.entry_id, said, raw)
        )

    async def async_call(self, service: str, **data: Any) -> bool:
        """Call a memory service as a person would; whether it worked."""
        try:
            await self.hass.services.async_call(
                DOMAIN,
                service,
                {"config_entry_id": self.entry.entry_id, **data},
                blocking=True,
                context=Context(user_id=self.user_id),
                return_response=True,
            )
        except Exception as err:  # noqa: BLE001 - an exception that reached the caller: counted
            self._raised(err)
            return False
        return True

    def _raised(self, err: Exception) -> None:
        self.raised += 1
        LOG.warning("Raised to the caller: %r", err)

    async def async_measure(self, name: str, play: Coroutine[Any, Any, Played]) -> Tally:
        """Play a class on the seeded memory; count what it did to Home Assistant."""
        self.entry.runtime_data.memory.update(profile=SEEDED.profile, facts=SEEDED.facts)
        logged, raised, started = len(self.log.records), self.raised, time.monotonic()
        played = await play  # (a coroutine starts when awaited: on the seeded memory)
        await asyncio.sleep(SETTLE_S)
        stalls, collected = self.probe.split(started, time.monotonic())
        tally = Tally(
            tried=played.tried,
            exceptions=len(self.log.records) - logged + self.raised - raised,
            stalls=len(stalls),
            max_stall_ms=round(max(stalls, default=0) * 1000),
            gc_stalls=len(collected),
            lost=missing_memory(SEEDED, played.facts, self.memory) + played.lost,
            unanswered=played.unanswered,
        )
        progress(f"{name}: {asdict(tally)}")
        return tally


async def _async_voice_client(
    url: str, token: str, entry_id: str, said: str, raw: bool
) -> str | None:
    """Connect, authenticate, say `said`: the reply's text, an error's or "(ignored)"."""
    try:
        async with (
            asyncio.timeout(DEADLINE_S),
            aiohttp.ClientSession() as session,
            session.ws_connect(url, max_msg_size=0) as socket,
        ):
            await socket.receive_json()  # auth_required
            await socket.send_json({"type": "auth", "access_token": token})
            text_message = {"type": "text", "text": said, "language": "en", "entry_id": entry_id}
            # Read while writing: a server refusing a huge frame answers (and hangs up)
            # before the client has finished sending it.
            answer = asyncio.create_task(_async_answer(socket))
            # (What the server said before it hung up is in `answer`.)
            with contextlib.suppress(OSError, aiohttp.ClientError):
                await socket.send_str(said if raw else json.dumps(text_message))
            return await answer
    except (OSError, aiohttp.ClientError, ValueError):  # TimeoutError and resets are OSErrors
        return None
    return None


async def _async_answer(socket: aiohttp.ClientWebSocketResponse) -> str | None:
    """The reply's text, an error's, "(ignored)", or the close code's meaning; None if none."""
    async for message in socket:
        if message.type is not aiohttp.WSMsgType.TEXT:
            continue
        event = json.loads(message.data)
        if event["type"] == "reply_end":
            return str(event.get("text", ""))
        if event["type"] in ("error", "ignored", "stopped", "auth_invalid"):
            return str(event.get("message") or f"({event['type']})")
    if socket.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
        return "(closed: message too big)"  # the protocol's own answer (RFC 6455)
    return None


async def _async_play_users(bench: Bench, fault: Fault) -> Played:
    """Every user of the class at once; how many were not answered (or not their own)."""
    said = [fault.say.replace("{i}", str(i)) for i in range(fault.users)]
    attempts: list[Coroutine[Any, Any, str | None]] = []
    if fault.conversation:
        attempts += [bench.async_converse(s) for s in said]
    if fault.voice:
        attempts += [bench.async_voice(s, fault.raw) for s in said]
    sent = [s for _ in range(int(fault.conversation) + int(fault.voice)) for s in said]
    answers = await asyncio.gather(*attempts)
    wrong = sum(not is_answer(a, s, fault.own) for a, s in zip(answers, sent, strict=True))
    return Played(len(answers), wrong)


async def _async_remembering_users(bench: Bench, users: int, first: int) -> Played:
    """Users asking to remember a fact each, at once: the facts acknowledged.

    A fact is acknowledged when the turn went through: the model answered after the tool
    (the answer names the user); an error sentence answers the user but acknowledges nothing.
    """
    said = [f"user-{first + i}: remember this" for i in range(users)]
    answers = await asyncio.gather(*(bench.async_converse(s) for s in said))
    pairs = list(zip(answers, said, strict=True))
    facts = [f"fact of {tag_of(s)}" for a, s in pairs if is_answer(a, s, own=True)]
    return Played(users, sum(not is_answer(a, s) for a, s in pairs), facts)


async def _async_race_summary(bench: Bench) -> Played:
    """A person clears the interests while a summary runs: the clear must win."""
    await async_configure_agent(bench.hass, bench.entry.entry_id, {CONF_MEMORY_EVERY: 1})
    bench.server.responder = slow_summary
    answer = await bench.async_converse("user-0: I love jazz")  # schedules the summary
    await asyncio.sleep(0.3)
    cleared = await bench.async_call("clear_memory", part="dynamic")
    async with asyncio.timeout(DEADLINE_S):  # the summary is a background task
        await bench.hass.async_block_till_done(wait_background_tasks=True)
    lost = int(cleared and bench.memory.dynamic != "")
    await async_configure_agent(bench.hass, bench.entry.entry_id, {CONF_MEMORY_EVERY: 0})
    return Played(2, int(not is_answer(answer, "user-0")) + int(not cleared), lost=lost)


async def _async_race_services(bench: Bench) -> Played:
    """Ten users remembering while the services read and write the profile and interests."""
    bench.server.responder = remembering
    services = [
        bench.async_call("set_memory", profile=SEEDED.profile, dynamic=f"Mood {i}.")
        for i in range(5)
    ] + [bench.async_call("get_memory") for _ in range(5)]
    played, _ = await asyncio.gather(
        _async_remembering_users(bench, 10, 0), asyncio.gather(*services)
    )
    return Played(played.tried + len(services), played.unanswered, played.facts)


async def _async_race_reconfigure(bench: Bench) -> Played:
    """Five users remembering while the server is reconfigured (same URL: a reload)."""
    bench.server.responder = remembering

    async def reconfigure() -> None:
        flow = await bench.hass.config_entries.flow.async_init(
            DOMAIN, context={"source": SOURCE_RECONFIGURE, "entry_id": bench.entry.entry_id}
        )
        await bench.hass.config_entries.flow.async_configure(
            flow["flow_id"], {CONF_URL: bench.server.url}
        )

    played, _ = await asyncio.gather(_async_remembering_users(bench, 5, 0), reconfigure())
    return Played(played.tried + 1, played.unanswered, played.facts)


MEMORY_RACES: dict[str, Callable[[Bench], Coroutine[Any, Any, Played]]] = {
    "memory_vs_summary": _async_race_summary,
    "memory_vs_services": _async_race_services,
    "memory_vs_reconfigure": _async_race_reconfigure,
}
RESTART = "memory_vs_restart"


async def _async_set_server(bench: Bench, down: bool, port: int) -> None:
    """Stop the server for a class that needs it down; start it again after."""
    running = bench.server.port != 0
    if down and running:
        await bench.outside.run(bench.server.stop())
        bench.server.port = 0
    elif not down and not running:
        await bench.outside.run(bench.server.start(port))


@dataclass
class Setup:
    """What both lives of Home Assistant share."""

    config_dir: Path
    outside: Outside
    server: ScriptedServer
    only: frozenset[str]
    tallies: dict[str, Tally] = field(default_factory=dict)
    baseline_stalls: int = 0
    restart_facts: list[str] = field(default_factory=list)

    def wanted(self, name: str) -> bool:
        """Whether the class runs (--only)."""
        return not self.only or name in self.only


@contextmanager
def _probed(setup: Setup) -> Iterator[tuple[ErrorLog, LagProbe]]:
    """Home Assistant's log and event loop, watched while inside."""
    log = ErrorLog(setup.outside.thread.ident)
    probe = LagProbe()
    logging.getLogger().addHandler(log)
    probe.start(asyncio.get_running_loop())
    try:
        yield log, probe
    finally:
        probe.stop()
        logging.getLogger().removeHandler(log)


async def async_first_life(setup: Setup) -> None:
    """Every class but the restart's second half, on one Home Assistant."""
    port = setup.server.port
    async with running_home_assistant(setup.config_dir) as hass:
        entry = await async_create_entry(
            hass,
            setup.server.url,
            "scripted-model",
            {CONF_MEMORY_EVERY: 0, CONF_TIMEOUT: TIMEOUT_S},
        )
        user = await hass.auth.async_create_user("Fault bench", group_ids=["system-admin"])
        refresh = await hass.auth.async_create_refresh_token(user, "https://bench.invalid/")
        with _probed(setup) as (log, probe):
            bench = Bench(hass, entry, setup.outside, setup.server, probe, log)
            bench.token = hass.auth.async_create_access_token(refresh)
            bench.user_id = user.id
            # Startup's stalls are not the faults': a first turn on each path, with a tool
            # call, warms up what Home Assistant loads once (intents, tools, chat logs);
            # then an idle window is the baseline.
            setup.server.responder = remembering
            await asyncio.gather(
                bench.async_converse("user-0: hi"), bench.async_voice("user-1: hi")
            )
            started = time.monotonic()
            await asyncio.sleep(BASELINE_S)
            setup.baseline_stalls = len(probe.between(started, time.monotonic()))
            for fault in filter(lambda fault: setup.wanted(fault.name), FAULTS):
                await _async_set_server(bench, fault.server_down, port)
                setup.server.responder = fault.responder
                setup.tallies[fault.name] = await bench.async_measure(
                    fault.name, _async_play_users(bench, fault)
                )
            await _async_set_server(bench, False, port)
            for name, race in MEMORY_RACES.items():
                if setup.wanted(name):
                    setup.tallies[name] = await bench.async_measure(name, race(bench))
            if setup.wanted(RESTART):
                setup.tallies[RESTART] = await bench.async_measure(
                    RESTART, _async_before_restart(bench, setup)
                )


async def _async_before_restart(bench: Bench, setup: Setup) -> Played:
    """Five users remembering and a profile written; Home Assistant stops right after."""
    bench.server.responder = remembering
    played = await _async_remembering_users(bench, 5, 100)
    setup.restart_facts = played.facts
    written = await bench.async_call("set_memory", profile=SEEDED.profile)
    return Played(played.tried + 1, played.unanswered + int(not written), played.facts)


async def async_second_life(setup: Setup) -> None:
    """Start again on the same configuration: what the restart kept."""
    tally = setup.tallies[RESTART]
    async with running_home_assistant(setup.config_dir) as hass:
        with _probed(setup) as (log, _):  # (startup's stalls are not the restart's)
            await async_setup_component(hass, DOMAIN, {})
            await hass.async_block_till_done()
            entries: list[MajordomeConfigEntry] = hass.config_entries.async_entries(DOMAIN)
            now = entries[0].runtime_data.memory.memory if entries else Memory()
            tally.lost = missing_memory(SEEDED, setup.restart_facts, now)
        tally.exceptions += len(log.records)
    progress(f"{RESTART} (after the restart): {asdict(tally)}")


def run(only: frozenset[str]) -> dict[str, Any]:
    """The whole bench: its summary."""
    outside = Outside()
    server = ScriptedServer(models=["scripted-model"])
    outside.run_sync(server.start())
    try:
        with tempfile.TemporaryDirectory(prefix="majordome-bench-faults-") as tmp:
            setup = Setup(Path(tmp), outside, server, only)
            asyncio.run(async_first_life(setup))
            if RESTART in setup.tallies:
                asyncio.run(async_second_life(setup))
    finally:
        outside.run_sync(server.stop())
        outside.close()
    total = Tally()
    for tally in setup.tallies.values():
        total.add(tally)
    return {
        "bench": "faults",
        "classes": {name: asdict(tally) for name, tally in setup.tallies.items()},
        "total": asdict(total),
        "baseline_stalls": setup.baseline_stalls,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the bench, print the table and the JSON line."""
    names = [fault.name for fault in FAULTS] + [*MEMORY_RACES, RESTART]
    parser = argparse.ArgumentParser(
        prog="scripts/bench faults", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--only", default="", help=f"comma-separated classes of {names}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show Home Assistant's log")
    args = parser.parse_args(argv)
    only = frozenset(filter(None, args.only.split(",")))
    if unknown := only - set(names):
        parser.error(f"unknown classes: {sorted(unknown)}")
    # Errors must reach the root logger, where the bench counts them; stderr shows them
    # only with --verbose.
    shown = logging.StreamHandler(sys.stderr)
    shown.setLevel(logging.WARNING if args.verbose else logging.CRITICAL)
    shown.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[shown])
    started = time.monotonic()
    summary = run(only)
    columns = list(Tally.__dataclass_fields__)
    print(f"{'class':32}" + "".join(f"{c:>14}" for c in columns))
    for name, figures in [*summary["classes"].items(), ("TOTAL", summary["total"])]:
        print(f"{name:32}" + "".join(f"{figures[c]:>14}" for c in columns))
    progress(f"wall time: {time.monotonic() - started:.1f} s")
    print_summary(summary)
    return 0
