"""The streaming voice endpoint: speech in, the reply spoken sentence by sentence.

A websocket on Home Assistant's HTTP server, authenticated like /api/websocket
(an Authorization header, or an `auth` message with an access token first, since
a browser's WebSocket cannot send headers). One connection is one conversation.

Client -> server (JSON text frames, and binary frames of 16 kHz mono s16le PCM):
    {"type": "auth", "access_token": "..."}       first, unless a header authenticated
    {"type": "start", "language": "en"}           a new utterance (interrupts the reply)
    <binary PCM>...                               its audio, streamed to the STT server
    {"type": "end"}                               end of speech: transcribe and answer
    {"type": "text", "text": "...", "language": "en"}   a typed utterance
    {"type": "stop"}                              stop speaking
    Any message may carry "entry_id" (the Majordome server entry: its household's speech
    servers, and its oldest agent answers), "agent_id" (another agent to answer: a
    conversation entity id), and "conversation_id".
Server -> client:
    auth_required, auth_ok, auth_invalid; ready {"entry_id", "stt": bool, "tts": bool}
    transcript {"text"}; ignored {"text"} (screened out or empty: the turn ends there)
    reply_delta {"text"} as the model writes; sentence {"index", "text"} sent to TTS
    audio_start {"index", "rate", "width", "channels"}, then per chunk level {"value"}
    followed by one binary frame of PCM; audio_end {"index"}
    reply_end {"text", "conversation_id", "continue_conversation", "timings"}
    interrupted; stopped; error {"code", "message"}

A conversation has one turn at a time: after a barge-in, the new turn starts when the
interrupted one (which still runs to its end, so the history stays whole) has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import contextlib
import json
import re
import time
from typing import Any

from aiohttp import WSMsgType, web

from homeassistant.auth.models import User
from homeassistant.components import conversation
from homeassistant.components.http.const import KEY_HASS_USER
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.http import KEY_AUTHENTICATED, KEY_HASS, HomeAssistantView

from .. import compat
from ..const import CONF_STT_SERVER, CONF_TTS_SERVER, CONF_TTS_VOICE, DOMAIN, LOGGER, VOICE_URL
from ..entity import async_spoken_message
from ..models import SPOKEN_INPUT, MajordomeConfigEntry, default_agent
from .sentences import SentenceSplitter
from .speaker import Speaker
from .wyoming_client import ServerAddress, SpeechError, Transcription

AUTH_TIMEOUT = 10.0
# How long a conversation busy with another client's turn is retried before giving up.
BUSY_WAIT_S = 5.0
BUSY_RETRY_S = 0.2
MAX_MESSAGE_BYTES = 1 << 20  # one frame of audio or text; a 100 kB message is fine
# Said alone, these stop the reply being spoken and are not sent to the model.
STOP_WORDS = frozenset(
    {
        "stop",
        "stop it",
        "stop talking",
        "be quiet",
        "quiet",
        "shut up",
        "enough",
        "cancel",
        "arrête",
        "arrete",
        "arrête-toi",
        "tais-toi",
        "silence",
        "ça suffit",
        "stop merci",
    }
)


def is_stop_word(text: str) -> bool:
    """Whether an utterance only asks to stop talking."""
    words = re.sub(r"[^\w\s'-]", " ", text.casefold()).split()
    return " ".join(words) in STOP_WORDS


class VoiceView(HomeAssistantView):
    """GET upgrades to the voice websocket."""

    url = VOICE_URL
    name = "api:majordome:voice"
    requires_auth = False  # checked in-band, as Home Assistant's own websocket does

    async def get(self, request: web.Request) -> web.WebSocketResponse:
        """Serve one voice connection until the client leaves."""
        hass = request.app[KEY_HASS]
        socket = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_MESSAGE_BYTES)
        await socket.prepare(request)
        user = request.get(KEY_HASS_USER) if request.get(KEY_AUTHENTICATED) else None
        connection = VoiceConnection(hass, socket, request.query.get("entry_id"))
        await connection.async_run(user)
        return socket


class VoiceConnection:
    """One client: its utterances, the reply being spoken, and everything sent back."""

    def __init__(self, hass: HomeAssistant, socket: web.WebSocketResponse, entry_id: str | None):
        """Nothing runs before async_run()."""
        self.hass = hass
        self._socket = socket
        self._entry_id = entry_id
        self._agent_id: str | None = None  # None: the entry's default agent
        self._user: User | None = None
        self._conversation_id: str | None = None
        # Everything sent goes through one queue, tagged with the reply it belongs
        # to: after a barge-in, what the old reply had queued is dropped.
        self._outbox: asyncio.Queue[tuple[int, str | bytes | None]] = asyncio.Queue()
        self._generation = 0
        self._utterance: Transcription | None = None
        self._utterance_language: str | None = None
        self._reply: asyncio.Task[None] | None = None
        # The last turn started: it may outlive its reply (a barge-in), never the next turn.
        self._turn: asyncio.Future[conversation.ConversationResult] | None = None

    # --- Connection -----------------------------------------------------------------

    async def async_run(self, user: User | None) -> None:
        """Authenticate, then read messages until the client closes."""
        writer = asyncio.create_task(self._async_write(), name="majordome voice writer")
        try:
            self._user = user or await self._async_authenticate()
            if self._user is None:
                return
            self._send({"type": "ready", **self._describe()})
            async for message in self._socket:
                if message.type is WSMsgType.BINARY:
                    await self._async_audio(message.data)
                elif message.type is WSMsgType.TEXT:
                    await self._async_command(message.data)
                else:
                    break
        finally:
            self._interrupt(notify=False)
            if self._utterance is not None:
                await self._utterance.close()
            self._outbox.put_nowait((self._generation, None))  # the writer ends there
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(writer, 5)
            await _async_close(self._socket)

    async def _async_authenticate(self) -> User | None:
        await self._socket.send_json({"type": "auth_required"})
        try:
            async with asyncio.timeout(AUTH_TIMEOUT):
                message = await self._socket.receive_json()
            token = message.get("access_token", "") if message.get("type") == "auth" else ""
        except (TimeoutError, TypeError, ValueError, AttributeError):
            token = ""
        refresh_token = self.hass.auth.async_validate_access_token(str(token)) if token else None
        if refresh_token is None or not refresh_token.user.is_active:
            await self._socket.send_json({"type": "auth_invalid"})
            return None
        await self._socket.send_json({"type": "auth_ok"})
        return refresh_token.user

    async def _async_write(self) -> None:
        while True:
            generation, item = await self._outbox.get()
            if item is None:
                return
            if generation != self._generation or self._socket.closed:
                continue
            try:
                if isinstance(item, bytes):
                    await self._socket.send_bytes(item)
                else:
                    await self._socket.send_str(item)
            except ConnectionError:
                return

    def _send(self, message: dict[str, Any], generation: int | None = None) -> None:
        self._outbox.put_nowait(
            (self._generation if generation is None else generation, json.dumps(message))
        )

    def _send_error(self, code: str, message: str) -> None:
        self._send({"type": "error", "code": code, "message": message})

    # --- Which agent, which servers ------------------------------------------------

    def _entry(self) -> MajordomeConfigEntry | None:
        entries: list[MajordomeConfigEntry] = [
            entry
            for entry in self.hass.config_entries.async_entries(DOMAIN)
            if entry.state is ConfigEntryState.LOADED
        ]
        if self._entry_id is not None:
            return next((e for e in entries if e.entry_id == self._entry_id), None)
        # Without a name, the agent that has voice set up, else the first one.
        return next(
            (e for e in entries if self._address(e, CONF_STT_SERVER) is not None), None
        ) or next(iter(entries), None)

    def _describe(self) -> dict[str, Any]:
        entry = self._entry()
        return {
            "entry_id": entry.entry_id if entry else None,
            "stt": entry is not None and self._address(entry, CONF_STT_SERVER) is not None,
            "tts": entry is not None and self._address(entry, CONF_TTS_SERVER) is not None,
        }

    def _agent(self, entry: MajordomeConfigEntry | None) -> str | None:
        """The agent that answers: the one named, else the entry's default agent."""
        if self._agent_id is not None:
            return self._agent_id
        if entry is None or (agent := default_agent(entry)) is None:
            return None
        return er.async_get(self.hass).async_get_entity_id(
            conversation.DOMAIN, DOMAIN, agent.subentry_id
        )

    @staticmethod
    def _address(entry: MajordomeConfigEntry, key: str) -> ServerAddress | None:
        """The server the options name; None when none (or not host:port) is set."""
        value = str(entry.options.get(key) or "").strip()
        if not value:
            return None
        try:
            return ServerAddress.parse(value)
        except ValueError:
            LOGGER.warning("Ignoring the %s option %r: it is not host:port", key, value)
            return None

    # --- Messages ------------------------------------------------------------------

    async def _async_command(self, raw: str) -> None:
        try:
            message = json.loads(raw)
            kind = message["type"]
        except (ValueError, TypeError, KeyError):
            self._send_error("invalid_message", "Expected a JSON object with a type.")
            return
        if "entry_id" in message:
            self._entry_id = message["entry_id"]
        if "agent_id" in message:
            self._agent_id = message["agent_id"]
        if "conversation_id" in message:
            self._conversation_id = message["conversation_id"]
        if kind == "start":
            await self._async_start_utterance(message.get("language"))
        elif kind == "end":
            self._end_utterance()
        elif kind == "text" and isinstance(message.get("text"), str):
            self._interrupt()
            self._begin_reply(self._async_reply(message["text"], message.get("language")))
        elif kind == "stop":
            self._interrupt()
            self._send({"type": "stopped"})
        else:
            self._send_error("invalid_message", f"Unknown message: {kind}")

    async def _async_start_utterance(self, language: str | None) -> None:
        """Barge-in: a new utterance silences the reply being spoken."""
        self._interrupt()
        if self._utterance is not None:
            await self._utterance.close()
            self._utterance = None
        entry = self._entry()
        address = self._address(entry, CONF_STT_SERVER) if entry else None
        if entry is None or address is None:
            self._send_error("stt_not_configured", "No speech-to-text server is set up.")
            return
        utterance = Transcription(address, language or self.hass.config.language)
        try:
            await utterance.start()
        except SpeechError as err:
            await self._async_speech_failed(err, language)
            return
        self._utterance, self._utterance_language = utterance, language

    async def _async_audio(self, pcm: bytes) -> None:
        if self._utterance is None:
            return  # audio outside an utterance (after an error, or before start)
        try:
            await self._utterance.send(pcm)
        except SpeechError as err:
            await self._utterance.close()
            self._utterance = None
            await self._async_speech_failed(err, self._utterance_language)

    def _end_utterance(self) -> None:
        if self._utterance is None:
            return
        utterance, self._utterance = self._utterance, None
        self._begin_reply(self._async_reply(utterance, self._utterance_language))

    async def _async_speech_failed(self, err: SpeechError, language: str | None) -> None:
        LOGGER.warning("Speech-to-text failed: %s", err)
        message = await async_spoken_message(
            self.hass, language or self.hass.config.language, err.kind
        )
        self._send_error(err.kind, message)

    # --- Replies -------------------------------------------------------------------

    def _begin_reply(self, job: Any) -> None:
        self._reply = asyncio.create_task(job, name="majordome voice reply")

    def _interrupt(self, *, notify: bool = True) -> None:
        """Stop the reply being spoken; the turn itself still ends and is stored."""
        if self._reply is None or self._reply.done():
            return
        self._reply.cancel()
        self._generation += 1
        if notify:
            self._send({"type": "interrupted"})

    async def _async_reply(self, said: Transcription | str, language: str | None) -> None:
        ended = time.monotonic()  # end of speech: every timing counts from here
        language = language or self.hass.config.language
        entry = self._entry()
        if isinstance(said, Transcription):
            try:
                text = await said.finish()
            except SpeechError as err:
                await self._async_speech_failed(err, language)
                return
            self._send({"type": "transcript", "text": text})
        else:
            text = said
        if is_stop_word(text):
            self._send({"type": "stopped"})
            return
        if entry is None or (agent_id := self._agent(entry)) is None:
            message = await async_spoken_message(self.hass, language, "no_agent")
            self._send_error("no_agent", message)
            return
        if not text.strip():
            self._send({"type": "ignored", "text": text})
            return
        address = self._address(entry, CONF_TTS_SERVER)
        generation = self._generation
        speaker = (
            Speaker(
                address,
                entry.options.get(CONF_TTS_VOICE) or None,
                lambda message: self._send(message, generation),
                lambda pcm: self._outbox.put_nowait((generation, pcm)),
            )
            if address
            else None
        )
        reply = _StreamedReply(speaker)
        timings: dict[str, float] = {"transcript_s": time.monotonic() - ended}
        try:
            result = await self._async_run_turn(
                agent_id, text, language, reply.listener(self._send, generation)
            )
            if result is None:  # the conversation stayed busy: the user was told
                if speaker is not None:
                    speaker.cancel()
                return
            speech = result.response.speech.get("plain", {}).get("speech", "")
            if not speech:  # screened out: nothing is said
                if speaker is not None:
                    speaker.cancel()
                self._send({"type": "ignored", "text": text})
                return
            reply.finish(speech)
            if speaker is not None:
                await speaker.finish()
                if speaker.error is not None:
                    message = await async_spoken_message(self.hass, language, speaker.error.kind)
                    self._send_error(speaker.error.kind, message)
        except Exception:  # noqa: BLE001 - the client gets a sentence, the log the trace
            LOGGER.exception("Voice reply failed")
            if speaker is not None:
                speaker.cancel()
            self._send_error("unknown", await async_spoken_message(self.hass, language, "unknown"))
            return
        except asyncio.CancelledError:
            if speaker is not None:
                speaker.cancel()
            raise
        timings.update(reply.timings(ended))
        if speaker is not None and speaker.first_audio_at is not None:
            timings["first_audio_s"] = speaker.first_audio_at - ended
        self._send(
            {
                "type": "reply_end",
                "text": speech,
                "conversation_id": result.conversation_id,
                "continue_conversation": result.continue_conversation,
                "timings": {key: round(value, 3) for key, value in timings.items()},
            }
        )

    async def _async_run_turn(
        self,
        agent_id: str,
        text: str,
        language: str,
        listener: Callable[[conversation.ChatLog, dict[str, Any]], None],
    ) -> conversation.ConversationResult | None:
        """The turn's result once the conversation is free; None if it stayed busy.

        One turn at a time: Home Assistant 2026.11 refuses a second one in a busy
        conversation (ConversationBusyError), and before it both turns would store
        their own copy of the history, one losing the other's exchange. The turn a
        barge-in interrupted is awaited; a turn of another client of the same
        conversation is waited out for BUSY_WAIT_S, then the user is told.
        """
        deadline = time.monotonic() + BUSY_WAIT_S
        while True:
            while (previous := self._turn) is not None and not previous.done():
                await asyncio.wait([previous])  # its failure is its own reply's to tell
            # Once started, the turn runs on even if the user barges in: its history
            # stays whole.
            turn = asyncio.ensure_future(self._async_turn(agent_id, text, language, listener))
            self._turn = turn
            try:
                return await asyncio.shield(turn)
            except compat.BUSY_ERRORS:
                if time.monotonic() >= deadline:
                    LOGGER.warning(
                        "Conversation %s stayed busy: turn dropped", self._conversation_id
                    )
                    message = await async_spoken_message(self.hass, language, "conversation_busy")
                    self._send_error("conversation_busy", message)
                    return None
            except asyncio.CancelledError:
                turn.add_done_callback(_log_interrupted_failure)
                raise
            await asyncio.sleep(BUSY_RETRY_S)

    async def _async_turn(
        self,
        agent_id: str,
        text: str,
        language: str,
        listener: Callable[[conversation.ChatLog, dict[str, Any]], None],
    ) -> conversation.ConversationResult:
        """One turn of the agent, its deltas streamed to the listener."""
        context = Context(user_id=self._user.id if self._user else None)
        SPOKEN_INPUT.set(True)  # this task's own context: the flag ends with it
        with (
            # The user's context: Home Assistant 2026.11 records them as the session's owner.
            compat.chat_session_for(self.hass, self._conversation_id, context) as session,
            conversation.async_get_chat_log(self.hass, session, chat_log_delta_listener=listener),
        ):
            # Known now, not when the turn ends: a barge-in must not lose the conversation.
            self._conversation_id = session.conversation_id
            return await conversation.async_converse(
                self.hass, text, session.conversation_id, context, language, agent_id=agent_id
            )


async def _async_close(socket: web.WebSocketResponse) -> None:
    """Close the websocket, and stop its heartbeat for good.

    From aiohttp 3.14, every read from the client re-arms the heartbeat (a callback of
    the protocol), even once the socket is closed. When the server closes first (a
    refused login), the client's answer to the close re-arms it: the closed response
    would stay referenced for 30 s, and then ping a closed socket. Once close() has
    returned, the transport is closed: nothing re-arms it again.
    """
    try:
        await socket.close()
    finally:
        stop_heartbeat = getattr(socket, "_cancel_heartbeat", None)  # no public way
        if callable(stop_heartbeat):
            stop_heartbeat()


def _log_interrupted_failure(turn: asyncio.Future[conversation.ConversationResult]) -> None:
    """Log how a turn failed after the user barged in: no reply awaits it any more."""
    if not turn.cancelled() and (err := turn.exception()) is not None:
        LOGGER.warning("A voice turn failed after it was interrupted: %s", err, exc_info=err)


class _StreamedReply:
    """The model's text as it streams, cut into sentences for the speaker."""

    def __init__(self, speaker: Speaker | None) -> None:
        self._speaker = speaker
        self._splitter = SentenceSplitter()
        self._message = ""  # text of the assistant message being written
        self._first_delta_at: float | None = None
        self._first_sentence_at: float | None = None

    def listener(
        self, send: Callable[[dict[str, Any], int], None], generation: int
    ) -> Callable[[conversation.ChatLog, dict[str, Any]], None]:
        """Return the chat log's delta listener for this reply."""

        def on_delta(chat_log: conversation.ChatLog, delta: dict[str, Any]) -> None:
            if "role" in delta:
                self._message = ""  # a new message (after a tool call)
            text = delta.get("content")
            if not isinstance(text, str) or not text:
                return
            if self._first_delta_at is None:
                self._first_delta_at = time.monotonic()
            self._message += text
            send({"type": "reply_delta", "text": text}, generation)
            self._say(self._splitter.feed(text))

        return on_delta

    def finish(self, speech: str) -> None:
        """Speak what the stream left, reconciled with the turn's final answer.

        The final answer usually is the last message streamed, sometimes with a
        sentence added (the introduction question). When it is something else
        (an apology after the stream broke), the unfinished sentence is dropped
        and the final answer is spoken whole.
        """
        streamed = self._message.strip()
        if streamed and speech.startswith(streamed):
            self._say(self._splitter.feed(speech[len(streamed) :]))
            self._say(self._splitter.flush())
            return
        splitter = SentenceSplitter()
        self._say(splitter.feed(speech) + splitter.flush())

    def _say(self, sentences: list[str]) -> None:
        for sentence in sentences:
            if self._first_sentence_at is None:
                self._first_sentence_at = time.monotonic()
            if self._speaker is not None:
                self._speaker.say(sentence)

    def timings(self, since: float) -> dict[str, float]:
        """When the first text and the first whole sentence appeared."""
        marks = {"first_delta_s": self._first_delta_at, "first_sentence_s": self._first_sentence_at}
        return {key: at - since for key, at in marks.items() if at is not None}
