"""A small client of a running Home Assistant's own APIs: REST and the websocket.

What the demo uses to set itself up as a user would (onboarding, config flows,
registries, pipelines), what `scripts/ask` talks to, and what the browser tests
check states with. aiohttp only (Home Assistant's own dependency).

    async with HomeAssistantApi(url, token) as api:
        state = await api.rest("GET", "/api/states/light.kitchen_light")
        async with api.websocket() as ws:
            await ws.call("config/area_registry/list")
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
import itertools
from types import TracebackType
from typing import Any, Self

import aiohttp

CALL_TIMEOUT_S = 60.0  # a config flow may probe a server (the LLM lists its models)


class ApiError(RuntimeError):
    """Home Assistant answered, but not with success."""


class HomeAssistantApi:
    """REST calls and websocket connections with one access token."""

    def __init__(self, url: str, token: str = "") -> None:
        """`url`: e.g. http://127.0.0.1:8123; `token` may be set later (onboarding)."""
        self.url = url.rstrip("/")
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_S))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session (inside `async with` only)."""
        assert self._session is not None, "use `async with HomeAssistantApi(...)`"
        return self._session

    async def rest(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        form: dict[str, str] | None = None,
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> Any:
        """Call a REST endpoint; return its JSON (None when empty); ApiError otherwise."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(
            method,
            self.url + path,
            json=json,
            data=form,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            body = await response.text()
            if response.status >= 400:
                raise ApiError(f"{method} {path}: HTTP {response.status}: {body[:500]}")
            return await response.json(content_type=None) if body else None

    @asynccontextmanager
    async def websocket(self) -> AsyncIterator[Websocket]:
        """An authenticated websocket connection to /api/websocket."""
        ws_url = self.url.replace("http", "ws", 1) + "/api/websocket"
        async with self.session.ws_connect(ws_url, max_msg_size=0) as socket:
            connection = Websocket(socket)
            await connection.authenticate(self.token)
            try:
                yield connection
            finally:
                connection.close()


class Websocket:
    """Home Assistant's websocket protocol: commands with ids, events by subscription."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        """Wrap a connected socket; authenticate() before anything else."""
        self._socket = socket
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._listeners: dict[int, Callable[[dict[str, Any]], None]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def authenticate(self, token: str) -> None:
        """Answer auth_required with the token; ApiError if refused."""
        await self._socket.receive_json()  # auth_required
        await self._socket.send_json({"type": "auth", "access_token": token})
        answer = await self._socket.receive_json()
        if answer.get("type") != "auth_ok":
            raise ApiError(f"websocket authentication failed: {answer}")
        self._reader = asyncio.create_task(self._read())

    async def closed(self) -> None:
        """Wait until the server closes the connection (Home Assistant stopped)."""
        if self._reader is not None:
            await asyncio.shield(self._reader)

    def close(self) -> None:
        """Stop reading (the socket itself closes with its context)."""
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self) -> None:
        async for message in self._socket:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data = message.json()
            for item in data if isinstance(data, list) else [data]:
                self._dispatch(item)
        error = ApiError("websocket closed")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)

    def _dispatch(self, item: dict[str, Any]) -> None:
        ident = item.get("id")
        if item.get("type") == "event" and ident in self._listeners:
            self._listeners[ident](item["event"])
        elif item.get("type") == "result" and ident in self._pending:
            future = self._pending.pop(ident)
            if future.done():
                return
            if item.get("success"):
                future.set_result(item.get("result"))
            else:
                future.set_exception(ApiError(f"{item.get('error')}"))

    async def call(
        self,
        kind: str,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        **data: Any,
    ) -> Any:
        """Send a command; return its result; ApiError when it fails.

        With `on_event`, the command subscribes (subscribe_events, assist_pipeline/run):
        its events reach `on_event` in the reader task, possibly before this returns.
        """
        ident = next(self._ids)
        if on_event is not None:
            self._listeners[ident] = on_event
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._socket.send_json({"id": ident, "type": kind, **data})
        async with asyncio.timeout(CALL_TIMEOUT_S):
            return await future
