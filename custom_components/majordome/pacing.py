"""Many turns at once: their CPU-bound steps a few per pass of the event loop.

Fifty people speaking at the same moment start fifty turns in the same pass of Home
Assistant's event loop. Each builds its tools, its prompt and its request (the OpenAI
client's own request building included) without waiting on anything, 10 to 30 ms of
CPU: the loop would run everything else (timers, other integrations) late by their sum,
half a second and more. A turn waits for its pass before such a step: a few go through
per pass, the others in the next ones, and the loop runs its timers in between. A turn
alone, or a few, never waits.
"""

from __future__ import annotations

import asyncio

from homeassistant.core import HomeAssistant
from homeassistant.util.hass_dict import HassKey

# Steps let through per pass of the loop: each costs a few milliseconds to some tens.
STEPS_PER_PASS = 3

_PACER: HassKey[Pacer] = HassKey("majordome_pacer")


class Pacer:
    """Lets `per_pass` callers through per pass of the event loop; the others wait."""

    def __init__(self, per_pass: int = STEPS_PER_PASS) -> None:
        """`per_pass` steps may start in the same pass."""
        self._slots = asyncio.Semaphore(per_pass)

    async def async_wait(self) -> None:
        """Return when the caller may run its step now.

        A slot is free again at the next pass, whatever the caller does until then (a
        step that awaits, fails or is cancelled holds nothing longer): the pace is
        per pass, never per turn, and a slow server slows no one else.
        """
        await self._slots.acquire()
        asyncio.get_running_loop().call_soon(self._slots.release)


def pacer(hass: HomeAssistant) -> Pacer:
    """The pacer of `hass`'s loop, shared by every entry and agent."""
    if (found := hass.data.get(_PACER)) is None:
        found = hass.data[_PACER] = Pacer()
    return found


async def async_wait_pass(hass: HomeAssistant) -> None:
    """Wait, if many turns are starting, for a pass of the loop that has room."""
    await pacer(hass).async_wait()
