"""Every bad input through the real agent: server errors, broken streams, model mistakes.

Each failing turn must end as the matching sentence in the user's language, never as
an exception, and leave the history well formed for the next turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import json
from pathlib import Path
import time
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.majordome import compat, prompt
from custom_components.majordome.backend import MAX_REPLY_BYTES
from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import (
    CONF_LOCAL_INTENTS,
    CONF_MEMORY_FROM_AUTOMATIONS,
    CONF_TIMEOUT,
    MEMORY_KEY,
)
from custom_components.majordome.tools import SPEECH_KEY
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
from homeassistant.auth.models import User
from homeassistant.components import conversation
from homeassistant.core import CoreState, HomeAssistant
from homeassistant.helpers import intent
from homeassistant.helpers.json import json_bytes

from .helpers import CLOCK_TOOL, TURN_ON_TOOL, agent_of, converse, speech, tool_results

COMPONENT = Path(__file__).parent.parent / "custom_components" / "majordome"
SENTENCES = {
    "en": json.loads((COMPONENT / "strings.json").read_text(encoding="utf-8"))["exceptions"],
    "fr": json.loads((COMPONENT / "translations" / "fr.json").read_text(encoding="utf-8"))[
        "exceptions"
    ],
}


def sentence(kind: str, language: str = "en") -> str:
    """The spoken sentence for an error kind, as the translations define it."""
    return SENTENCES[language][kind]["message"]


@pytest.fixture
def entry_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The default options (the model takes every turn), with overrides from indirect
    parametrization."""
    return {**DEFAULT_OPTIONS, CONF_LOCAL_INTENTS: False, **getattr(request, "param", {})}


# Tests that use `remember` as an example tool, called with no user (as an automation).
AUTOMATIONS_WRITE_MEMORY = pytest.mark.parametrize(
    "entry_options", [{CONF_MEMORY_FROM_AUTOMATIONS: True}], indirect=True
)


def assert_failed_with(
    hass: HomeAssistant, result: conversation.ConversationResult, kind: str, language: str = "en"
) -> None:
    """The turn ended as an error with the exact sentence, and HA is fine."""
    assert speech(result) == sentence(kind, language)
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert result.response.error_code is intent.IntentResponseErrorCode.UNKNOWN
    assert hass.state is CoreState.running


def assert_well_formed(messages: list[dict[str, Any]]) -> None:
    """System first, then user/assistant/tool messages whose tool calls all have results."""
    assert messages[0]["role"] == "system"
    assert messages[-1]["role"] == "user"
    pending: list[str] = []
    for message in messages[1:]:
        role = message["role"]
        assert role in ("user", "assistant", "tool"), message
        if role == "tool":
            assert message["tool_call_id"] in pending, message
            pending.remove(message["tool_call_id"])
            continue
        # No user or assistant message may interrupt unanswered tool calls.
        assert not pending, f"tool calls without results: {pending}"
        assert isinstance(message["content"], str)
        if role == "assistant":
            for call in message.get("tool_calls", []):
                assert call["type"] == "function"
                json.loads(call["function"]["arguments"])
                pending.append(call["id"])
    assert not pending


GOOD_USER = "Hello butler"
GOOD_REPLY = ("Good ", "evening.")
NEXT_USER = "Are you still there?"


async def run_around_failure(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    *,
    failing: list[Reply],
    kind: str,
    language: str | None = None,
) -> None:
    """A good turn, the failing one, a good one; the history must not keep the failure."""
    scripted.add(text(*GOOD_REPLY))
    first = await converse(hass, entry, GOOD_USER, language=language)
    assert speech(first) == "".join(GOOD_REPLY)
    conversation_id = first.conversation_id

    scripted.add(*failing)
    result = await converse(hass, entry, "Do the failing thing", conversation_id, language=language)
    assert_failed_with(hass, result, kind, language or "en")
    assert result.conversation_id == conversation_id
    assert entry.runtime_data.last_turn is not None
    assert entry.runtime_data.last_turn.error == kind

    scripted.add(text("Yes."))
    last = await converse(hass, entry, NEXT_USER, conversation_id, language=language)
    assert speech(last) == "Yes."
    messages = scripted.chat_requests[-1]["messages"]
    assert_well_formed(messages)
    # The failed turn left nothing behind: neither its user message nor partial text.
    assert messages[1:] == [
        {"role": "user", "content": GOOD_USER},
        {"role": "assistant", "content": "".join(GOOD_REPLY)},
        {"role": "user", "content": NEXT_USER},
    ]


# --- Server errors ---------------------------------------------------------------

HTTP_ERRORS = [
    (401, "invalid_auth"),
    (404, "model_not_found"),
    (429, "rate_limited"),
    (500, "server_error"),
]


@pytest.mark.parametrize(("status", "kind"), HTTP_ERRORS)
@pytest.mark.parametrize("language", [None, "fr"])
async def test_http_error(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    *,
    status: int,
    kind: str,
    language: str | None,
) -> None:
    await run_around_failure(
        hass, entry, scripted, failing=[error(status)], kind=kind, language=language
    )
    # No retry: exactly one request per turn.
    assert len(scripted.chat_requests) == 3


async def test_french_sentence_is_french(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(error(500))
    result = await converse(hass, entry, "Allume la cuisine", language="fr")
    assert speech(result) == "Désolé, le serveur du modèle de langage a rencontré une erreur."
    assert result.response.language == "fr"


async def test_server_down(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(text(*GOOD_REPLY))
    first = await converse(hass, entry, GOOD_USER)
    await scripted.stop()
    result = await converse(hass, entry, "Anyone there?", first.conversation_id)
    assert_failed_with(hass, result, "cannot_connect")
    result = await converse(hass, entry, "Anyone there?", first.conversation_id, language="fr")
    assert_failed_with(hass, result, "cannot_connect", "fr")
    # The history kept only the good exchange.
    chat_log = hass.data[conversation.chat_log.DATA_CHAT_LOGS][first.conversation_id]
    assert [(c.role, c.content) for c in chat_log.content[1:]] == [
        ("user", GOOD_USER),
        ("assistant", "".join(GOOD_REPLY)),
    ]


# --- Broken, empty and malformed streams -----------------------------------------

STREAM_FAILURES: dict[str, tuple[Callable[[], list[Reply]], str]] = {
    "broken_mid_way": (
        lambda: [
            Reply(
                deltas=[{"content": "PARTIAL "}, {"content": "LEAK "}, {"content": "end."}],
                break_after=2,
            )
        ],
        "broken_stream",
    ),
    "broken_after_text": (
        lambda: [
            Reply(
                deltas=[{"content": "PARTIAL "}, {"content": "LEAK "}, {"content": "end."}],
                break_after=3,
            )
        ],
        "broken_stream",
    ),
    "broken_mid_tool_call": (
        lambda: [
            Reply(
                deltas=[*tool_calls(("get_time", {})).deltas, {"content": "x"}],
                break_after=3,
            )
        ],
        "broken_stream",
    ),
    "empty_reply": (lambda: [Reply()], "empty_reply"),
    "only_think": (lambda: [text("<think>PARTIAL thoughts</think>")], "empty_reply"),
    "malformed_sse": (lambda: [Reply(raw_lines=["data: {not json\n\n"])], "broken_stream"),
    "malformed_after_text": (
        lambda: [
            Reply(
                raw_lines=[
                    'data: {"id": "x", "object": "chat.completion.chunk", "created": 0, '
                    '"model": "m", "choices": [{"index": 0, "delta": {"content": "PARTIAL"}, '
                    '"finish_reason": null}]}\n\n',
                    "data: {not json\n\n",
                ]
            )
        ],
        "broken_stream",
    ),
    "error_event_in_stream": (
        lambda: [Reply(raw_lines=['data: {"error": {"message": "model crashed"}}\n\n'])],
        "broken_stream",
    ),
}


@pytest.mark.parametrize("case", list(STREAM_FAILURES))
async def test_stream_failure(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, case: str
) -> None:
    replies, kind = STREAM_FAILURES[case]
    await run_around_failure(hass, entry, scripted, failing=replies(), kind=kind)
    assert "PARTIAL" not in json.dumps(scripted.chat_requests[-1])
    assert "LEAK" not in json.dumps(scripted.chat_requests[-1])


async def test_whitespace_only_reply_is_empty(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    await run_around_failure(
        hass,
        entry,
        scripted,
        failing=[text("<think>PARTIAL thoughts</think>", "\n\n")],
        kind="empty_reply",
    )


@pytest.mark.parametrize("language", [None, "fr"])
async def test_broken_stream_speech_has_no_partial_text(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, language: str | None
) -> None:
    scripted.add(Reply(deltas=[{"content": "PARTIAL "}, {"content": "more"}], break_after=2))
    result = await converse(hass, entry, "Tell me a story", language=language)
    assert_failed_with(hass, result, "broken_stream", language or "en")


# --- Timeouts --------------------------------------------------------------------


@pytest.mark.parametrize("entry_options", [{CONF_TIMEOUT: 1}], indirect=True)
@pytest.mark.parametrize(
    "slow",
    [
        pytest.param(
            lambda: Reply(deltas=[{"content": "late"}], headers_delay_s=2.5), id="headers"
        ),
        pytest.param(lambda: text("PARTIAL ", "LEAK", chunk_delay_s=2.5), id="chunks"),
    ],
)
async def test_timeout(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    slow: Callable[[], Reply],
) -> None:
    assert agent_of(entry).data[CONF_TIMEOUT] == 1
    await run_around_failure(hass, entry, scripted, failing=[slow()], kind="timeout")
    assert "PARTIAL" not in json.dumps(scripted.chat_requests[-1])


@pytest.mark.parametrize("entry_options", [{CONF_TIMEOUT: 1}], indirect=True)
async def test_timeout_in_french(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(Reply(deltas=[{"content": "late"}], headers_delay_s=2.5))
    result = await converse(hass, entry, "Quelle heure est-il ?", language="fr")
    assert_failed_with(hass, result, "timeout", "fr")


# --- Deadlines for the whole request, a size for the reply ------------------------


@pytest.mark.parametrize("entry_options", [{CONF_TIMEOUT: 1}], indirect=True)
@pytest.mark.parametrize("language", [None, "fr"])
async def test_a_slow_stream_ends_by_the_deadline(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, language: str | None
) -> None:
    """A chunk every 0.5 s never waits a whole second, but the reply is 7 s long."""
    scripted.add(text(*["word "] * 14, chunk_delay_s=0.5))
    started = time.monotonic()
    result = await converse(hass, entry, "Tell me a long story", language=language)
    elapsed = time.monotonic() - started
    assert_failed_with(hass, result, "timeout", language or "en")
    # The limit is 1 s for the whole reply (generous bound for a loaded machine).
    assert elapsed < 4.0


@pytest.mark.parametrize("entry_options", [{CONF_TIMEOUT: 1}], indirect=True)
@pytest.mark.parametrize("language", [None, "fr"])
async def test_an_endless_stream_ends(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, language: str | None
) -> None:
    scripted.add(endless("and ", "on ", chunk_delay_s=0.05))
    async with asyncio.timeout(20):
        result = await converse(hass, entry, "Count forever", language=language)
    assert_failed_with(hass, result, "timeout", language or "en")
    # The connection was closed: the server's endless stream stopped writing.
    await scripted.wait_for_streams_ended(1)


# Ten megabytes in 64 kB chunks, and in one line a server that ignores `stream`
# might send (all of it would be buffered before any chunk is read).
HUGE_REPLIES = {
    "chunks": lambda: huge(10_000_000),
    "one line": lambda: Reply(raw_lines=[b"data: " + b"x" * 10_000_000]),
}


@pytest.mark.parametrize("reply", list(HUGE_REPLIES))
async def test_a_huge_reply_is_cut(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    caplog: pytest.LogCaptureFixture,
    reply: str,
) -> None:
    await run_around_failure(
        hass, entry, scripted, failing=[HUGE_REPLIES[reply]()], kind="broken_stream"
    )
    assert f"the reply passed {MAX_REPLY_BYTES} bytes" in caplog.text
    assert "xxxxxxxx" not in json.dumps(scripted.chat_requests[-1])


@pytest.mark.parametrize("language", [None, "fr"])
async def test_a_reply_that_is_not_utf8_is_answered(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    caplog: pytest.LogCaptureFixture,
    language: str | None,
) -> None:
    await run_around_failure(
        hass,
        entry,
        scripted,
        failing=[not_utf8("Un café, ", "PARTIAL s'il vous plaît.")],
        kind="broken_stream",
        language=language,
    )
    assert "not UTF-8" in caplog.text
    assert "PARTIAL" not in json.dumps(scripted.chat_requests[-1])
    assert not [record for record in caplog.records if record.exc_info]  # no traceback


# --- Failure after a tool ran -----------------------------------------------------


@AUTOMATIONS_WRITE_MEMORY
async def test_failure_after_tool_keeps_history_well_formed(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(text(*GOOD_REPLY))
    first = await converse(hass, entry, GOOD_USER)
    conversation_id = first.conversation_id

    # A tool whose result leaves the answer to the model (here, an error), then a failure.
    scripted.add(tool_calls(("remember", {"fact": 42})), error(500))
    result = await converse(hass, entry, "Remember something", conversation_id)
    assert_failed_with(hass, result, "server_error")
    # The tool result was sent before the server failed.
    assert tool_results(scripted.chat_requests[-1])[0]["error"] == "MultipleInvalid"

    scripted.add(text("Still here."))
    last = await converse(hass, entry, NEXT_USER, conversation_id)
    assert speech(last) == "Still here."
    messages = scripted.chat_requests[-1]["messages"]
    assert_well_formed(messages)
    # The failed turn is kept as its question and the apology that was spoken; its
    # tool chatter is dropped, so it does not weigh on every later prompt.
    assert messages[1:] == [
        {"role": "user", "content": GOOD_USER},
        {"role": "assistant", "content": "".join(GOOD_REPLY)},
        {"role": "user", "content": "Remember something"},
        {"role": "assistant", "content": sentence("server_error")},
        {"role": "user", "content": NEXT_USER},
    ]


# --- Unusual user messages --------------------------------------------------------

TOO_LONG = "That message is too long for me (over 4000 characters). Please say it in fewer words."


async def test_huge_user_message(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """Refused without reaching the model; the next turn's prompt holds no trace of it."""
    message = "Please read this. " + "blah " * 20_000
    assert len(message) > 100_000
    result = await converse(hass, entry, message)
    assert speech(result) == TOO_LONG
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert scripted.chat_requests == []

    scripted.add(text("Hello."))
    await converse(hass, entry, "hi", result.conversation_id)
    assert len(json.dumps(scripted.chat_requests[-1]["messages"])) < 20_000
    assert scripted.chat_requests[-1]["messages"][-1] == {"role": "user", "content": "hi"}


async def test_empty_user_message(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(text("How can I help?"))
    result = await converse(hass, entry, "")
    assert speech(result) == "How can I help?"
    assert result.response.response_type is intent.IntentResponseType.ACTION_DONE
    assert scripted.chat_requests[-1]["messages"][-1] == {"role": "user", "content": ""}


# --- The model's mistakes ---------------------------------------------------------


async def test_unknown_tool(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(tool_calls(("HassDance", {"style": "tango"})), text("I cannot dance."))
    result = await converse(hass, entry, "Dance!")
    assert speech(result) == "I cannot dance."
    assert result.response.response_type is intent.IntentResponseType.ACTION_DONE

    first, second = scripted.chat_requests
    real_names = [tool["function"]["name"] for tool in first["tools"]]
    # As the model sees them: without 2026's integration prefix.
    assert {compat.base_tool_name(CLOCK_TOOL), compat.base_tool_name(TURN_ON_TOOL)} <= set(
        real_names
    )
    assert "HassDance" not in real_names
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool"
    assert tool_message["tool_call_id"] == "call_0_HassDance"
    assert json.loads(tool_message["content"]) == {
        "error": "HomeAssistantError",
        "error_text": "There is no tool named 'HassDance'. "
        f"The tools are: {', '.join(real_names)}.",
    }


async def test_unknown_tool_written_as_text(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    # Small models write calls as text, to tools they invent: the call gets the
    # same error as a structured one, so the model can pick a real tool.
    scripted.add(
        text('{"name": "HassBrewCoffee", "arguments": {"strength": "strong"}}'),
        text("I cannot make coffee."),
    )
    deltas: list[dict[str, Any]] = []
    result = await converse(hass, entry, "Make me a strong coffee", deltas=deltas)
    assert speech(result) == "I cannot make coffee."
    assert not any("HassBrewCoffee" in delta.get("content", "") for delta in deltas)

    (tool_result,) = tool_results(scripted.chat_requests[-1])
    assert tool_result["error"] == "HomeAssistantError"
    assert tool_result["error_text"].startswith(
        "There is no tool named 'HassBrewCoffee'. The tools are: "
    )
    assert "HassTurnOn" in tool_result["error_text"]
    assert_well_formed(
        [*scripted.chat_requests[-1]["messages"], {"role": "user", "content": "next"}]
    )


async def test_unparsable_arguments_are_refused(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(tool_calls(("get_date", "turn on kitchen")), text("Which day?"))
    result = await converse(hass, entry, "What day is it?")
    assert speech(result) == "Which day?"

    results = tool_results(scripted.chat_requests[-1])
    # The tool did not run: its result is only the error.
    assert results == [
        {
            "error": "HomeAssistantError",
            "error_text": "The arguments of get_date were not a valid JSON object: "
            "'turn on kitchen'. Call the tool again with a JSON object.",
        }
    ]
    assert_well_formed(
        [*scripted.chat_requests[-1]["messages"], {"role": "user", "content": "next"}]
    )


@AUTOMATIONS_WRITE_MEMORY
async def test_repairable_arguments_run_the_tool(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(tool_calls(("remember", '{"fact": "The cat is Miso",}')), text("I will remember."))
    result = await converse(hass, entry, "Remember that the cat is Miso")
    assert speech(result) == "I will remember."

    (tool_result,) = tool_results(scripted.chat_requests[-1])
    assert tool_result["remembered"] == "The cat is Miso"
    assert "error" not in tool_result
    call = scripted.chat_requests[-1]["messages"][-2]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"fact": "The cat is Miso"}


async def test_a_cut_off_emoji_in_a_remembered_fact_breaks_nothing(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, hass_admin_user: User
) -> None:
    """The token limit cut the call after the first half of an emoji's escape.

    The half once stayed in the stored fact: every later prompt failed to encode, and
    Home Assistant could no longer save any config entry.
    """
    scripted.add(tool_calls(("remember", '{"fact": "Alice loves pizza \\ud83c')), text("Noted."))
    result = await converse(hass, entry, "Remember that I love pizza", user=hass_admin_user)
    assert speech(result).startswith("Noted.")  # then the introduction question
    facts = entry.data[MEMORY_KEY]["facts"]
    assert facts == ["Alice loves pizza"]
    json_bytes(dict(entry.data))  # as Home Assistant saves config entries

    scripted.add(text("Yes."))  # a new conversation, with the fact in its prompt
    last = await converse(hass, entry, NEXT_USER, user=hass_admin_user)
    assert speech(last).startswith("Yes.")
    assert "Alice loves pizza" in scripted.chat_requests[-1]["messages"][0]["content"]


async def test_lone_emoji_halves_in_the_reply_are_never_passed_on(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """Halves that belong together are joined across chunks; a lone one is dropped."""
    scripted.add(text("Pizza \ud83c", "\udf55 for you", " \ud83c", "\udf89", " bye \udf55"))
    deltas: list[dict[str, Any]] = []
    result = await converse(hass, entry, "Pizza?", deltas=deltas)
    assert speech(result) == "Pizza 🍕 for you 🎉 bye "
    json_bytes(deltas)  # what a listener (the Assist dialog, a voice) is sent

    scripted.add(text("Yes."))
    await converse(hass, entry, NEXT_USER, result.conversation_id)
    assert scripted.chat_requests[-1]["messages"][-2]["content"] == "Pizza 🍕 for you 🎉 bye "


async def test_think_block_is_never_spoken_nor_stored(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(text("<thi", "nk>SECRET plan", "ning</th", "ink>\n\nGood", " evening."))
    result = await converse(hass, entry, GOOD_USER)
    spoken = speech(result)
    assert "SECRET" not in spoken
    assert "think>" not in spoken
    assert spoken.strip() == "Good evening."

    scripted.add(text("Yes."))
    await converse(hass, entry, NEXT_USER, result.conversation_id)
    messages = scripted.chat_requests[-1]["messages"]
    assert messages[2]["role"] == "assistant"
    assert messages[2]["content"].strip() == "Good evening."
    assert "SECRET" not in json.dumps(messages)
    assert "think>" not in json.dumps(messages)


async def test_tool_call_written_as_text_is_run(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(text('{"name": "get_time", ', '"arguments": {}}'), text("It is noon."))
    result = await converse(hass, entry, "What time is it?")
    assert speech(result) == "It is noon."
    assert result.response.response_type is intent.IntentResponseType.ACTION_DONE

    assert len(scripted.chat_requests) == 2
    messages = scripted.chat_requests[-1]["messages"]
    assistant, tool = messages[-2:]
    assert assistant["role"] == "assistant"
    assert assistant["content"] == ""
    (call,) = assistant["tool_calls"]
    assert call["function"] == {"name": "get_time", "arguments": "{}"}
    assert tool["role"] == "tool"
    assert tool["tool_call_id"] == call["id"]
    assert json.loads(tool["content"]).keys() >= {"time", "timezone", SPEECH_KEY}
    assert '"name"' not in speech(result)

    # The next turn's history holds the call, not its JSON as spoken text.
    scripted.add(text("Bye."))
    await converse(hass, entry, "Thanks", result.conversation_id)
    history = scripted.chat_requests[-1]["messages"]
    assert_well_formed(history)
    assert all("get_time" not in m["content"] for m in history if m["role"] == "assistant")
    assert history[-2] == {"role": "assistant", "content": "It is noon."}


async def test_json_written_beside_real_tool_calls_does_not_end_the_turn(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """The 1.5B model on llama.cpp sent a call both as text and as a tool call: the call
    runs and the text is neither spoken nor kept (it ended the turn, "no answer")."""
    echo = '{\n  "name": "get_time",\n  "arguments": {}\n}'
    call = tool_calls(("get_time", {}))
    scripted.add(
        Reply(deltas=[{"content": echo}, *call.deltas], finish_reason="tool_calls"),
        text("It is noon."),
    )
    deltas: list[dict[str, Any]] = []

    result = await converse(hass, entry, "What time is it?", deltas=deltas)

    assert speech(result) == "It is noon."
    assert len(scripted.chat_requests) == 2
    assistant, tool = scripted.chat_requests[-1]["messages"][-2:]
    assert assistant["content"] == ""
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == ["get_time"]
    assert tool["role"] == "tool"
    assert '"name"' not in str([delta.get("content") for delta in deltas])


async def test_a_tool_result_echoed_beside_tool_calls_still_ends_the_turn(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """The 0.5B model echoed a tool result as JSON and llama.cpp read calls from it: that
    is no answer, and the calls do not run (they would fill the context and repeat)."""
    echo = '{"speech": {}, "response_type": "action_done", "data": {"success": []}}'
    call = tool_calls(("get_time", {}))
    scripted.add(Reply(deltas=[{"content": echo}, *call.deltas], finish_reason="tool_calls"))

    result = await converse(hass, entry, "What time is it?")

    assert speech(result) == sentence("empty_reply")
    assert len(scripted.chat_requests) == 1


async def test_json_reply_that_is_not_a_call_is_not_spoken(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """A sentence never opens with a brace: no tool ran, so the model gave no answer."""
    scripted.add(text('{"answer": ', "42}"), text(*GOOD_REPLY))
    deltas: list[dict[str, Any]] = []
    result = await converse(hass, entry, "Give me JSON", deltas=deltas)
    assert speech(result) == sentence("empty_reply")
    # Held back while it streamed: no listener (a dialog, a voice) ever saw it.
    assert "42}" not in str([delta.get("content") for delta in deltas])
    assert len(scripted.chat_requests) == 1
    await converse(hass, entry, NEXT_USER, result.conversation_id)
    assert "42}" not in json.dumps(scripted.chat_requests[-1]["messages"])


@AUTOMATIONS_WRITE_MEMORY
async def test_action_result_echoed_as_json_becomes_done(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """Small models repeat the tool result instead of a sentence: the action worked."""
    scripted.add(
        tool_calls(("remember", {"fact": "The cat is Miso"})),
        text('{"response_type": "action_done", "remembered": "The cat is Miso"}'),
        text(*GOOD_REPLY),
    )
    deltas: list[dict[str, Any]] = []
    result = await converse(hass, entry, "Remember the cat is Miso", deltas=deltas)
    assert speech(result) == "Done."
    assert any(delta.get("tool_calls") for delta in deltas)  # the listener saw the turn
    assert "action_done" not in str([delta.get("content") for delta in deltas])
    assert result.response.response_type.value == "action_done"
    await converse(hass, entry, NEXT_USER, result.conversation_id)
    history = scripted.chat_requests[-1]["messages"]
    assert history[-2] == {"role": "assistant", "content": "Done."}
    assert "remembered" not in json.dumps([m for m in history if m["role"] == "assistant"])
    assert_well_formed(history)


async def test_time_echoed_as_json_is_said_from_the_tool(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """No "Done." for a question: the time, as the tool put it into words."""
    scripted.add(tool_calls(("get_time", {})), text('{"time": "14:05"}'))
    result = await converse(hass, entry, "What time is it?")
    [tool_result] = tool_results(scripted.chat_requests[-1])
    assert speech(result) == tool_result[SPEECH_KEY]
    assert speech(result).startswith("It is ")


async def test_double_braced_arguments_are_refused_not_fatal(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(tool_calls(("get_date", '{{"days_from_today": 1}}')), text("Let me retry."))
    result = await converse(hass, entry, "What date is tomorrow?")
    assert speech(result) == "Let me retry."
    (tool_result,) = tool_results(scripted.chat_requests[-1])
    assert tool_result["error"] == "HomeAssistantError"
    assert "were not a valid JSON object" in tool_result["error_text"]


async def test_payload_too_large_is_a_rejected_request(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(error(413, "request entity too large"))
    result = await converse(hass, entry, "Hello")
    assert_failed_with(hass, result, "bad_request")


# --- A turn cancelled halfway ------------------------------------------------------


def _call(call_id: str) -> dict[str, Any]:
    """A tool call as sent to the server."""
    return {"id": call_id, "type": "function", "function": {"name": "x", "arguments": "{}"}}


async def test_a_cancelled_turn_leaves_a_history_the_model_can_read(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """Cancelled while the model writes after a tool ran (a satellite gone, a barge-in).

    Home Assistant up to 2026.10 drops the turn; 2026.11 keeps it in a live chat log with
    its own error note: either way the next request is well formed.
    """
    scripted.add(text(*GOOD_REPLY))
    first = await converse(hass, entry, GOOD_USER)
    scripted.add(
        tool_calls(("remember", {"fact": "The cat is Miso"})),
        text("Noted", " and", " remembered", chunk_delay_s=5.0),
    )
    turn = asyncio.create_task(
        converse(hass, entry, "Remember the cat is Miso", first.conversation_id)
    )
    await scripted.wait_for_chat_requests(3)  # the tool ran, the follow-up is streaming
    turn.cancel()
    with pytest.raises(asyncio.CancelledError):
        await turn

    scripted.add(text("Still here."))
    last = await converse(hass, entry, NEXT_USER, first.conversation_id)
    assert speech(last) == "Still here."
    messages = scripted.chat_requests[-1]["messages"]
    assert_well_formed(messages)
    assert messages[1:3] == [
        {"role": "user", "content": GOOD_USER},
        {"role": "assistant", "content": "".join(GOOD_REPLY)},
    ]
    assert "Noted" not in json.dumps(messages)


@pytest.mark.parametrize(
    ("history", "sent"),
    [
        pytest.param(
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "", "tool_calls": [_call("1")]},
                {"role": "assistant", "content": "Error: CancelledError"},
                {"role": "user", "content": "b"},
            ],
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "Error: CancelledError"},
                {"role": "user", "content": "b"},
            ],
            id="a call without its result",
        ),
        pytest.param(
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "Let me", "tool_calls": [_call("1"), _call("2")]},
                {"role": "tool", "tool_call_id": "1", "content": "{}"},
                {"role": "user", "content": "b"},
            ],
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "Let me"},
                {"role": "user", "content": "b"},
            ],
            id="one call of two answered",
        ),
        pytest.param(
            [
                {"role": "user", "content": "a"},
                {"role": "tool", "tool_call_id": "9", "content": "{}"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "b"},
            ],
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "b"},
            ],
            id="a result without its call",
        ),
    ],
)
def test_a_broken_history_is_sent_well_formed(
    history: list[dict[str, Any]], sent: list[dict[str, Any]]
) -> None:
    assert prompt.well_formed(history) == sent
    assert_well_formed([{"role": "system", "content": ""}, *sent])
