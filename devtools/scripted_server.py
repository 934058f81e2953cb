"""A scripted OpenAI-compatible server on 127.0.0.1, for tests and benchmarks.

Tests program it reply by reply (text streamed in pieces, tool calls whose arguments
are split across chunks, parallel calls, HTTP errors, broken, slow or endless streams,
huge replies, malformed chunks, text that is not UTF-8) and read back every request it
received. Benchmarks may answer from the request instead (`responder`), and make it hang
up without answering. The real `openai` client talks real HTTP to it, so the client's parsing and
error handling are exercised as in production.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
import itertools
import json
import time
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    """One programmed answer to a chat-completions request."""

    deltas: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "stop"
    status: int = 200
    error_message: str = ""
    headers_delay_s: float = 0.0  # before the response starts
    chunk_delay_s: float = 0.0  # between chunks
    break_after: int | None = None  # drop the connection after this many chunks
    raw_lines: list[str | bytes] | None = None  # send these SSE lines verbatim instead
    timings: dict[str, Any] | None = None  # llama.cpp-style, on the last chunk
    forever: bool = False  # repeat the deltas without end, until the client leaves
    encoding: str = "utf-8"  # of the streamed lines; another one sends its bytes raw
    hang_up: bool = False  # close the connection at once, without an HTTP answer
    hold: asyncio.Event | None = None  # answer only once the test sets it
    resume: asyncio.Event | None = None  # with pause_after: go on only once the test sets it
    pause_after: int = 0  # deltas streamed before waiting for `resume`


def text(*pieces: str, chunk_delay_s: float = 0.0) -> Reply:
    """A streamed text answer, one chunk per piece."""
    return Reply(deltas=[{"content": piece} for piece in pieces], chunk_delay_s=chunk_delay_s)


def tool_calls(*calls: tuple[str, dict[str, Any] | str], pieces: int = 3) -> Reply:
    """Tool calls in one message, each call's arguments split over `pieces` chunks."""
    deltas: list[dict[str, Any]] = []
    for index, (name, arguments) in enumerate(calls):
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        deltas.append(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": f"call_{index}_{name}",
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                ]
            }
        )
        size = max(1, -(-len(raw) // pieces))
        deltas.extend(
            {"tool_calls": [{"index": index, "function": {"arguments": raw[i : i + size]}}]}
            for i in range(0, len(raw), size)
        )
    return Reply(deltas=deltas, finish_reason="tool_calls")


def endless(*pieces: str, chunk_delay_s: float = 0.0) -> Reply:
    """A streamed text that never ends: the pieces, over and over."""
    return Reply(
        deltas=[{"content": piece} for piece in pieces], chunk_delay_s=chunk_delay_s, forever=True
    )


def huge(total_bytes: int, piece_bytes: int = 64 * 1024) -> Reply:
    """A streamed text of about `total_bytes`, in pieces of `piece_bytes`."""
    piece = "x" * piece_bytes
    return Reply(deltas=[{"content": piece}] * max(1, total_bytes // piece_bytes))


def not_utf8(*pieces: str, encoding: str = "latin-1") -> Reply:
    """A streamed text sent in another encoding than UTF-8: "café" in Latin-1, say."""
    return Reply(deltas=[{"content": piece} for piece in pieces], encoding=encoding)


def error(status: int, message: str = "scripted error") -> Reply:
    """An HTTP error with an OpenAI-style JSON body."""
    return Reply(status=status, error_message=message)


@dataclass
class Request:
    """A request the server received."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    received: float
    query: dict[str, str] = field(default_factory=dict)


class ScriptedServer:
    """An aiohttp server on an ephemeral loopback port, answering from a queue."""

    def __init__(
        self, models: Iterable[str] = ("scripted-model",), api_key: str | None = None
    ) -> None:
        """Prepare the routes; `api_key`, when set, is required as a bearer token."""
        self.models = list(models)
        self.api_key = api_key
        self.replies: deque[Reply] = deque()
        # Non-streamed calls (checks, summaries) may run beside a turn, in any order:
        # they take their replies from a queue of their own when it has any.
        self.side_replies: deque[Reply] = deque()
        self.requests: list[Request] = []
        # Bytes each streamed reply sent, noted when it ended (or its client left).
        self.streamed_bytes: list[int] = []
        self.models_status = 200
        # When the queue is empty: a reply made from the request's body (None: a 500).
        self.responder: Callable[[dict[str, Any]], Reply] | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._chat_seen = asyncio.Condition()
        self._stream_ended = asyncio.Condition()

    @property
    def url(self) -> str:
        """The base URL to configure, as for any OpenAI-compatible server."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """Bodies of the chat-completions requests, in order."""
        return [r.body for r in self.requests if r.path.endswith("/chat/completions")]

    def add(self, *replies: Reply) -> None:
        """Queue replies, answered in order."""
        self.replies.extend(replies)

    async def wait_for_chat_requests(self, count: int, timeout_s: float = 10.0) -> None:
        """Return once `count` chat-completions requests arrived (TimeoutError after)."""
        async with asyncio.timeout(timeout_s), self._chat_seen:
            await self._chat_seen.wait_for(lambda: len(self.chat_requests) >= count)

    async def wait_for_streams_ended(self, count: int, timeout_s: float = 10.0) -> None:
        """Return once `count` streamed replies ended or lost their client (TimeoutError after)."""
        async with asyncio.timeout(timeout_s), self._stream_ended:
            await self._stream_ended.wait_for(lambda: len(self.streamed_bytes) >= count)

    def add_side(self, *replies: Reply) -> None:
        """Queue replies for non-streamed requests, answered in order."""
        self.side_replies.extend(replies)

    async def start(self, port: int = 0) -> None:
        """Listen on 127.0.0.1, on `port` (0: a port the system picks)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error_response(401, "Incorrect API key provided")
        return None

    async def _models(self, request: web.Request) -> web.Response:
        self.requests.append(_received(request, {}))
        if (denied := self._unauthorized(request)) is not None:
            return denied
        if self.models_status != 200:
            return _error_response(self.models_status, "models unavailable")
        return web.json_response(
            {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(_received(request, body))
        async with self._chat_seen:
            self._chat_seen.notify_all()
        if (denied := self._unauthorized(request)) is not None:
            return denied
        queue = self.side_replies if not body.get("stream") and self.side_replies else self.replies
        if queue:
            reply = queue.popleft()
        elif self.responder is not None:
            reply = self.responder(body)
        else:
            return _error_response(500, "the scripted server has no reply left")
        if reply.hang_up:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if reply.hold is not None:
            await reply.hold.wait()
        if reply.headers_delay_s:
            await asyncio.sleep(reply.headers_delay_s)
        if reply.status != 200:
            return _error_response(reply.status, reply.error_message)

        if not body.get("stream"):
            return web.json_response(_completion(reply, body))

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sent = [0]
        try:
            await self._stream(request, response, reply, body, sent)
        finally:
            self.streamed_bytes.append(sent[0])
            async with self._stream_ended:
                self._stream_ended.notify_all()
        return response

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        reply: Reply,
        body: dict[str, Any],
        sent: list[int],
    ) -> None:
        """Write the reply's lines (counting their bytes in `sent`), as programmed."""
        lines = reply.raw_lines if reply.raw_lines is not None else _sse_lines(reply, body)
        for count, line in enumerate(lines):
            if reply.break_after is not None and count >= reply.break_after:
                # Drop the connection mid-body, as a crashing server would.
                assert request.transport is not None
                request.transport.close()
                return
            if count and reply.chunk_delay_s:
                await asyncio.sleep(reply.chunk_delay_s)
            if reply.resume is not None and count == reply.pause_after + 1:  # (0: the role)
                await reply.resume.wait()
            data = line if isinstance(line, bytes) else line.encode(reply.encoding)
            try:
                await response.write(data)
            except ConnectionResetError:  # the client left (a cancelled turn): so do we
                return
            sent[0] += len(data)
        await response.write_eof()


def _received(request: web.Request, body: dict[str, Any]) -> Request:
    return Request(request.path, body, dict(request.headers), time.monotonic(), dict(request.query))


def _sse_lines(reply: Reply, body: dict[str, Any]) -> Iterator[str]:
    """Render a reply as server-sent events, as OpenAI and llama.cpp stream them."""
    # Raw, in another encoding than UTF-8: "é" as its bytes there, not as \u00e9.
    ascii_only = reply.encoding == "utf-8"

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        payload = {
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": body.get("model", "scripted-model"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(payload, ensure_ascii=ascii_only)}\n\n"

    yield chunk({"role": "assistant", "content": None})
    if reply.forever:
        yield from (chunk(delta) for delta in itertools.cycle(reply.deltas))
    yield from (chunk(delta) for delta in reply.deltas)
    extra = {"timings": reply.timings} if reply.timings else {}
    yield chunk({}, reply.finish_reason, **extra)
    yield "data: [DONE]\n\n"


def _completion(reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
    """Render a reply as one non-streamed completion (checks, summaries)."""
    content = "".join(delta.get("content") or "" for delta in reply.deltas)
    calls: dict[int, dict[str, Any]] = {}
    for delta in reply.deltas:
        for piece in delta.get("tool_calls", []):
            call = calls.setdefault(
                piece["index"],
                {
                    "id": piece.get("id"),
                    "type": "function",
                    "function": {"name": "", "arguments": ""},
                },
            )
            call["function"]["name"] += piece.get("function", {}).get("name") or ""
            call["function"]["arguments"] += piece.get("function", {}).get("arguments") or ""
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "scripted-model"),
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
    }


def _error_response(status: int, message: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "scripted_error", "code": status}}, status=status
    )
