"""The talking page: a sidebar panel that speaks with the voice endpoint.

One ES module (www/majordome-voice-panel.js, no build step) defines the panel's
custom element; Home Assistant's frontend loads it and hands it the `hass` object,
whose access token authenticates the page's websocket to the endpoint. The module's
URL carries a hash of the file, so browsers fetch it again after an update while
the file itself is served with long cache headers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from homeassistant.components import panel_custom
from homeassistant.components.frontend import DATA_PANELS
from homeassistant.components.http import StaticPathConfig
from homeassistant.core import HomeAssistant

from ..const import LOGGER, PANEL_ELEMENT, PANEL_ICON, PANEL_MODULE_URL, PANEL_TITLE, PANEL_URL_PATH

PANEL_FILE = Path(__file__).parent / "www" / f"{PANEL_ELEMENT}.js"


def module_version(path: Path = PANEL_FILE) -> str:
    """A short hash of the module's content (blocking: it reads the file)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


async def async_register_panel(hass: HomeAssistant) -> bool:
    """Serve the module and add the page to the sidebar; False without a frontend.

    Home Assistant without its frontend (a headless install, most tests) still runs
    Majordome: the agent and the voice endpoint need no page.
    """
    if "frontend" not in hass.config.components:
        LOGGER.debug("No frontend: the Majordome page is not registered")
        return False
    if PANEL_URL_PATH in hass.data.get(DATA_PANELS, {}):
        return True  # already there (async_setup runs once, but be safe)
    version = await hass.async_add_executor_job(module_version)
    await hass.http.async_register_static_paths(
        [StaticPathConfig(PANEL_MODULE_URL, str(PANEL_FILE), cache_headers=True)]
    )
    await panel_custom.async_register_panel(
        hass,
        frontend_url_path=PANEL_URL_PATH,
        webcomponent_name=PANEL_ELEMENT,
        sidebar_title=PANEL_TITLE,
        sidebar_icon=PANEL_ICON,
        module_url=f"{PANEL_MODULE_URL}?v={version}",
        require_admin=False,
    )
    return True
