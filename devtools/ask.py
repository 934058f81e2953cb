"""`scripts/ask "SENTENCE"`: one sentence to the running demo, through Home Assistant's API.

Runs the sentence through the demo's Assist pipeline (Majordome as the agent) over
Home Assistant's websocket, as the Assist dialog does: prints the reply as it streams,
the tool calls, the final answer, and the states of the house that changed.
`--language fr` uses the French pipeline. Exit code 0 when Majordome answered.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
import sys
from typing import Any

from devtools.demo import DEFAULT_DIR, Connection, describe_change, house_entity_ids
from devtools.ha_api import HomeAssistantApi

TURN_TIMEOUT_S = 300.0  # the embedded model on a busy CPU
SETTLE_S = 1.0  # state changes a tool call caused may land just after the answer
DIM, BOLD, RESET = ("\033[2m", "\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


class Turn:
    """What one pipeline run printed and gathered."""

    def __init__(self, watched: frozenset[str]) -> None:
        """Collect changes of the `watched` entities."""
        self.watched = watched
        self.changes: list[str] = []
        self.answer: str | None = None
        self.error: str | None = None
        self.conversation_id: str | None = None
        self.done = asyncio.Event()
        self._streamed = False

    def on_state(self, event: dict[str, Any]) -> None:
        """A state_changed event."""
        if line := describe_change(event, self.watched):
            self.changes.append(line)

    def on_pipeline(self, event: dict[str, Any]) -> None:
        """An assist_pipeline/run event."""
        kind, data = event.get("type"), event.get("data") or {}
        if kind == "intent-progress":
            delta = data.get("chat_log_delta") or {}
            if content := delta.get("content"):
                print(content, end="", flush=True)
                self._streamed = True
            for call in delta.get("tool_calls") or []:
                print(f"\n{DIM}  [tool] {call.get('tool_name')}({call.get('tool_args')}){RESET}")
        elif kind == "intent-end":
            output = data.get("intent_output") or {}
            speech = output.get("response", {}).get("speech", {}).get("plain", {})
            self.answer = str(speech.get("speech", ""))
            self.conversation_id = output.get("conversation_id")
        elif kind == "error":
            self.error = f"{data.get('code')}: {data.get('message')}"
            self.done.set()
        elif kind == "run-end":
            self.done.set()


async def async_ask(
    connection: Connection, sentence: str, language: str, conversation_id: str | None
) -> int:
    """Run one turn and print it; the exit code."""
    turn = Turn(house_entity_ids())
    pipeline = connection.pipeline_fr if language == "fr" else connection.pipeline_en
    print(f"{BOLD}You:{RESET} {sentence}\n{BOLD}Majordome:{RESET} ", end="", flush=True)
    async with HomeAssistantApi(connection.url, connection.token) as api, api.websocket() as ws:
        await ws.call("subscribe_events", event_type="state_changed", on_event=turn.on_state)
        await ws.call(
            "assist_pipeline/run",
            on_event=turn.on_pipeline,
            start_stage="intent",
            end_stage="intent",
            input={"text": sentence},
            pipeline=pipeline,
            conversation_id=conversation_id,
        )
        async with asyncio.timeout(TURN_TIMEOUT_S):
            await turn.done.wait()
        await asyncio.sleep(SETTLE_S)
    if turn.error is not None:
        print(f"\n{BOLD}Error:{RESET} {turn.error}")
        return 1
    print(f"\n\n{BOLD}Reply:{RESET} {turn.answer or '(nothing: the utterance was ignored)'}")
    print(f"{BOLD}States changed:{RESET} {', '.join(turn.changes) or 'none'}")
    print(f"{DIM}conversation id: {turn.conversation_id}{RESET}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, find the running demo, ask."""
    parser = argparse.ArgumentParser(prog="scripts/ask", description=__doc__.split("\n")[0])
    parser.add_argument("sentence", help='e.g. "turn on the kitchen light"')
    parser.add_argument("--language", choices=("en", "fr"), default="en")
    parser.add_argument("--conversation-id", help="continue a conversation (printed by a turn)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the demo's --dir")
    args = parser.parse_args(argv)
    try:
        connection = Connection.load(args.dir)
    except FileNotFoundError:
        print(
            "No demo is running: start it with scripts/demo (in another terminal).", file=sys.stderr
        )
        return 2
    try:
        return asyncio.run(
            async_ask(connection, args.sentence, args.language, args.conversation_id)
        )
    except (OSError, TimeoutError) as err:
        print(f"\nCannot talk to the demo at {connection.url}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
