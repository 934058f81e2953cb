"""The history sent to the model leaves out Home Assistant's notes of unanswered turns."""

from __future__ import annotations

from typing import Any

import pytest

from custom_components.majordome import prompt


def _user(content: str) -> dict[str, Any]:
    return {"role": "user", "content": content}


def _assistant(content: str) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


@pytest.mark.parametrize("note", ["(no response)", "Error: CancelledError"])
def test_a_note_goes_with_its_question(note: str) -> None:
    history = [_user("a"), _assistant("A."), _user("b"), _assistant(note), _user("c")]
    assert prompt.without_turn_notes(history) == [_user("a"), _assistant("A."), _user("c")]


def test_words_of_the_model_or_the_user_stay() -> None:
    history = [
        _user("(no response)"),
        _assistant("Error: the light is unavailable"),
        _user("say (no response)"),
        _assistant("(no response) is what you asked me to say."),
    ]
    assert prompt.without_turn_notes(history) == history


def test_a_note_after_a_tool_result_leaves_the_rest_to_well_formed() -> None:
    call = {"id": "1", "type": "function", "function": {"name": "x", "arguments": "{}"}}
    history = [
        _user("a"),
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "1", "content": "{}"},
        _assistant("Error: CancelledError"),
        _user("b"),
    ]
    assert prompt.without_turn_notes(history) == [*history[:3], _user("b")]
