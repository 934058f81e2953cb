"""Majordome on a Home Assistant release the test plugin does not pin yet: loads and answers.

    scripts/newest ha2026.11 python -m devtools.check_release

A real Home Assistant core (whatever release this venv has) with the demo house; a
Majordome entry made through its own config flow, on a scripted OpenAI-compatible server
on loopback; one turn through `conversation.async_converse` that turns on the kitchen
light, answered by Home Assistant's own sentences (the local stage) without the model, a
second one asking the model the time, a third cancelled halfway, a fourth the server
fails, and a fifth.
Checks that the light changed, that the answers came back, that the history sent after
the cancelled turn is well formed, and that Home Assistant logged no deprecation, warning
or error about Majordome. The last line is JSON; exit 1 on
any failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
import sys
import tempfile
from typing import Any

from custom_components.majordome import compat, prompt
from custom_components.majordome.const import DOMAIN
from devtools.hass_runner import running_home_assistant
from devtools.house import async_setup_house
from devtools.scripted_server import Reply, ScriptedServer, text, tool_calls
from homeassistant.components import conversation
from homeassistant.const import __version__ as HA_VERSION
from homeassistant.core import Context, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType

KITCHEN = "light.kitchen_light"
MODEL = "scripted-model"


# What Home Assistant says of every custom integration it loads: not about Majordome's code.
_CUSTOM_NOTICE = "We found a custom integration majordome which has not been tested"
# Majordome's own note of the turn this check makes fail on purpose.
_EXPECTED_FAILURE = "Turn failed (server_error)"


class _Collect(logging.Handler):
    """Every warning or error that names Majordome, from any logger (deprecations included)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        expected = message.startswith(_EXPECTED_FAILURE) or _CUSTOM_NOTICE in message
        if (DOMAIN in record.name or DOMAIN in message.lower()) and not expected:
            self.records.append(f"{record.levelname} {record.name}: {message}")


async def _async_make_entry(hass: HomeAssistant, server: ScriptedServer) -> str:
    """Add Majordome as a user does: its config flow, server then model."""
    flow = await hass.config_entries.flow.async_init(DOMAIN, context={"source": "user"})
    flow = await hass.config_entries.flow.async_configure(flow["flow_id"], {"url": server.url})
    if flow["type"] is FlowResultType.FORM:
        flow = await hass.config_entries.flow.async_configure(flow["flow_id"], {"model": MODEL})
    if flow["type"] is not FlowResultType.CREATE_ENTRY:
        raise RuntimeError(f"the config flow did not create an entry: {flow}")
    await hass.async_block_till_done()
    return str(flow["result"].entry_id)


async def _async_check(config_dir: Path) -> dict[str, Any]:
    collected = _Collect()
    logging.getLogger().addHandler(collected)
    server = ScriptedServer(models=[MODEL])
    await server.start()
    try:
        async with running_home_assistant(config_dir) as hass:
            await async_setup_house(hass, "demo")
            entry_id = await _async_make_entry(hass, server)
            context = Context()
            # Home Assistant's own sentences answer this one, before any model call.
            action = await conversation.async_converse(
                hass, "turn on the kitchen light", None, context, "en", entry_id
            )
            local_requests = len(server.chat_requests)
            server.add(tool_calls(("GetDateTime", {})), text("It is late."))
            question = await conversation.async_converse(
                hass,
                "is there time for a coffee before noon?",
                action.conversation_id,
                context,
                "en",
                entry_id,
            )
            # A turn cancelled while the model writes, after its tool ran (a satellite gone):
            # Home Assistant 2026.11 keeps it in a live chat log; the next request must
            # still be well formed.
            server.add(
                tool_calls(("remember", {"fact": "The cat is Miso"})),
                text("Noted", " and", " kept", chunk_delay_s=5.0),
            )
            cancelled = asyncio.create_task(
                conversation.async_converse(
                    hass,
                    "remember the cat is Miso",
                    action.conversation_id,
                    context,
                    "en",
                    entry_id,
                )
            )
            await server.wait_for_chat_requests(4)
            cancelled.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cancelled
            # A turn that fails before any output (the server answers 500): the user
            # hears an apology, which a live chat log keeps instead of its own
            # "(no response)"; neither that note nor the cancelled turn's error is
            # sent to the model next time.
            server.add(Reply(status=500, error_message="model crashed"))
            failed = await conversation.async_converse(
                hass, "and the porch?", action.conversation_id, context, "en", entry_id
            )
            server.add(text("Still here."))
            after = await conversation.async_converse(
                hass, "are you there?", action.conversation_id, context, "en", entry_id
            )
            history = server.chat_requests[-1]["messages"][1:]
            tools = [tool["function"]["name"] for tool in server.chat_requests[0]["tools"]]
            light = hass.states.get(KITCHEN)
            result = {
                "ha_version": HA_VERSION,
                "light_on": light is not None and light.state == "on",
                "answers": [
                    result.response.speech["plain"]["speech"]
                    for result in (action, question, after)
                ],
                "model_requests_of_the_local_turn": local_requests,
                "failed_answer": failed.response.speech["plain"]["speech"],
                "history_after_cancel": [m["role"] for m in history],
                "history_well_formed": prompt.well_formed(history) == history
                and "Noted" not in json.dumps(history),
                "history_without_notes": not any(
                    m["content"] in compat.TURN_NOTES for m in history
                ),
                "tools": tools,
                "majordome_log": collected.records,
            }
    finally:
        await server.stop()
        logging.getLogger().removeHandler(collected)
    result["ok"] = (
        result["light_on"]
        and result["model_requests_of_the_local_turn"] == 0
        and result["answers"][0] != ""
        and result["answers"][1:] == ["It is late.", "Still here."]
        and result["failed_answer"] not in ("", "(no response)")
        and result["history_well_formed"]
        and result["history_without_notes"]
        and not result["majordome_log"]
        and len(server.chat_requests) == 6
    )
    return result


def main() -> int:
    """Run the check in a throwaway config dir; print the result as JSON."""
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="majordome-release-") as tmp:
        result = asyncio.run(_async_check(Path(tmp)))
    print(json.dumps({"check": "release", **result}))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
