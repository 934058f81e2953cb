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

from custom_components.majordome import metacognition
from custom_components.majordome.const import MAX_UTTERANCE_CHARS

LIMIT_S = 1.0
MEGABYTE = 1_000_000
COMPONENT = Path(__file__).parents[1] / "custom_components" / "majordome"


def assert_quick(function: Callable[[str], Any], text: str) -> Any:
    """Run function(text) and check it took well under a second."""
    started = time.perf_counter()
    result = function(text)
    assert time.perf_counter() - started < LIMIT_S
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
    for text in _all_texts(alphabet, 6):
        assert metacognition.strip_markers(text) == _MARKER_REGEX.subn(" ", text), text


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
