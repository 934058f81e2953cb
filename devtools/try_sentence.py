"""`scripts/try "SENTENCE"`: one sentence through Majordome in a throwaway house.

Starts the embedded llama.cpp server and a real Home Assistant core with the demo
house, sets Majordome up through its own config flow, sends the sentence as the Assist
dialog would, and prints the reply as it streams, the tool calls, and the states that
changed. Everything is stopped and removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
import sys
import tempfile
import time
from typing import Any

from devtools.bench_common import async_configure_agent
from devtools.hass_runner import running_home_assistant
from devtools.house import async_setup_house
from devtools.llm import LocalLlmServer
from homeassistant.components import conversation
from homeassistant.const import EVENT_STATE_CHANGED
from homeassistant.core import Context, Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.helpers import chat_session

DIM, BOLD, RESET = "\033[2m", "\033[1m", "\033[0m"


async def async_configure_majordome(hass: HomeAssistant, url: str, model: str) -> str:
    """Create the Majordome entry through its config flow; return the entry id."""
    flow = await hass.config_entries.flow.async_init("majordome", context={"source": "user"})
    flow = await hass.config_entries.flow.async_configure(flow["flow_id"], {"url": url})
    if flow.get("step_id") != "model":
        raise RuntimeError(f"config flow stopped at {flow.get('step_id')}: {flow.get('errors')}")
    flow = await hass.config_entries.flow.async_configure(flow["flow_id"], {"model": model})
    entry_id = str(flow["result"].entry_id)
    await async_configure_agent(hass, entry_id, {"temperature": 0.0, "max_tokens": 128})
    return entry_id


async def async_try(sentence: str, language: str, llm: LocalLlmServer) -> int:
    """Run one turn and print what happened."""
    with tempfile.TemporaryDirectory(prefix="majordome-try-") as config_dir:
        async with running_home_assistant(Path(config_dir)) as hass:
            house = await async_setup_house(hass, "demo")
            entry_id = await async_configure_majordome(hass, llm.base_url, llm.model)
            print(f"{DIM}House: {len(house.exposed)} entities exposed in {len(house.areas)} areas")
            print(f"Model: {llm.model} at {llm.base_url}{RESET}\n")
            print(f"{BOLD}You:{RESET} {sentence}\n{BOLD}Majordome:{RESET} ", end="", flush=True)

            changes: list[str] = []

            @callback
            def on_state_changed(event: Event[EventStateChangedData]) -> None:
                old, new = event.data["old_state"], event.data["new_state"]
                if old and new and old.state != new.state and new.entity_id in house.exposed:
                    changes.append(f"{new.entity_id}: {old.state} -> {new.state}")

            def on_delta(chat_log: conversation.ChatLog, delta: dict[str, Any]) -> None:
                if delta.get("content"):
                    print(delta["content"], end="", flush=True)
                for call in delta.get("tool_calls") or []:
                    print(f"\n{DIM}  [tool] {call.tool_name}({call.tool_args}){RESET}", flush=True)
                if delta.get("role") == "tool_result":
                    result = str(delta.get("tool_result"))
                    print(f"{DIM}  [result] {result[:300]}{RESET}", flush=True)

            unsubscribe = hass.bus.async_listen(EVENT_STATE_CHANGED, on_state_changed)
            started = time.monotonic()
            # Opening the chat log first lets us listen to its deltas as they stream.
            with (
                chat_session.async_get_chat_session(hass) as session,
                conversation.async_get_chat_log(hass, session, chat_log_delta_listener=on_delta),
            ):
                result = await conversation.async_converse(
                    hass,
                    sentence,
                    session.conversation_id,
                    Context(),
                    language=language,
                    agent_id=entry_id,
                )
            await hass.async_block_till_done()
            unsubscribe()
            elapsed = time.monotonic() - started
            print(f"\n\n{BOLD}Reply:{RESET} {result.response.speech['plain']['speech']}")
            print(f"{BOLD}States changed:{RESET} {', '.join(changes) or 'none'}")
            print(
                f"{DIM}({elapsed:.1f} s, response type {result.response.response_type.value}){RESET}"
            )
            return 0


def main() -> int:
    """Parse the arguments and run one turn."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sentence", help='e.g. "turn on the kitchen light"')
    parser.add_argument("--language", default="en", help="en or fr (default en)")
    args = parser.parse_args()
    with LocalLlmServer() as llm:
        return asyncio.run(async_try(args.sentence, args.language, llm))


if __name__ == "__main__":
    sys.exit(main())
