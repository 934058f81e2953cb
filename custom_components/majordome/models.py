"""What an entry keeps at run time, its agents, and what a turn cost."""

from __future__ import annotations

from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass, field
import time
from typing import Any

import openai

from homeassistant.config_entries import ConfigEntry, ConfigSubentry

from .backend import StreamStats
from .const import SUBENTRY_AGENT
from .memory import MemoryStore

# Set by the voice endpoint around a turn: the text came from speech-to-text, so it
# is screened like a satellite's (Home Assistant 2025.4 gives agents no such flag).
SPOKEN_INPUT: ContextVar[bool] = ContextVar("majordome_spoken_input", default=False)


@dataclass
class TurnTrace:
    """Where one turn's time went; logged at debug level and read by the benchmarks."""

    started: float = field(default_factory=time.monotonic)
    prepare_s: float = 0.0  # tools, prompt and messages built
    completions: list[StreamStats] = field(default_factory=list)
    total_s: float = 0.0
    screen_s: float = 0.0  # metacognition, both stages
    local: str | None = None  # what the local stage did (local.LocalOutcome), None: not reached
    local_intent: str | None = None  # the intent Home Assistant ran, when it handled the turn
    local_s: float = 0.0  # Home Assistant's own matching (and the intent, when it ran)
    error: str | None = None
    route: str | None = None  # where the cascade sent the request (routing.Route)
    fast_failure: str | None = None  # why the main model took the fast model's turn again
    answered_by: str | None = None  # "fast" or "main": the model whose turn stood

    @property
    def server_s(self) -> float:
        """Time spent waiting on the server, from request to the stream's end."""
        return sum(stats.total_s for stats in self.completions)

    @property
    def overhead_s(self) -> float:
        """Time spent in Majordome and Home Assistant (tools included)."""
        return self.total_s - self.server_s


# An agent's name and its settings (model and options): a change of either reloads.
type AgentSettings = tuple[str, dict[str, Any]]


@dataclass
class MajordomeData:
    """Runtime data of one config entry (a server and its household)."""

    client: openai.AsyncOpenAI
    # The options and agents the entry was set up with: the update listener reloads
    # only when these change, not when other writes (e.g. memory) touch the entry.
    options: dict[str, Any]
    memory: MemoryStore
    agents: dict[str, AgentSettings] = field(default_factory=dict)
    last_turn: TurnTrace | None = None
    ignored: Counter[str] = field(default_factory=Counter)  # utterances screened out, by reason
    # Model turns by the model that answered ("fast", "main"), and fast turns taken again.
    model_turns: Counter[str] = field(default_factory=Counter)
    # The fast model's server, by agent (subentry id), for agents that name one.
    fast_clients: dict[str, openai.AsyncOpenAI] = field(default_factory=dict)


type MajordomeConfigEntry = ConfigEntry[MajordomeData]


def agents_of(entry: ConfigEntry) -> list[ConfigSubentry]:
    """The entry's agents, oldest first."""
    return [sub for sub in entry.subentries.values() if sub.subentry_type == SUBENTRY_AGENT]


def default_agent(entry: ConfigEntry) -> ConfigSubentry | None:
    """The agent that answers for the entry as a whole: its oldest.

    It answers to the entry's id as an agent id (as the single agent of 0.1 did) and
    speaks on the voice endpoint unless another is named.
    """
    return next(iter(agents_of(entry)), None)


def agent_settings(entry: ConfigEntry) -> dict[str, AgentSettings]:
    """Each agent's name and settings, by subentry id."""
    return {sub.subentry_id: (sub.title, dict(sub.data)) for sub in agents_of(entry)}
