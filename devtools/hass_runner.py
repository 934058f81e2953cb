"""Run a real Home Assistant core in the current event loop (not the pytest mock).

    async with running_home_assistant(Path("/tmp/ha")) as hass:
        ...

It follows homeassistant.bootstrap.async_from_config_dict but sets up only what a
conversation agent needs, instead of the default integrations (frontend, cloud, ...),
which would need extra packages or reach the network. HTTP (a dependency of
conversation) listens on 127.0.0.1 only, on a free port: `hass.http.server_port`.

One instance per event loop: HA's shutdown marks the loop as closing for
thread-safe callbacks, so run each instance under its own ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
import contextlib
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from devtools.ports import free_port
from homeassistant import bootstrap, config_entries, loader
from homeassistant.core import CoreState, HomeAssistant
from homeassistant.core_config import async_process_ha_core_config
from homeassistant.exceptions import HomeAssistantError
from homeassistant.setup import async_setup_component

REPO_ROOT = Path(__file__).resolve().parent.parent
INTEGRATION_SRC = REPO_ROOT / "custom_components" / "majordome"

CORE_CONFIG: dict[str, Any] = {
    "name": "Majordome Dev",
    "latitude": 48.8566,
    "longitude": 2.3522,
    "elevation": 35,
    "time_zone": "Europe/Paris",
    "unit_system": "metric",
    "currency": "EUR",
    "country": "FR",
    "language": "en",
}

# "homeassistant" also sets up exposed_entities (what Assist may see).
# (http comes first, on loopback: conversation depends on it.)
BASE_INTEGRATIONS = ("homeassistant", "persistent_notification", "intent", "conversation")


def _prepare_config_dir(config_dir: Path) -> Path:
    """Create config_dir and point its custom_components/majordome at the working tree."""
    config_dir = config_dir.resolve()
    custom = config_dir / "custom_components"
    custom.mkdir(parents=True, exist_ok=True)
    link = custom / "majordome"
    if link.is_symlink() and link.resolve() == INTEGRATION_SRC.resolve():
        return config_dir
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link} exists and is not our symlink")
    link.symlink_to(INTEGRATION_SRC, target_is_directory=True)
    return config_dir


async def _async_confirm_http(hass: HomeAssistant) -> None:
    """Confirm the HTTP settings, as a user does once the page answers.

    Home Assistant 2026.10+ runs new HTTP settings on trial: unconfirmed, they are
    reverted with a restart after 5 minutes, in the middle of a long benchmark.
    """
    try:
        from homeassistant.components.http.config import async_get_and_load_store
    except ImportError:
        return
    store = await async_get_and_load_store(hass)
    with contextlib.suppress(HomeAssistantError):  # nothing pending: nothing on trial
        await store.async_promote_pending()


@asynccontextmanager
async def running_home_assistant(
    config_dir: Path, core_config: Mapping[str, Any] | None = None
) -> AsyncIterator[HomeAssistant]:
    """Start Home Assistant with config_dir, yield it running, then stop it cleanly."""
    config_dir = await asyncio.to_thread(_prepare_config_dir, config_dir)

    hass = HomeAssistant(str(config_dir))
    loader.async_setup(hass)
    # Everything comes from the venv; never let HA pip-install requirements.
    hass.config.skip_pip = True
    hass.config_entries = config_entries.ConfigEntries(hass, {})
    try:
        # Prime the custom integration cache before the registries load, as bootstrap does.
        await loader.async_get_custom_components(hass)
        await bootstrap.async_load_base_functionality(hass)  # registries, restore state
        await async_process_ha_core_config(hass, dict(core_config or CORE_CONFIG))
        # Otherwise conversation pulls http in with its defaults: 0.0.0.0:8123.
        http = {"http": {"server_host": "127.0.0.1", "server_port": free_port()}}
        if not await async_setup_component(hass, "http", http):
            raise RuntimeError("Home Assistant failed to set up http")
        await _async_confirm_http(hass)
        for domain in BASE_INTEGRATIONS:
            if not await async_setup_component(hass, domain, {}):
                raise RuntimeError(f"Home Assistant failed to set up {domain}")
        await hass.async_start()
        yield hass
    finally:
        # Also after a failed startup (force): it flushes storage and stops HA's threads.
        if hass.state is not CoreState.stopped:
            await hass.async_stop(force=True)
