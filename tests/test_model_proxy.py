"""The benchmarks' model proxy (devtools/model_proxy.py), over real HTTP.

It counts what it forwards (the voice bench's "simple command, all stages" must make
no model request) and can type the tool parameters Home Assistant's llama_cpp agent
leaves untyped, which llama.cpp refuses (the scoreboard's reference agent).
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import openai
import pytest

from devtools.model_proxy import ModelProxy, Rewrite, typed_schema, typed_tool_schemas
from devtools.scripted_server import Reply, ScriptedServer, text

MUTE_TOOL = {
    "type": "function",
    "function": {
        "name": "HassMediaPlayerMute",
        "parameters": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "muted": {"description": "Whether the media player should be muted or unmuted"},
            },
            "required": ["muted"],
        },
    },
}


async def _chat_through(
    scripted: ScriptedServer, rewrite: Rewrite | None, **request: Any
) -> tuple[ModelProxy, str]:
    """One model list and one streamed completion through a proxy: the proxy, the reply."""
    async with aiohttp.ClientSession() as session:
        proxy = ModelProxy(scripted.url, session, rewrite=rewrite)
        await proxy.start()
        try:
            assert proxy.url.endswith("/v1")
            assert proxy.requests == []
            client = openai.AsyncOpenAI(base_url=proxy.url, api_key="k", max_retries=0)
            try:
                models = await client.models.list()
                stream = await client.chat.completions.create(
                    model=models.data[0].id,
                    messages=[{"role": "user", "content": "turn on the light"}],
                    stream=True,
                    **request,
                )
                pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            finally:
                await client.close()
        finally:
            await proxy.stop()
    return proxy, "".join(pieces)


async def test_the_proxy_forwards_a_streamed_completion_and_counts_it(
    scripted: ScriptedServer,
) -> None:
    """The model list and a streamed reply pass unchanged, both counted."""
    scripted.add(text("Turned ", "on ", "the ", "light."))
    proxy, reply = await _chat_through(scripted, None, tools=[MUTE_TOOL])
    assert reply == "Turned on the light."
    assert proxy.requests == ["GET /v1/models", "POST /v1/chat/completions"]
    assert proxy.rewritten == 0
    [request] = scripted.chat_requests
    assert request["messages"][0]["content"] == "turn on the light"
    assert request["tools"] == [MUTE_TOOL]


async def test_the_proxy_types_untyped_tool_parameters_on_the_way(
    scripted: ScriptedServer,
) -> None:
    """With `typed_tool_schemas`, the server gets `muted` as a string, the rest as sent."""
    scripted.add(text("Muted."))
    proxy, reply = await _chat_through(scripted, typed_tool_schemas, tools=[MUTE_TOOL])
    assert reply == "Muted."
    assert proxy.rewritten == 1
    [request] = scripted.chat_requests
    parameters = request["tools"][0]["function"]["parameters"]
    assert parameters["properties"]["muted"] == {
        "description": "Whether the media player should be muted or unmuted",
        "type": "string",
    }
    assert parameters["properties"]["name"] == {"type": "string"}
    assert parameters["required"] == ["muted"]


async def test_a_request_without_tools_is_forwarded_as_it_came(
    scripted: ScriptedServer,
) -> None:
    """Nothing to type: the body is not rewritten (nor counted as rewritten)."""
    scripted.add(text("Hello."))
    proxy, reply = await _chat_through(scripted, typed_tool_schemas)
    assert (reply, proxy.rewritten) == ("Hello.", 0)
    assert "tools" not in scripted.chat_requests[0]


def test_typed_schemas_leave_what_llama_cpp_understands() -> None:
    """Typed, combined, enumerated, referenced and nested schemas keep their meaning; an
    untyped property at any depth becomes a string; an empty one too."""
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "minimum": 0},
            "b": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "c": {"enum": ["on", "off"]},
            "d": {"$ref": "#/defs/x"},
            "e": {"type": "array", "items": {"description": "free"}},
            "f": {"type": "object", "properties": {"g": {"description": "deep"}}},
            "h": {},
        },
    }
    typed = typed_schema(schema)
    assert {key: typed["properties"][key] for key in "abcd"} == {
        key: schema["properties"][key] for key in "abcd"
    }
    assert typed["properties"]["e"] == {"type": "array", "items": {"description": "free"}}
    assert typed["properties"]["f"]["properties"]["g"] == {"description": "deep", "type": "string"}
    assert typed["properties"]["h"] == {"type": "string"}
    assert schema["properties"]["h"] == {}  # the original is not changed


def test_typed_tool_schemas_keep_everything_but_the_parameters() -> None:
    """Other tools, other keys and a body without tools come back equal."""
    odd = {"type": "function", "function": {"name": "NoParameters"}}
    body = {"model": "m", "stream": True, "tools": [MUTE_TOOL, odd, "not a tool"]}
    typed = typed_tool_schemas(body)
    assert typed["model"] == "m"
    assert typed["tools"][1:] == [odd, "not a tool"]
    assert typed["tools"][0]["function"]["name"] == "HassMediaPlayerMute"
    assert typed_tool_schemas({"model": "m"}) == {"model": "m"}


async def test_a_client_that_leaves_mid_stream_leaves_no_error(
    scripted: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A check that reads the start of an endless stream, then leaves: the proxy stops
    without an error in the log, and serves the next request."""
    scripted.add(Reply(deltas=[{"content": "a"}], forever=True, chunk_delay_s=0.01))
    scripted.add(text("Still here."))
    async with aiohttp.ClientSession() as session:
        proxy = ModelProxy(scripted.url, session)
        await proxy.start()
        try:
            body = {"model": "m", "messages": [], "stream": True}
            async with session.post(f"{proxy.url}/chat/completions", json=body) as response:
                assert (await response.content.readline()).startswith(b"data:")
            async with session.post(f"{proxy.url}/chat/completions", json=body) as response:
                assert b"Still here." in await response.read()
        finally:
            await proxy.stop()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
