"""Memory: who lives here (static profile, facts) and what they care about now (dynamic).

Both live in the config entry's data, so they survive restarts; the entry's update
listener reloads only when options change, so writing memory never reloads the agent.
Every write is a synchronous read-modify-write of the entry (no await in between):
two conversations writing at once cannot lose each other's change.

The LLM work (condensing an introduction, re-summarising interests: onboarding.py) is
sent as the conversation so far plus one request, without tools: offered tools, the
embedded 0.5B model answered in the tool-call format instead of writing the memory. It
costs no cache: the memory it writes changes the end of the system prompt, so the next
turn re-reads the tools (which chat templates put after the system text) either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.util import dt as dt_util

from .const import LOGGER, MEMORY_KEY

MAX_PROFILE_CHARS = 1200
MAX_DYNAMIC_CHARS = 800
MAX_FACTS = 30
MAX_FACT_CHARS = 200


class Onboarding(StrEnum):
    """Where the one-time introduction question stands."""

    PENDING = "pending"  # never asked
    ASKED = "asked"  # asked; the next message in that conversation is the answer
    DONE = "done"  # a profile exists
    DISMISSED = "dismissed"  # asked and not answered: never asked again


@dataclass(frozen=True)
class Memory:
    """Everything Majordome remembers about one household."""

    profile: str = ""
    facts: tuple[str, ...] = ()
    dynamic: str = ""
    onboarding: Onboarding = Onboarding.PENDING
    profile_updated: str | None = None
    dynamic_updated: str | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Memory:
        """Read memory as stored in the entry (missing keys take defaults)."""
        data = data or {}
        return cls(
            profile=str(data.get("profile", "")),
            facts=tuple(str(fact) for fact in data.get("facts", ())),
            dynamic=str(data.get("dynamic", "")),
            onboarding=Onboarding(data.get("onboarding", Onboarding.PENDING)),
            profile_updated=data.get("profile_updated"),
            dynamic_updated=data.get("dynamic_updated"),
        )

    def as_data(self) -> dict[str, Any]:
        """Return the JSON-serialisable form stored in the entry."""
        data = asdict(self)
        data["facts"] = list(self.facts)
        data["onboarding"] = str(self.onboarding)
        return data


_HEADERS = {
    "en": ("About the household:", "Facts to remember:", "Current interests:"),
    "fr": ("À propos du foyer :", "Faits à retenir :", "Centres d'intérêt du moment :"),
}


def prompt_block(memory: Memory, language: str) -> str:
    """Return the memory as it is written at the end of the system prompt ("" if empty).

    It goes last: it changes every few turns, and the stable instructions and home
    context before it stay a reusable prefix.
    """
    profile, facts, dynamic = _HEADERS.get(language, _HEADERS["en"])
    parts = []
    if memory.profile:
        parts.append(f"{profile}\n{memory.profile}")
    if memory.facts:
        parts.append(facts + "\n" + "\n".join(f"- {fact}" for fact in memory.facts))
    if memory.dynamic:
        parts.append(f"{dynamic}\n{memory.dynamic}")
    return "\n\n".join(parts)


@dataclass
class MemoryStore:
    """Reads and writes one entry's memory; counts turns for the re-summary cadence."""

    hass: HomeAssistant
    entry: ConfigEntry
    turns_since_summary: int = 0
    asked_in_conversation: str | None = None  # where the introduction was asked
    summary_running: bool = field(default=False)

    @property
    def memory(self) -> Memory:
        """The memory as it is now."""
        return Memory.from_data(self.entry.data.get(MEMORY_KEY))

    @callback
    def update(self, **changes: Any) -> Memory:
        """Change some fields and save, atomically with respect to other writers."""
        now = dt_util.utcnow().isoformat()
        if "profile" in changes:
            changes["profile"] = changes["profile"].strip()[:MAX_PROFILE_CHARS]
            changes.setdefault("profile_updated", now)
        if "dynamic" in changes:
            changes["dynamic"] = changes["dynamic"].strip()[:MAX_DYNAMIC_CHARS]
            changes.setdefault("dynamic_updated", now)
        memory = replace(self.memory, **changes)
        self.hass.config_entries.async_update_entry(
            self.entry, data={**self.entry.data, MEMORY_KEY: memory.as_data()}
        )
        return memory

    @callback
    def remember(self, fact: str) -> Memory:
        """Add a fact (once; the oldest go when the list is full)."""
        fact = " ".join(fact.split())[:MAX_FACT_CHARS]
        facts = [known for known in self.memory.facts if known.casefold() != fact.casefold()]
        return self.update(facts=(*facts, fact)[-MAX_FACTS:])

    @callback
    def forget(self, text: str) -> list[str]:
        """Remove the facts that contain `text` (case-insensitive); return them."""
        needle = " ".join(text.split()).casefold()
        facts = self.memory.facts
        removed = [fact for fact in facts if needle and needle in fact.casefold()]
        if removed:
            self.update(facts=tuple(fact for fact in facts if fact not in removed))
        return removed

    @callback
    def clear(self, part: str = "all") -> Memory:
        """Forget the profile, the facts, the dynamic memory, or all of them."""
        changes: dict[str, Any] = {}
        if part in ("all", "profile"):
            changes.update(profile="", profile_updated=None)
        if part in ("all", "facts"):
            changes["facts"] = ()
        if part in ("all", "dynamic"):
            changes.update(dynamic="", dynamic_updated=None)
        LOGGER.debug("Clearing memory: %s", part)
        return self.update(**changes)

    def summary_due(self, every: int) -> bool:
        """Count a user turn; True when the dynamic memory should be re-summarised."""
        self.turns_since_summary += 1
        if every <= 0 or self.turns_since_summary < every or self.summary_running:
            return False
        self.turns_since_summary = 0
        return True


# --- What is asked of the model --------------------------------------------------

CONDENSE_INSTRUCTION = (
    "Memory task, not a request to answer. The user's message below answers the question "
    "'tell me about your household'. Write a short profile of the household from it: "
    "names, ages, what they like, how they want to be answered. At most 5 short lines, "
    "in the language of the message, facts only. If the message is not an introduction "
    "at all, answer exactly NONE.\n\nMessage: {text}"
)

SUMMARY_INSTRUCTION = (
    "Memory task, not a request to answer. From the conversation above and the previous "
    "notes below, write the household's current interests and preferences as at most 5 "
    "short lines, facts only, no greeting. Keep what still holds, drop what is outdated. "
    "If there is nothing worth keeping, answer exactly NONE.\n\nPrevious notes:\n{previous}"
)


def condense_request(text: str) -> dict[str, str]:
    """The user message asking the model to condense an introduction."""
    return {"role": "user", "content": CONDENSE_INSTRUCTION.format(text=text)}


def summary_request(previous: str) -> dict[str, str]:
    """The user message asking the model to re-summarise the dynamic memory."""
    return {"role": "user", "content": SUMMARY_INSTRUCTION.format(previous=previous or "(none)")}


def parse_memory_text(text: str) -> str | None:
    """Return the model's memory text, or None when it said there is nothing."""
    cleaned = text.strip().strip("`").strip()
    if not cleaned or cleaned.upper().rstrip(".") == "NONE" or cleaned.lstrip()[:1] in "{[":
        return None
    return cleaned
