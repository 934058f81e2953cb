"""The demo as the browser tests use it: started once, and a logged-in Chromium page.

The demo (devtools/demo.py) runs as a child process, exactly as `scripts/demo` runs it:
a real Home Assistant with its frontend, the embedded model and the Wyoming servers.
Chromium is Debian's (scripts/setup-browser installs it), driven by Playwright's
Python package; Playwright's own browser download cannot work here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import shutil
import sys
from typing import Any
from weakref import WeakKeyDictionary

from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    TimeoutError as PlaywrightTimeoutError,
    WebSocket,
    async_playwright,
)

from devtools.child_process import ChildProcess, python_module
from devtools.demo import CONNECTION_FILE, Connection
from devtools.ha_api import HomeAssistantApi
from devtools.hass_runner import REPO_ROOT

DEMO_READY_TIMEOUT_S = 900.0  # a first run installs nothing, but a cold CI machine is slow
WARM_UP_TIMEOUT_S = 600.0
ARTIFACTS = Path(os.environ.get("MAJORDOME_ARTIFACTS", REPO_ROOT / ".cache" / "test-artifacts"))
# As the machine's probe starts it: without the background-networking flags, Chromium
# keeps trying the (closed) network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Debian's chromium ($MAJORDOME_CHROMIUM to use another)."""
    path = os.environ.get("MAJORDOME_CHROMIUM") or shutil.which("chromium")
    if not path:
        raise RuntimeError("chromium is not installed: run scripts/setup-browser")
    return path


@dataclass
class RunningDemo:
    """A demo child process and how to reach it."""

    process: ChildProcess
    connection: Connection
    directory: Path
    log: list[str]

    def warmed_up(self) -> bool | None:
        """True once the demo's first model turn is over (None before)."""
        return (
            True
            if any("warmed up" in line or "warm-up failed" in line for line in self.log)
            else None
        )


def start_demo(directory: Path, launcher: Sequence[str] = ()) -> RunningDemo:
    """Run `python -m devtools.demo` on a free port; return once it is set up.

    `launcher`: a command prefix that execs the rest (the pid stays the demo's).
    """
    log: list[str] = []
    process = ChildProcess("demo", stop_grace=60.0, tail_lines=200)
    process.start(
        [
            *launcher,
            *python_module(sys.executable, "devtools.demo", "--port", "0", "--dir", str(directory)),
        ],
        cwd=REPO_ROOT,
        on_line=log.append,
    )
    connection_file = directory / CONNECTION_FILE
    try:
        process.wait_ready(
            lambda: Connection.load(directory) if connection_file.exists() else None,
            DEMO_READY_TIMEOUT_S,
            retry_on=(ValueError,),  # the file being written
            interval=0.5,
        )
    except BaseException:
        process.stop()
        raise
    return RunningDemo(process, Connection.load(directory), directory, log)


@asynccontextmanager
async def chromium(args: Sequence[str] = ()) -> AsyncIterator[Browser]:
    """A headless Debian Chromium (one per test: Playwright's objects live in its loop).

    An error inside names what failed in each of its pages' frontends.
    """
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=[*CHROMIUM_ARGS, *args]
        )
        try:
            yield browser
        except Exception as err:
            # A test that fails in the frontend says what failed there.
            for context in browser.contexts:
                for page in context.pages:
                    err.add_note(f"{page.url}: {frontend_failures(page)}")
            raise
        finally:
            await browser.close()


@dataclass
class FrontendFailures:
    """What failed in a page of the frontend: its console errors, its uncaught errors and
    the calls of its websocket that Home Assistant answered with an error."""

    console: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    _sent: dict[int, str] = field(default_factory=dict, repr=False)

    def watch(self, page: Page) -> None:
        """Note every failure of `page` from now on."""
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.console.append(f"uncaught: {error}"))
        page.on("websocket", self._on_websocket)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console.append(message.text)

    def _on_websocket(self, websocket: WebSocket) -> None:
        if websocket.url.endswith("/api/websocket"):
            websocket.on("framesent", self._on_sent)
            websocket.on("framereceived", self._on_received)

    def _on_sent(self, payload: str | bytes) -> None:
        for message in _messages(payload):
            if isinstance(message.get("id"), int):
                self._sent[message["id"]] = str(message.get("type"))

    def _on_received(self, payload: str | bytes) -> None:
        # Home Assistant coalesces messages into a JSON list once the frontend asks it to.
        for message in _messages(payload):
            if message.get("type") == "result" and message.get("success") is False:
                error = message.get("error") or {}
                call = self._sent.get(message.get("id"), f"call {message.get('id')}")
                if (call, error.get("code")) not in EXPECTED_ERROR_ANSWERS:
                    self.calls.append(f"{call}: {error.get('code')} {error.get('message')}")

    def __str__(self) -> str:
        if not (self.console or self.calls):
            return "the frontend reported no failure"
        return f"the frontend's failed calls: {self.calls}; its console errors: {self.console}"


def _messages(payload: str | bytes) -> list[dict[str, Any]]:
    """The JSON messages of a websocket frame (one, or a coalesced list)."""
    try:
        data = json.loads(payload)
    except ValueError:
        return []
    return [m for m in (data if isinstance(data, list) else [data]) if isinstance(m, dict)]


# Error answers the frontend asks for and handles: the demo runs no recorder, and its
# Overview is generated (no stored dashboard config).
EXPECTED_ERROR_ANSWERS = {
    ("recorder/info", "unknown_command"),
    ("lovelace/config", "config_not_found"),
}

_FAILURES: WeakKeyDictionary[Page, FrontendFailures] = WeakKeyDictionary()


def frontend_failures(page: Page) -> FrontendFailures:
    """What failed in a page async_login opened, since it opened."""
    return _FAILURES.setdefault(page, FrontendFailures())


async def async_login(browser: Browser, connection: Connection, path: str = "/") -> Page:
    """A page logged into the demo through Home Assistant's own login form.

    Its failures are noted from the start (frontend_failures).
    """
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    frontend_failures(page).watch(page)
    await page.goto(connection.url + path)
    await page.locator("input[name=username]").fill(connection.username)
    await page.locator("input[name=password]").fill(connection.password)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(lambda url: "/auth/" not in url, timeout=60_000)
    await async_frontend_loaded(page)
    return page


async def async_frontend_loaded(page: Page) -> None:
    """Wait until the frontend has left its "Loading…" screen for its main window.

    It stays on that screen when one of the calls it starts with fails (from 2026.10
    `get_services` fails when a component's module cannot be imported): say so, with
    the calls that failed, rather than let a test wait for a button that never comes.
    """
    try:
        await page.locator("home-assistant-main").wait_for(state="attached", timeout=60_000)
    except PlaywrightTimeoutError as err:
        await async_screenshot(page, "frontend-not-loaded")
        raise AssertionError(
            f"Home Assistant's frontend never loaded at {page.url} (screenshot:"
            f" frontend-not-loaded.png); {frontend_failures(page)}; more is in the demo's"
            " config/home-assistant.log"
        ) from err


async def async_screenshot(page: Page, name: str) -> Path:
    """Save a screenshot under ARTIFACTS (Playwright makes the folder); return its path."""
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path))
    return path


async def async_state(connection: Connection, entity_id: str) -> str:
    """An entity's state, through the REST API."""
    async with HomeAssistantApi(connection.url, connection.token) as api:
        return str((await api.rest("GET", f"/api/states/{entity_id}"))["state"])


async def async_set_state(connection: Connection, entity_id: str, on: bool) -> None:
    """Turn an entity on or off through the REST API (a test's starting point)."""
    domain = entity_id.split(".", maxsplit=1)[0]
    async with HomeAssistantApi(connection.url, connection.token) as api:
        await api.rest(
            "POST",
            f"/api/services/{domain}/turn_{'on' if on else 'off'}",
            {"entity_id": entity_id},
        )
