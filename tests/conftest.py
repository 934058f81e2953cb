"""Fixtures: a scripted OpenAI-compatible server on loopback and a Majordome entry on it.

Also the real Wyoming speech servers (piper, faster-whisper) and the demo (a real Home
Assistant with its frontend, for the browser tests): started once for the whole run,
and only when a test asks for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
import gc
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
import pytest_socket

from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from devtools.scripted_server import ScriptedServer
from devtools.voice_servers import PiperServer, WhisperServer, spoken_command
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component

from .browser_helpers import WARM_UP_TIMEOUT_S, RunningDemo, start_demo
from .helpers import MODEL, majordome_entry
from .pipeline_helpers import SPOKEN_COMMAND

__all__ = ["MODEL"]


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load Majordome from custom_components/."""


@pytest.fixture
async def scripted(socket_enabled: None) -> AsyncGenerator[ScriptedServer]:
    """A scripted OpenAI-compatible server on 127.0.0.1."""
    server = ScriptedServer(models=[MODEL, "other-model"])
    await server.start()
    yield server
    await _async_collect_stream_garbage()
    await server.stop()


async def _async_collect_stream_garbage() -> None:
    """Close, while the test's loop runs, what the client's streams left to the collector.

    openai 2+ leaves the async generators under a stream suspended once it ended (after
    `[DONE]`, or an error); Python closes each one by a task when it is collected,
    whenever that happens. Collected here, those tasks end before the test's own end,
    where a task still running is a failure.
    """
    gc.collect()
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
def entry_options() -> dict[str, Any]:
    """The setup the entry is created with; tests override this fixture.

    The agent's options and the household's voice servers in one dict: see
    `majordome_entry`, which puts each where it belongs.
    """
    return dict(DEFAULT_OPTIONS)


@pytest.fixture
async def entry(
    hass: HomeAssistant, scripted: ScriptedServer, entry_options: dict[str, Any]
) -> MockConfigEntry:
    """A loaded Majordome server entry on the scripted server, with one agent on MODEL."""
    assert await async_setup_component(hass, "homeassistant", {})
    config_entry = majordome_entry(scripted.url, entry_options)
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    return config_entry


# --- the real speech servers, once per run ---------------------------------------------
# A session fixture is set up inside the first test that asks for it, before that test's
# socket_enabled lifts pytest-socket's guard: the readiness probe needs loopback now.


@pytest.fixture(scope="session")
def piper_server() -> Iterator[PiperServer]:
    """wyoming-piper on 127.0.0.1, warmed up."""
    pytest_socket.enable_socket()
    with PiperServer() as server:
        yield server


@pytest.fixture(scope="session")
def whisper_server() -> Iterator[WhisperServer]:
    """wyoming-faster-whisper on 127.0.0.1, warmed up."""
    pytest_socket.enable_socket()
    with WhisperServer() as server:
        yield server


@pytest.fixture(scope="session")
def spoken_kitchen_command(piper_server: PiperServer) -> bytes:
    """SPOKEN_COMMAND said by piper: 16 kHz mono s16le, then 1 s of silence."""
    pytest_socket.enable_socket()  # piper may already be up: this runs after the guard too
    return spoken_command(piper_server, SPOKEN_COMMAND)


# --- the demo (a real Home Assistant with its frontend), once per run -----------------


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    """`scripts/demo` running on a free port, set up, its model warmed up."""
    pytest_socket.enable_socket()
    running = start_demo(tmp_path_factory.mktemp("demo"))
    try:
        running.process.wait_ready(running.warmed_up, WARM_UP_TIMEOUT_S, interval=1.0)
        yield running
    finally:
        running.process.stop()
