"""Short, non-streamed completions (the addressee check, memory summaries) on a real client.

Their replies are held to the same size as a turn's, and their text, which memory may
store, is always encodable.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import httpx
import openai
import pytest

from custom_components.majordome.backend import (
    MAX_REPLY_BYTES,
    BackendError,
    ErrorKind,
    async_side_completion,
    create_client,
)
from devtools.scripted_server import ScriptedServer, huge, text

from .helpers import MODEL


@pytest.fixture
async def client(scripted: ScriptedServer) -> AsyncGenerator[openai.AsyncOpenAI]:
    """The client Majordome makes, on an httpx client as Home Assistant shares one."""
    async with httpx.AsyncClient() as http_client:
        yield create_client(scripted.url, None, http_client, 5.0)


async def summary(client: openai.AsyncOpenAI) -> str:
    return await async_side_completion(
        client,
        model=MODEL,
        messages=[{"role": "user", "content": "Sum up what we talked about."}],
        tools=None,
        max_tokens=100,
        time_limit=20.0,
    )


async def test_a_huge_reply_is_cut(scripted: ScriptedServer, client: openai.AsyncOpenAI) -> None:
    scripted.add_side(huge(10_000_000))
    with pytest.raises(BackendError) as caught:
        await summary(client)
    assert caught.value.kind is ErrorKind.BROKEN_STREAM
    assert caught.value.detail == f"the reply passed {MAX_REPLY_BYTES} bytes: cut there"


async def test_the_text_is_storable(scripted: ScriptedServer, client: openai.AsyncOpenAI) -> None:
    """A lone half of an emoji (the token limit cut it) would make memory unsavable."""
    scripted.add_side(text("Planning a trip \ud83c", "\udf89 to Lyon \ud83c"))
    assert await summary(client) == "Planning a trip 🎉 to Lyon"
