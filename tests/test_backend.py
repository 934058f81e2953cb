"""Unit tests of backend.py's pure parts: no Home Assistant instance needed."""

from __future__ import annotations

import itertools
import json

import httpx
import openai
import pytest

from custom_components.majordome.backend import (
    REDACTED,
    EncodableStream,
    ErrorKind,
    ReplyTooLargeError,
    ThinkFilter,
    cache_hints,
    classify_error,
    encodable,
    hide_secrets,
    parse_arguments,
    tool_calls_in_text,
    tool_input,
    url_secrets,
)
from custom_components.majordome.const import INVALID_ARGUMENTS_KEY

# --- ThinkFilter -----------------------------------------------------------------

THINKING = "Hi <think>secret</think>there"


def _run_filter(chunks: list[str]) -> str:
    think = ThinkFilter()
    return "".join(think.feed(chunk) for chunk in chunks) + think.flush()


def test_think_whole_block_in_one_chunk() -> None:
    assert _run_filter([THINKING]) == "Hi there"


@pytest.mark.parametrize("split", range(len(THINKING) + 1))
def test_think_split_in_two_at_every_position(split: int) -> None:
    assert _run_filter([THINKING[:split], THINKING[split:]]) == "Hi there"


def test_think_split_in_three_at_every_pair_of_positions() -> None:
    for first, second in itertools.combinations(range(len(THINKING) + 1), 2):
        chunks = [THINKING[:first], THINKING[first:second], THINKING[second:]]
        assert _run_filter(chunks) == "Hi there", chunks


def test_think_one_character_per_chunk() -> None:
    assert _run_filter(list(THINKING)) == "Hi there"


def test_think_nothing_is_shown_from_inside_while_streaming() -> None:
    think = ThinkFilter()
    shown = [think.feed(chunk) for chunk in ("Hi ", "<think>sec", "ret</th", "ink>", "there")]
    assert shown == ["Hi ", "", "", "", "there"]
    assert think.flush() == ""


def test_think_two_blocks() -> None:
    assert _run_filter(["<think>a</think>One ", "<think>b</think>", "two"]) == "One two"


def test_think_unclosed_block_drops_the_rest() -> None:
    assert _run_filter(["Hi <think>never", " closed </thi"]) == "Hi "


def test_think_less_than_is_not_eaten() -> None:
    sentence = "If 2 < 3 and a<b, show <b>bold</b> and <thinking> <thin"
    assert _run_filter([sentence]) == sentence
    assert _run_filter(list(sentence)) == sentence


def test_think_held_tail_is_returned_by_flush() -> None:
    think = ThinkFilter()
    assert think.feed("Hello <thi") == "Hello "
    assert think.flush() == "<thi"
    # Flushing empties what was held.
    assert think.flush() == ""


def test_think_held_tail_released_when_next_chunk_is_not_a_tag() -> None:
    think = ThinkFilter()
    assert think.feed("a <") == "a "
    assert think.feed(" b") == "< b"
    assert think.flush() == ""


# --- parse_arguments -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"name": "kitchen", "brightness": 50}', {"name": "kitchen", "brightness": 50}),
        ("", {}),
        (None, {}),
        ("   \n", {}),
        ("{}", {}),
        ('{"name": "kitchen",}', {"name": "kitchen"}),
        ('{"domain": ["light", "switch", ], }', {"domain": ["light", "switch"]}),
        ('```json\n{"name": "kitchen"}\n```', {"name": "kitchen"}),
        ('```\n{"name": "kitchen"}\n```', {"name": "kitchen"}),
        ('{"name": "kitchen", "domain": ["light"', {"name": "kitchen", "domain": ["light"]}),
        ('{"name": "kitch', {"name": "kitch"}),
        ('{"area": {"name": "hall"', {"area": {"name": "hall"}}),
        ("{'name': 'kitchen', 'on': True, 'x': None}", {"name": "kitchen", "on": True, "x": None}),
        (json.dumps(json.dumps({"name": "kitchen"})), {"name": "kitchen"}),
        ('{"text": "a, } b"}', {"text": "a, } b"}),
    ],
)
def test_parse_arguments_repairs(raw: str | None, expected: dict) -> None:
    assert parse_arguments(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "[1, 2]",
        '[{"name": "kitchen"}]',
        "42",
        "true",
        "null",
        '"just a string"',
        "turn on kitchen",
        "name=kitchen",
        "{name: kitchen}",
        "}{",
        "(1, 2)",
    ],
)
def test_parse_arguments_refuses(raw: str) -> None:
    assert parse_arguments(raw) is None


@pytest.mark.parametrize("raw", ['{{"name": "kitchen"}}', "{[1]: 2}"])
def test_parse_arguments_unhashable_literal_is_refused(raw: str) -> None:
    assert parse_arguments(raw) is None


def test_tool_input_keeps_unparsable_arguments_for_the_tool_layer() -> None:
    call = tool_input("call_1", "HassTurnOn", "turn on kitchen")
    assert call.id == "call_1"
    assert call.tool_name == "HassTurnOn"
    assert call.tool_args == {INVALID_ARGUMENTS_KEY: "turn on kitchen"}


# --- Text that UTF-8 can encode (a model's output must be storable) ----------------

# As servers send it: every character past ASCII written as an escape.
WITH_EMOJI = json.dumps({"fact": "Alice loves pizza 🍕 and crêpes", "tags": ["🎉", "fête"]})


def _encodes(value: object) -> bool:
    """Whether `value` can be written as UTF-8 JSON, as Home Assistant stores data."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def test_the_arguments_cut_anywhere_are_repaired_to_storable_text() -> None:
    """The token limit cuts a call wherever: never half an emoji in what a tool stores."""
    assert "\\ud83c\\udf55" in WITH_EMOJI
    for end in range(len(WITH_EMOJI) + 1):
        arguments = parse_arguments(WITH_EMOJI[:end])
        assert arguments is None or _encodes(arguments), WITH_EMOJI[:end]


@pytest.mark.parametrize(
    "cut",
    [
        '{"fact": "Alice loves pizza \\ud83c',  # the emoji's first half, not its second
        '{"fact": "Alice loves pizza \\ud83c\\u',
        '{"fact": "Alice loves pizza \\ud83c\\udf',
        '{"fact": "Alice loves pizza \\',
        '{"fact": "Alice loves pizza \\u',
        '{"fact": "Alice loves pizza \\ud8',
    ],
)
def test_arguments_cut_inside_an_escape_keep_what_came_before(cut: str) -> None:
    assert parse_arguments(cut) == {"fact": "Alice loves pizza "}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"fact": "a \\\\', {"fact": "a \\"}),  # an escaped backslash is not cut
        ('{"fact": "caf\\u00e9', {"fact": "café"}),
        ('{"fact": "\\ud83c\\udf55', {"fact": "🍕"}),
        ('{"fact": "one\\ud83c two"}', {"fact": "one two"}),  # a lone half inside
        ('{"\\udf55fact": "x"}', {"fact": "x"}),
        ("{'fact': '\\ud83c'}", {"fact": ""}),  # a Python literal too
        (json.dumps(json.dumps({"fact": "\ud83c"})), {"fact": ""}),
    ],
)
def test_arguments_with_lone_halves_are_storable(raw: str, expected: dict) -> None:
    assert parse_arguments(raw) == expected


def test_unparsable_arguments_travel_storable() -> None:
    call = tool_input("call_1", "remem\ud83cber", "not json \ud83c")
    assert call.tool_name == "remember"
    assert call.tool_args == {INVALID_ARGUMENTS_KEY: "not json "}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("pizza 🍕", "pizza 🍕"),
        ("pizza \ud83c", "pizza "),
        ("\udf55 pizza", " pizza"),
        ("pizza \ud83c\udf55", "pizza 🍕"),  # two halves as two code points: joined
        ("a\ud83cb\udf55c", "abc"),
    ],
)
def test_encodable(text: str, expected: str) -> None:
    assert encodable(text) == expected
    expected.encode("utf-8")


def test_encodable_stream_joins_an_emoji_split_across_chunks() -> None:
    stream = EncodableStream()
    shown = [stream.feed(chunk) for chunk in ("Pizza \ud83c", "\udf55 time \ud83c", " done")]
    assert shown == ["Pizza ", "🍕 time ", " done"]
    assert "".join(shown).encode("utf-8")


# --- Credentials in the server's URL ---------------------------------------------------


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("http://127.0.0.1:8080/v1", set()),
        ("https://bob:hunter2@llm.example/v1", {"bob:hunter2", "hunter2"}),
        ("https://sk-token-123@llm.example/v1", {"sk-token-123"}),
        (
            "https://bob:p%40ss%21@llm.example/v1",
            {"bob:p%40ss%21", "p%40ss%21", "bob:p@ss!", "p@ss!"},
        ),
        (
            "https://llm.example/v1?api_key=sk-query-77&v=1",
            {"api_key=sk-query-77&v=1", "sk-query-77"},
        ),
    ],
)
def test_url_secrets(url: str, secrets: set[str]) -> None:
    assert url_secrets(url) == secrets


def test_hide_secrets() -> None:
    secrets = url_secrets("https://bob:hunter2@llm.example/v1?api_key=sk-query-77")
    text = "Client error for url 'https://bob:hunter2@llm.example/v1?api_key=sk-query-77/models'"
    hidden = hide_secrets(text, secrets)
    assert "hunter2" not in hidden
    assert "sk-query-77" not in hidden
    assert hidden == f"Client error for url 'https://{REDACTED}@llm.example/v1?{REDACTED}/models'"


# --- tool_calls_in_text ----------------------------------------------------------

TOOL_NAMES = ["HassTurnOn", "HassTurnOff", "get_time"]


def _calls(text: str) -> list[tuple[str, dict]] | None:
    calls = tool_calls_in_text(text, TOOL_NAMES)
    return None if calls is None else [(call.tool_name, call.tool_args) for call in calls]


def test_text_call_bare_json() -> None:
    assert _calls('{"name": "HassTurnOn", "arguments": {"name": "kitchen"}}') == [
        ("HassTurnOn", {"name": "kitchen"})
    ]


@pytest.mark.parametrize(
    ("written", "tools"),
    [
        ("HassTurnOn", ["intent__HassTurnOn", "llm__GetDateTime"]),  # 2026.9+ names
        ("intent__HassTurnOn", ["HassTurnOn", "get_time"]),  # and the other way round
    ],
)
def test_text_call_to_a_tool_by_its_other_name(written: str, tools: list[str]) -> None:
    """A known tool's call may carry extra keys (a confidence, a comment): by any name."""
    text = f'{{"name": "{written}", "arguments": {{"name": "kitchen"}}, "confidence": 0.9}}'
    calls = tool_calls_in_text(text, tools)
    assert calls is not None
    assert [(call.tool_name, call.tool_args) for call in calls] == [(written, {"name": "kitchen"})]


def test_text_call_gets_an_id() -> None:
    calls = tool_calls_in_text('{"name": "get_time", "arguments": {}}', TOOL_NAMES)
    assert calls is not None
    assert calls[0].id


def test_text_call_tool_call_tags() -> None:
    text = '<tool_call>\n{"name": "HassTurnOn", "arguments": {"name": "kitchen"}}\n</tool_call>'
    assert _calls(text) == [("HassTurnOn", {"name": "kitchen"})]


def test_text_call_code_fence() -> None:
    text = '```json\n{"name": "get_time", "arguments": {}}\n```'
    assert _calls(text) == [("get_time", {})]


def test_text_call_list_of_two() -> None:
    text = (
        '[{"name": "HassTurnOn", "arguments": {"name": "kitchen"}}, '
        '{"name": "HassTurnOff", "arguments": {"name": "hall"}}]'
    )
    assert _calls(text) == [("HassTurnOn", {"name": "kitchen"}), ("HassTurnOff", {"name": "hall"})]


def test_text_call_two_objects_in_a_row() -> None:
    text = (
        '{"name": "HassTurnOn", "arguments": {"name": "kitchen"}}\n'
        '{"name": "get_time", "arguments": {}}'
    )
    assert _calls(text) == [("HassTurnOn", {"name": "kitchen"}), ("get_time", {})]


def test_text_call_two_tagged_calls() -> None:
    text = (
        '<tool_call>{"name": "HassTurnOn", "arguments": {"name": "kitchen"}}</tool_call>'
        '<tool_call>{"name": "HassTurnOff", "arguments": {"name": "hall"}}</tool_call>'
    )
    assert _calls(text) == [("HassTurnOn", {"name": "kitchen"}), ("HassTurnOff", {"name": "hall"})]


def test_text_call_repeated_until_the_token_limit() -> None:
    call = '{"name": "HassDance", "arguments": "{\\"style\\": \\"tango\\"}"}'
    text = f"{call}\n{call}\n{call}\n" + call[:30]
    assert _calls(text) == [("HassDance", {"style": "tango"})]


def test_text_call_same_call_twice_runs_once() -> None:
    text = '{"name": "HassTurnOn", "arguments": {"name": "kitchen"}}' * 2
    assert _calls(text) == [("HassTurnOn", {"name": "kitchen"})]


def test_text_call_arguments_as_json_string() -> None:
    text = json.dumps({"name": "HassTurnOn", "arguments": json.dumps({"name": "kitchen"})})
    assert _calls(text) == [("HassTurnOn", {"name": "kitchen"})]


def test_text_call_parameters_key() -> None:
    text = '{"name": "HassTurnOn", "parameters": {"name": "kitchen"}}'
    assert _calls(text) == [("HassTurnOn", {"name": "kitchen"})]


def test_text_call_without_arguments() -> None:
    assert _calls('{"name": "get_time"}') == [("get_time", {})]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"name": "HassDance", "arguments": {}}', [("HassDance", {})]),
        (
            '{"name": "HassSetTemperature", "parameters": {"temperature": 45}}',
            [("HassSetTemperature", {"temperature": 45})],
        ),
        (
            '[{"name": "get_time", "arguments": {}}, {"name": "HassDance", "arguments": "{}"}]',
            [("get_time", {}), ("HassDance", {})],
        ),
    ],
)
def test_text_call_to_an_unknown_tool_is_a_call(text: str, expected: list) -> None:
    # Executed, it gets the unknown-tool error listing the real tools.
    assert _calls(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "HassDance"}',
        '{"name": "HassDance", "arguments": 3}',
        '{"name": "", "arguments": {}}',
        '{"name": "Kitchen light", "arguments": {}, "state": "on"}',
        '[{"name": "get_time", "arguments": {}}, {"name": "HassDance"}]',
        '{"name": "kitchen", "state": "on"}',
        '[{"name": "Kitchen light", "type": "entity", "id": "light.kitchen"}]',
        '{"answer": 42}',
        "[1, 2, 3]",
        "The kitchen light is on.",
        'Sure! {"name": "get_time", "arguments": {}}',
        '{"name": "get_time", "arguments": {}} Done.',
        "",
        "<tool_call></tool_call>",
        '{"name": "get_time"',
    ],
)
def test_text_call_refused(text: str) -> None:
    assert tool_calls_in_text(text, TOOL_NAMES) is None


# --- classify_error --------------------------------------------------------------

REQUEST = httpx.Request("POST", "http://x/v1/chat/completions")


def _status_error(cls: type[openai.APIStatusError], status: int) -> openai.APIStatusError:
    return cls("scripted", response=httpx.Response(status, request=REQUEST), body=None)


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (openai.APITimeoutError(request=REQUEST), ErrorKind.TIMEOUT),
        (openai.APIConnectionError(request=REQUEST), ErrorKind.CANNOT_CONNECT),
        (_status_error(openai.AuthenticationError, 401), ErrorKind.INVALID_AUTH),
        (_status_error(openai.PermissionDeniedError, 403), ErrorKind.INVALID_AUTH),
        (_status_error(openai.NotFoundError, 404), ErrorKind.MODEL_NOT_FOUND),
        (_status_error(openai.RateLimitError, 429), ErrorKind.RATE_LIMITED),
        (_status_error(openai.InternalServerError, 500), ErrorKind.SERVER_ERROR),
        (_status_error(openai.InternalServerError, 503), ErrorKind.SERVER_ERROR),
        (_status_error(openai.BadRequestError, 400), ErrorKind.BAD_REQUEST),
        (_status_error(openai.UnprocessableEntityError, 422), ErrorKind.BAD_REQUEST),
        (openai.APIError("error event in the stream", REQUEST, body=None), ErrorKind.BROKEN_STREAM),
        (httpx.ReadTimeout("slow", request=REQUEST), ErrorKind.TIMEOUT),
        (httpx.ConnectTimeout("slow", request=REQUEST), ErrorKind.TIMEOUT),
        (TimeoutError(), ErrorKind.TIMEOUT),
        (httpx.ConnectError("refused", request=REQUEST), ErrorKind.CANNOT_CONNECT),
        (httpx.RemoteProtocolError("incomplete chunked read"), ErrorKind.BROKEN_STREAM),
        (json.JSONDecodeError("Expecting value", "{not json", 1), ErrorKind.BROKEN_STREAM),
        (ReplyTooLargeError("8 MiB"), ErrorKind.BROKEN_STREAM),
        (UnicodeDecodeError("utf-8", b"caf\xe9", 3, 4, "invalid"), ErrorKind.BROKEN_STREAM),
        (ValueError("something else"), ErrorKind.UNKNOWN),
        (RuntimeError("something else"), ErrorKind.UNKNOWN),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_classify_error(err: BaseException, kind: ErrorKind) -> None:
    assert classify_error(err) is kind


def test_classify_error_other_client_status_is_bad_request() -> None:
    assert classify_error(_status_error(openai.APIStatusError, 413)) is ErrorKind.BAD_REQUEST


# --- cache_hints -----------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://api.openai.com/v1", "https://API.OpenAI.com/v1/"])
def test_cache_hints_openai(url: str) -> None:
    assert cache_hints(url, "majordome-abc") == {"prompt_cache_key": "majordome-abc"}


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:11434/v1",
        "http://127.0.0.1:8080/v1",
        "http://192.168.1.20:8000/v1",
        "https://api.openai.com.example.org/v1",
        "https://openrouter.ai/api/v1",
        "not a url",
    ],
)
def test_cache_hints_others(url: str) -> None:
    assert cache_hints(url, "majordome-abc") == {"cache_prompt": True}


def test_text_call_with_unhashable_name_is_refused() -> None:
    assert tool_calls_in_text('{"name": ["get_time"], "arguments": {}}', TOOL_NAMES) is None
