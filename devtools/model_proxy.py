"""A reverse proxy on loopback in front of a model server, for the benchmarks.

It counts what it forwards (a bench that must make no model request checks it) and
may rewrite the JSON body of a request on its way (`rewrite`): the scoreboard uses
`typed_tool_schemas` to let Home Assistant's own llama_cpp agent talk to a llama.cpp
server that refuses its untyped tool parameters.
"""

from __future__ import annotations

from collections.abc import Callable
import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

FORWARDED_HEADERS = frozenset({"Authorization", "Content-Type"})
DEFAULT_TIMEOUT_S = 600.0  # one request on the embedded model (2 CPU cores)
# What makes a JSON schema typed for llama.cpp's grammar conversion.
TYPED_KEYS = frozenset(
    {"type", "anyOf", "oneOf", "allOf", "enum", "const", "$ref", "properties", "items"}
)

Rewrite = Callable[[dict[str, Any]], dict[str, Any]]


class ModelProxy:
    """A reverse proxy to a model server, on a free port of 127.0.0.1.

    `url` is the upstream's URL through the proxy (same path); `requests` lists
    "METHOD /path" in order; `rewritten` counts the bodies `rewrite` changed.
    """

    def __init__(
        self,
        upstream: str,
        session: aiohttp.ClientSession,
        *,
        rewrite: Rewrite | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Proxy to `upstream` (a base URL) with `session`."""
        parsed = urlsplit(upstream)
        self._upstream = f"{parsed.scheme}://{parsed.netloc}"
        self._base_path = parsed.path.rstrip("/")
        self._session = session
        self._rewrite = rewrite
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.requests: list[str] = []
        self.rewritten = 0

    async def start(self) -> None:
        """Serve on a free port of 127.0.0.1."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}{self._base_path}"

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _body(self, data: bytes) -> bytes:
        if self._rewrite is None or not data:
            return data
        try:
            body = json.loads(data)
        except ValueError:
            return data
        if not isinstance(body, dict):
            return data
        rewritten = self._rewrite(body)
        if rewritten == body:
            return data
        self.rewritten += 1
        return json.dumps(rewritten).encode()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED_HEADERS}
        async with self._session.request(
            request.method,
            self._upstream + request.path_qs,
            data=self._body(await request.read()),
            headers=headers,
            timeout=self._timeout,
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k in FORWARDED_HEADERS},
            )
            await response.prepare(request)
            try:
                async for data in upstream.content.iter_any():
                    await response.write(data)
                await response.write_eof()
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                pass  # the client left before the end (a check that read the start only)
            return response


def typed_schema(schema: Any) -> Any:
    """A JSON schema where every property without a type is a string.

    llama.cpp refuses a schema it cannot turn into a grammar, such as a property with
    only a description (`{"description": "Whether ... muted"}`); a string is what
    Majordome sends for a parameter its tool schema leaves untyped.
    """
    if isinstance(schema, list):
        return [typed_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    fixed = {key: typed_schema(value) for key, value in schema.items()}
    properties = fixed.get("properties")
    if isinstance(properties, dict):
        fixed["properties"] = {
            name: (
                {**prop, "type": "string"}
                if isinstance(prop, dict) and not TYPED_KEYS.intersection(prop)
                else prop
            )
            for name, prop in properties.items()
        }
    return fixed


def typed_tool_schemas(body: dict[str, Any]) -> dict[str, Any]:
    """A chat request whose tools' parameters are typed (see `typed_schema`)."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return body
    fixed = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and "parameters" in function:
            typed = {**function, "parameters": typed_schema(function["parameters"])}
            fixed.append({**tool, "function": typed})
        else:
            fixed.append(tool)
    return {**body, "tools": fixed}
