"""Smoke test of the harness: real Home Assistant + demo house + an intent.

    .venv/bin/python -m devtools.smoke

Exits 0 when Home Assistant starts, the house loads and HassTurnOn turns on
light.kitchen_light; prints the exposed entity count of both house sizes.
Does not depend on the majordome integration loading.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
import sys
import tempfile
import time

from devtools.hass_runner import running_home_assistant
from devtools.house import ASSISTANT, Size, async_setup_house
from homeassistant.components.homeassistant.exposed_entities import async_should_expose
from homeassistant.helpers import area_registry as ar, entity_registry as er, intent


async def _check(size: Size, config_dir: Path) -> int:
    """Start HA with one house size; return its exposed entity count."""
    started = time.monotonic()
    async with running_home_assistant(config_dir) as hass:
        house = await async_setup_house(hass, size)
        ready = time.monotonic() - started

        # Exposure as Assist sees it, not as the house claims it.
        registry = er.async_get(hass)
        exposed = sorted(
            e.entity_id
            for e in registry.entities.values()
            if async_should_expose(hass, ASSISTANT, e.entity_id)
        )
        if exposed != sorted(house.exposed):
            raise AssertionError(f"exposure mismatch: {set(exposed) ^ set(house.exposed)}")
        kitchen = registry.async_get("light.kitchen_light")
        areas = ar.async_get(hass)
        kitchen_area = areas.async_get_area_by_name("Kitchen")
        if kitchen is None or kitchen_area is None or kitchen.area_id != kitchen_area.id:
            raise AssertionError("light.kitchen_light is not in the Kitchen area")
        if len(list(areas.async_list_areas())) != len(house.areas):
            raise AssertionError("unexpected areas")

        state = hass.states.get("light.kitchen_light")
        if state is None or state.state != "off":
            raise AssertionError(f"kitchen light should start off: {state}")
        response = await intent.async_handle(
            hass, "test", "HassTurnOn", {"name": {"value": "Kitchen Light"}}
        )
        await hass.async_block_till_done()
        state = hass.states.get("light.kitchen_light")
        if state is None or state.state != "on":
            raise AssertionError(f"HassTurnOn did not turn the light on: {state}")
        print(
            f"{size}: {len(house.areas)} areas, {len(exposed)} exposed entities, "
            f"HA + house ready in {ready:.1f} s, HassTurnOn -> {response.response_type.value}, "
            f"light.kitchen_light={state.state}"
        )
        return len(exposed)


def main() -> int:
    """Run the smoke test for both house sizes."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for size in ("demo", "bench"):
        # A fresh config dir and event loop per size: one HA instance per loop.
        with tempfile.TemporaryDirectory(prefix="majordome-smoke-") as tmp:
            asyncio.run(_check(size, Path(tmp)))
    print("smoke: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
