"""Pathological text from users and models: nothing explodes, long input gets an answer.

Every regex applied to text from the user or the model must stay linear: a quadratic
one froze Home Assistant's event loop for seconds on 100 kB. The bounds below are
generous ("no blow-up"), far above the milliseconds the fixed code takes.
"""

from __future__ import annotations

from collections.abc import Callable
import json
from pathlib import Path
import re
import time
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.majordome import backend, metacognition
from custom_components.majordome.const import MAX_UTTERANCE_CHARS
from custom_components.majordome.tools import MAX_ECHOED_NAME
from custom_components.majordome.voice.sentences import MAX_SENTENCE, SentenceSplitter, speakable
from devtools.scripted_server import ScriptedServer, text, tool_calls
from homeassistant.core import HomeAssistant

from .helpers import converse, tool_results

LIMIT_S = 1.0
MEGABYTE = 1_000_000
COMPONENT = Path(__file__).parents[1] / "custom_components" / "majordome"


def assert_quick(function: Callable[[str], Any], text: str) -> Any:
    """Run function(text) and check it took well under a second of this process's CPU
    (not wall time: a busy machine must not fail it)."""
    started = time.process_time()
    result = function(text)
    assert time.process_time() - started < LIMIT_S
    return result


# --- The screening (issue 12, item 1) ------------------------------------------------

# Each took minutes or more at 1 MB: openers left unclosed, runs of spaces around a number.
SCREENING_ATTACKS = {
    "unclosed [": "[" * MEGABYTE,
    "unclosed (": "(" * MEGABYTE,
    "unclosed <": "turn on <" * (MEGABYTE // 9),
    "unclosed 【": "【" * MEGABYTE,
    "unclosed （": "（" * MEGABYTE,
    "every opener": "[(<【（ a" * (MEGABYTE // 8),
    "closed after": "(" * MEGABYTE + ")",
    "stars": "*" * MEGABYTE,
    "markers": "[a] " * (MEGABYTE // 4),
    "spaced number": "1" + " " * MEGABYTE + "#",
    "spaced unit": "21" + " " * MEGABYTE + "%" + " " * MEGABYTE + "#",
}


@pytest.mark.parametrize("text", SCREENING_ATTACKS.values(), ids=SCREENING_ATTACKS.keys())
def test_the_screening_reads_a_megabyte_at_once(text: str) -> None:
    assert_quick(metacognition.screen_rules, text)


STRIP_ATTACKS = {
    name: text
    for name, text in SCREENING_ATTACKS.items()
    if name.startswith(("unclosed", "every", "closed"))
}


@pytest.mark.parametrize("text", STRIP_ATTACKS.values(), ids=STRIP_ATTACKS.keys())
def test_markers_are_stripped_in_linear_time(text: str) -> None:
    assert_quick(metacognition.strip_markers, text)


# The regex strip_markers replaces; it is right, only slow on unclosed openers.
_MARKER_REGEX = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|<[^>]*>|【[^】]*】|（[^）]*）")


def _all_texts(alphabet: str, length: int) -> list[str]:
    result = [""]
    frontier = [""]
    for _ in range(length):
        frontier = [text + char for text in frontier for char in alphabet]
        result += frontier
    return result


@pytest.mark.parametrize("alphabet", ["[]()a", "*<>a ", "【】（）(["])
def test_markers_are_stripped_as_the_regex_did(alphabet: str) -> None:
    for sample in _all_texts(alphabet, 6):
        assert metacognition.strip_markers(sample) == _MARKER_REGEX.subn(" ", sample), sample


@pytest.mark.parametrize(
    ("text", "ignored"),
    [
        ("[Music]", True),
        ("(rires) *applause*", True),
        ("[Music] turn on the light", False),
        ("21", False),
        (" 20,5 % ", False),
        ("7:30.", False),
        ("19 h", False),
        ("1  #", True),
        ("(", True),
    ],
)
def test_the_screening_still_reads_markers_and_numbers(text: str, ignored: bool) -> None:
    assert metacognition.screen_rules(text).ignore is ignored


def test_the_refusal_names_the_limit_in_both_languages() -> None:
    for path in (COMPONENT / "strings.json", *(COMPONENT / "translations").glob("*.json")):
        exceptions = json.loads(path.read_text(encoding="utf-8"))["exceptions"]
        assert str(MAX_UTTERANCE_CHARS) in exceptions["input_too_long"]["message"], path


# --- The model's text: tool arguments, speech -----------------------------------------

# Runs of spaces inside the text: a fence pattern searched at each of them (quadratic).
FENCE_ATTACKS = {
    "spaces in a string": '{"name": "' + " " * MEGABYTE + 'x"}',
    "spaces in a fence": "```json\n{" + " " * MEGABYTE + "x\n```",
    "newlines": "{" + "\n" * MEGABYTE + "}x",
}


@pytest.mark.parametrize("text", FENCE_ATTACKS.values(), ids=FENCE_ATTACKS.keys())
def test_tool_arguments_are_read_in_linear_time(text: str) -> None:
    assert_quick(backend.parse_arguments, text)
    assert_quick(lambda body: backend.tool_calls_in_text(body, ["HassTurnOn"]), text)


@pytest.mark.parametrize(
    ("raw", "arguments"),
    [
        ('```json\n{"name": "Kitchen Light"}\n```', {"name": "Kitchen Light"}),
        ('```{"name": "x"}```', {"name": "x"}),
        (' ```\n{"a": 1}``` ', {"a": 1}),
        ('{"a": "```"}', {"a": "```"}),
    ],
)
def test_a_code_fence_is_still_dropped(raw: str, arguments: dict[str, Any]) -> None:
    assert backend.parse_arguments(raw) == arguments


KILOBYTES_200 = 200_000
# speakable() gets one sentence at a time (a few hundred characters), but a sentence
# without spaces or commas was not cut: these were minutes.
SPEECH_ATTACKS = {
    "underscores in a word": "a" + "_" * KILOBYTES_200 + "a",
    "unclosed link text": "[" * KILOBYTES_200 + "]",
    "unclosed link url": "[a](" * (KILOBYTES_200 // 4),
    "unclosed url parentheses": "[a](" + "(x" * (KILOBYTES_200 // 2),
}


@pytest.mark.parametrize("text", SPEECH_ATTACKS.values(), ids=SPEECH_ATTACKS.keys())
def test_speech_is_cleaned_in_linear_time(text: str) -> None:
    assert_quick(speakable, text)


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("See [the docs](https://x.y/z).", "See the docs."),
        ("[Foo](https://en.wikipedia.org/wiki/Foo_(bar)) is here.", "Foo is here."),
        ("_Done_, __really__ done: kitchen_lamp.", "Done, really done: kitchen lamp."),
        ("1. ___", ""),
    ],
)
def test_speech_is_still_cleaned(text: str, spoken: str) -> None:
    assert speakable(text) == spoken


# Streamed delta by delta, a reply nothing could cut grew and was read again each time.
STREAM_ATTACKS = {
    "underscores": "_",
    "spaces at a line start": " ",
    "tabs and spaces at a line start": " \t",
    "one long word": "a",
}


@pytest.mark.parametrize("delta", STREAM_ATTACKS.values(), ids=STREAM_ATTACKS.keys())
def test_a_stream_nothing_cuts_is_split_in_linear_time(delta: str) -> None:
    def split(text: str) -> list[str]:
        splitter = SentenceSplitter()
        sentences = [sentence for _ in range(20_000) for sentence in splitter.feed(text)]
        return sentences + splitter.feed("Done.") + splitter.flush()

    sentences = assert_quick(split, delta)
    assert sentences[-1].endswith("Done.")
    assert all(len(sentence) <= 2 * MAX_SENTENCE for sentence in sentences)


# --- Unknown tools ------------------------------------------------------------------------


async def test_an_unknown_tool_name_is_echoed_capped(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    name = "Hass" + "Dance" * 20_000
    scripted.add(tool_calls((name, {})), text("I cannot."))

    await converse(hass, entry, "Dance!")

    [result] = tool_results(scripted.chat_requests[1])
    assert result["error_text"].startswith(f"There is no tool named {name[:MAX_ECHOED_NAME]!r}.")
    assert len(result["error_text"]) < MAX_ECHOED_NAME + 2_000
