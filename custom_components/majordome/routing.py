"""The cascade: which requests a fast model takes, and when its turn failed.

An agent may have a fast model (a small one, on its own server or the entry's) beside
its main model. A request goes to the fast model when it is *simple*, a structural
rule that reads no list of known sentences:

1. it is short: at most `MAX_SIMPLE_WORDS` words;
2. it is a single request: one clause, no joining word ("and", "then", "et", "puis"...)
   nor inner punctuation (a comma, a second sentence);
3. it stands alone: no word that points back at an earlier turn ("it", "them", "the
   same", "too", "ça", "aussi", "éteins-la"...), and the last reply did not ask a
   question (the request would then be its answer, which needs that context);
4. it names something the house exposes to Assist: an exposed entity's name or alias,
   or an area's name or alias, from Home Assistant's registries (whole words, any case).

Such a request asks to act on, or read, a named part of the house: one tool call, which
a small model does well. Anything else (chat, questions about the world, several things
at once, follow-ups) goes to the main model.

The fast model's turn *failed*, and the main model takes the turn again (once, after
the fast attempt's words and tool calls are removed from the chat log) when:

- no tool call succeeded (the rule expects one: the request names part of the house),
- a call failed: an unknown tool, unparsable arguments, a tool's error,
- its reply says it could not do it ("I can't", "désolé", "impossible"...),
- or the server failed (unreachable, timed out, an error).

Unless something *acted*: a tool other than a read-only one succeeded. An action that
ran is never run twice: that turn is the fast model's, whatever it said after.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from homeassistant.components import conversation
from homeassistant.components.homeassistant.exposed_entities import async_should_expose
from homeassistant.core import HomeAssistant
from homeassistant.helpers import area_registry as ar, entity_registry as er

from . import compat, tools
from .metacognition import read_list

MAX_SIMPLE_WORDS = 8

# The word lists are data (phrases/*.txt), in the languages Majordome speaks.
JOINING_WORDS = frozenset(read_list("joining_words"))  # two requests in one
BACK_REFERENCES = frozenset(read_list("back_references"))  # pointing at an earlier turn
HYPHENATED_PRONOUNS = read_list("hyphenated_pronouns")  # "éteins-la", "allume-les"
# Inner punctuation that separates two clauses or two sentences.
CLAUSE_MARKS = frozenset(",;:.!?")

# What a reply says when the model could not do it (lowercase, straight apostrophes).
REFUSALS = read_list("could_not")
# Tools that only read: their success is not an action (asking again is harmless).
READ_ONLY_TOOLS = frozenset({"GetLiveContext", "HassGetState", *tools.SPOKEN_TOOLS})


class Route(StrEnum):
    """Where the cascade sent a request, and why (recorded in the turn's trace)."""

    FAST = "fast"  # simple: the fast model first
    NO_CASCADE = "no_cascade"  # the agent has no fast model
    LONG = "long"
    SEVERAL = "several"  # more than one clause
    REFERS_BACK = "refers_back"
    NAMES_NOTHING = "names_nothing"


class Failure(StrEnum):
    """Why the fast model's turn was taken again by the main model."""

    NO_TOOL_CALL = "no_tool_call"
    TOOL_ERROR = "tool_error"  # an unknown tool, bad arguments, a tool's error
    REFUSAL = "refusal"
    GAVE_UP = "gave_up"  # Majordome answered for it: a refused action, going in circles
    SERVER_ERROR = "server_error"


@dataclass(frozen=True)
class TurnSummary:
    """What the fast model's turn did: its tools' outcomes and its last words."""

    acted: bool
    succeeded: int
    failed: int


def words(text: str) -> list[str]:
    """The lowercase words of `text`; an apostrophe ends a word ("l'entrée": "l", "entrée").

    Hyphens stay inside words: "sèche-serviettes" is one name, "éteins-la" one verb.
    """
    cleaned = "".join(char if char.isalnum() or char == "-" else " " for char in text.casefold())
    return [word.strip("-") for word in cleaned.split() if word.strip("-")]


def house_names(hass: HomeAssistant) -> list[list[str]]:
    """The names the house exposes to Assist, as word lists: entities' and areas'."""
    registry = er.async_get(hass)
    names: set[str] = set()
    for state in hass.states.async_all():
        if not async_should_expose(hass, conversation.DOMAIN, state.entity_id):
            continue
        names.add(state.name)
        if (entity := registry.async_get(state.entity_id)) is not None:
            # Not always strings: 2026.x has a sentinel for a name computed elsewhere.
            given = (entity.name, entity.original_name, *entity.aliases)
            names.update(name for name in given if isinstance(name, str) and name)
    for area in ar.async_get(hass).async_list_areas():
        names.add(area.name)
        names.update(area.aliases)
    return [split for name in names if (split := words(name))]


def _contains(text_words: Sequence[str], name: Sequence[str]) -> bool:
    size = len(name)
    return any(
        list(text_words[start : start + size]) == list(name)
        for start in range(len(text_words) - size + 1)
    )


def route(text: str, last_reply: str | None, names: Iterable[Sequence[str]]) -> Route:
    """Where a request goes: FAST when it is simple (see the module's rule), else why not.

    `last_reply` is what the agent said last in this conversation (None: first turn).
    """
    text_words = words(text)
    # Words as written ("l'entrée" is one), not the marks French sets apart ("allumée ?").
    if sum(any(char.isalnum() for char in word) for word in text.split()) > MAX_SIMPLE_WORDS:
        return Route.LONG
    inner = text.strip().rstrip(".!?").strip()
    if any(char in CLAUSE_MARKS for char in inner) or JOINING_WORDS.intersection(text_words):
        return Route.SEVERAL
    if (
        BACK_REFERENCES.intersection(text_words)
        or any(word.endswith(HYPHENATED_PRONOUNS) for word in text_words)
        or (last_reply or "").rstrip().endswith("?")
    ):
        return Route.REFERS_BACK
    if not any(_contains(text_words, name) for name in names):
        return Route.NAMES_NOTHING
    return Route.FAST


def summarize(contents: Iterable[conversation.Content]) -> TurnSummary:
    """Count the fast turn's tool outcomes, and whether any of them acted."""
    acted, succeeded, failed = False, 0, 0
    for content in contents:
        if not isinstance(content, conversation.ToolResultContent):
            continue
        if compat.result_failed(content):
            failed += 1
            continue
        succeeded += 1
        read_only = compat.base_tool_name(content.tool_name) in READ_ONLY_TOOLS
        query = compat.result_data(content).get("response_type") == "query_answer"
        acted = acted or not (read_only or query)
    return TurnSummary(acted=acted, succeeded=succeeded, failed=failed)


def is_refusal(reply: str) -> bool:
    """Whether the reply says the model could not do what was asked."""
    said = reply.casefold().replace("’", "'")
    return any(refusal in said for refusal in REFUSALS)


def failure(summary: TurnSummary, reply: str | None) -> Failure | None:
    """Why the fast turn failed, or None when it stands.

    `reply` is the model's own words; None when Majordome answered for it because
    the model gave up (a refused action, an iteration limit, going in circles).
    """
    if summary.acted:
        return None  # an action ran: never run it twice
    if summary.failed:
        return Failure.TOOL_ERROR
    if not summary.succeeded:
        return Failure.NO_TOOL_CALL
    if reply is None:
        return Failure.GAVE_UP
    if is_refusal(reply):
        return Failure.REFUSAL
    return None
