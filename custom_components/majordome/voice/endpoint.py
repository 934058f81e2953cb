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

A connection has one turn in flight: a new `start` or `text` (or `stop`) cancels the
reply in flight, its model call and speech included, and the new turn starts once it
has ended. Everything is cancelled when the client leaves. Like /api/websocket, a
connection closes when its login is revoked, and a refused login counts towards IP bans.

Limits: a frame is at most 1 MiB (a larger one is answered with `error` message_too_big
once logged in, and the connection closes with 1009; what the client still sends of it is
read and dropped, within LINGER_S and LINGER_BYTES, so that the answer is not lost);
commands are rate limited (a burst of RATE_BURST, then RATE_PER_S a second: `error`
rate_limited); an utterance holds at most MAX_UTTERANCE_S of audio, sent at most
MAX_AUDIO_FRAMES_PER_S frames a second (`error` utterance_too_long, which ends it). A
message that is not valid (not JSON, nested too deep, an unknown type, a field of the
wrong type) is answered with an `error` invalid_message, and the connection stays. A
client that stops reading is disconnected after SEND_TIMEOUT.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
import contextlib
import re
import socket
import time
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from homeassistant.auth.models import RefreshToken, User
from homeassistant.components import conversation
from homeassistant.components.http.ban import process_success_login, process_wrong_login
from homeassistant.components.http.const import KEY_HASS_REFRESH_TOKEN_ID
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import CALLBACK_TYPE, Context, HomeAssistant
from homeassistant.helpers import chat_session, entity_registry as er
from homeassistant.helpers.http import KEY_AUTHENTICATED, KEY_HASS, HomeAssistantView
from homeassistant.helpers.json import json_dumps
from homeassistant.util.json import JSON_DECODE_EXCEPTIONS, json_loads

from .. import compat
from ..const import CONF_STT_SERVER, CONF_TTS_SERVER, CONF_TTS_VOICE, DOMAIN, LOGGER, VOICE_URL
from ..entity import async_spoken_message
from ..models import SPOKEN_INPUT, MajordomeConfigEntry, default_agent
from .sentences import SentenceSplitter
from .speaker import Speaker
from .wyoming_client import MIC_RATE, MIC_WIDTH, ServerAddress, SpeechError, Transcription

AUTH_TIMEOUT = 10.0
# One frame to the client: a client that stops reading is disconnected after it, and so
# is one that lets more than MAX_PENDING frames wait.
SEND_TIMEOUT = 10.0
MAX_PENDING = 4096
# Commands (text frames): a burst, then a steady rate.
RATE_BURST = 20
RATE_PER_S = 4.0
# One utterance: its audio, and how fast its frames may come (20 ms frames are 50 a second).
MAX_UTTERANCE_S = 60.0
MAX_AUDIO_FRAMES_PER_S = 100
# A field naming a language, an entry, an agent or a conversation.
MAX_NAME_CHARS = 256
ALWAYS = -1  # the generation of what is sent whatever reply is in flight
# How long a conversation busy with another client's turn is retried before giving up.
BUSY_WAIT_S = 5.0
BUSY_RETRY_S = 0.2
MAX_MESSAGE_BYTES = 1 << 20  # one frame of audio or text; a 100 kB message is fine
# After a frame over the limit, what the client still sends is read and dropped before
# the socket closes, for at most this long and this much, read this much at a time.
LINGER_S = 2.0
LINGER_BYTES = 16 * MAX_MESSAGE_BYTES
LINGER_READ_BYTES = 1 << 16
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


class InvalidMessage(Exception):
    """A client message the endpoint cannot take; the text says why."""


_COMMANDS = frozenset({"start", "end", "text", "stop"})
# Fields any message may carry: a string (or null).
_NAMES = ("language", "entry_id", "agent_id", "conversation_id")


def parse_message(raw: str) -> dict[str, Any]:
    """A client's command, its fields checked; InvalidMessage when it is not one.

    Fields not listed are ignored (a newer client may send more).
    """
    try:
        message = json_loads(raw)
    except JSON_DECODE_EXCEPTIONS as err:  # also JSON nested too deep
        raise InvalidMessage("Expected a JSON object with a type.") from err
    if not isinstance(message, dict):
        raise InvalidMessage("Expected a JSON object with a type.")
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in _COMMANDS:
        raise InvalidMessage(f"Unknown message: {str(kind)[:MAX_NAME_CHARS]}")
    for name in _NAMES:
        value = message.get(name)
        if value is not None and not (isinstance(value, str) and len(value) <= MAX_NAME_CHARS):
            raise InvalidMessage(f"{name} must be a string of at most {MAX_NAME_CHARS} characters.")
    if kind == "text" and not isinstance(message.get("text"), str):
        raise InvalidMessage("A text message needs its text, a string.")
    return message


class _Bucket:
    """A token bucket: `burst` at once, then `per_s` a second."""

    def __init__(self, burst: float, per_s: float) -> None:
        self._burst = burst
        self._per_s = per_s
        self._tokens = burst
        self._at = time.monotonic()

    def take(self) -> bool:
        """Whether one more is allowed now."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._per_s)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class VoiceView(HomeAssistantView):
    """GET upgrades to the voice websocket."""

    url = VOICE_URL
    name = "api:majordome:voice"
    requires_auth = False  # checked in-band, as Home Assistant's own websocket does

    async def get(self, request: web.Request) -> web.WebSocketResponse:
        """Serve one voice connection until the client leaves."""
        voice_socket = VoiceSocket(request)
        await voice_socket.prepare(request)
        connection = VoiceConnection(request, voice_socket)
        await connection.async_run()
        return voice_socket


class VoiceSocket(web.WebSocketResponse):
    """aiohttp's websocket, answering a frame over the limit before it hangs up.

    aiohttp refuses a frame over max_msg_size (newer aiohttp from its header) and closes
    with 1009 at once, transport included, while the client is still sending the frame:
    a socket closed with unread data resets the connection, and the client can lose the
    close frame. Here the client is told why first (`refusal`), and the socket lives on
    in a duplicate that reads and drops what still comes (async_close()), within bounds.
    """

    def __init__(self, request: web.Request) -> None:
        """A websocket for this request (not prepared yet)."""
        super().__init__(heartbeat=30, max_msg_size=MAX_MESSAGE_BYTES)
        self._request = request
        self.refusal: str | None = None  # the message sent before a 1009 close
        self._rest: socket.socket | None = None  # the socket, kept to drop what comes

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        """Close the websocket; a frame over the limit (1009) is answered first."""
        if code == WSCloseCode.MESSAGE_TOO_BIG and not self.closed and self._rest is None:
            self._rest = self._duplicate()
            if self.refusal is not None:
                with contextlib.suppress(ConnectionError, TimeoutError):
                    async with asyncio.timeout(SEND_TIMEOUT):
                        await self.send_str(self.refusal)
        return await super().close(code=code, message=message, drain=drain)

    def _duplicate(self) -> socket.socket | None:
        """The connection's socket, open until closed here too (None if not a socket)."""
        transport = self._request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return None
        try:
            rest = socket.fromfd(sock.fileno(), sock.family, sock.type)
        except OSError:
            return None
        rest.setblocking(False)
        return rest

    async def async_close(self) -> None:
        """Close the websocket, stop its heartbeat for good, then the socket itself.

        From aiohttp 3.14, every read from the client re-arms the heartbeat (a callback of
        the protocol), even once the socket is closed. When the server closes first (a
        refused login), the client's answer to the close re-arms it: the closed response
        would stay referenced for 30 s, and then ping a closed socket. Once close() has
        returned, the transport is closed: nothing re-arms it again.

        After a frame over the limit, what the client still sends is dropped, until it
        hangs up or for LINGER_S and LINGER_BYTES at most.
        """
        try:
            await self.close()
        finally:
            stop_heartbeat = getattr(self, "_cancel_heartbeat", None)  # no public way
            if callable(stop_heartbeat):
                stop_heartbeat()
            if (rest := self._rest) is not None:
                try:
                    await async_drop_input(rest)
                finally:
                    rest.close()


async def async_drop_input(rest: socket.socket) -> None:
    """Read and drop what comes until the peer hangs up, within LINGER_S and LINGER_BYTES."""
    loop = asyncio.get_running_loop()
    dropped = 0
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(LINGER_S):
            while dropped < LINGER_BYTES:
                if not (data := await loop.sock_recv(rest, LINGER_READ_BYTES)):
                    return
                dropped += len(data)
    LOGGER.debug("Voice client cut off after %d bytes dropped", dropped)


class _Utterance:
    """The audio of the utterance being spoken, streamed to STT, within its limits."""

    def __init__(self, transcription: Transcription, language: str | None) -> None:
        self.transcription = transcription
        self.language = language
        self._bytes = 0
        self._frames = _Bucket(MAX_AUDIO_FRAMES_PER_S, MAX_AUDIO_FRAMES_PER_S)

    def accepts(self, pcm: bytes) -> bool:
        """Whether this frame keeps the utterance within its length and frame rate."""
        self._bytes += len(pcm)
        return self._frames.take() and self._bytes <= MAX_UTTERANCE_S * MIC_RATE * MIC_WIDTH


class VoiceConnection:
    """One client: its utterances, the reply in flight, and everything sent back."""

    def __init__(self, request: web.Request, voice_socket: VoiceSocket) -> None:
        """Nothing runs before async_run()."""
        self.hass: HomeAssistant = request.app[KEY_HASS]
        self._request = request
        self._socket = voice_socket
        self._entry_id = request.query.get("entry_id")
        self._agent_id: str | None = None  # None: the entry's default agent
        self._user: User | None = None
        self._conversation_id: str | None = None
        # Everything sent goes through one queue. What a reply says is tagged with its
        # generation: once it is superseded, what it had queued is dropped. The rest
        # (errors, `interrupted`...) is tagged ALWAYS.
        self._outbox: asyncio.Queue[tuple[int, str | bytes | None]] = asyncio.Queue()
        self._generation = 0
        self._utterance: _Utterance | None = None
        self._reply: asyncio.Task[None] | None = None
        # The reply this connection cancelled last. Not `Task.cancelling()`: a timeout
        # expiring inside the reply cancels it too, and then takes its cancel back.
        self._cancelled: asyncio.Task[None] | None = None
        self._commands = _Bucket(RATE_BURST, RATE_PER_S)
        self._unsubscribe_revoke: CALLBACK_TYPE | None = None
        self._gone = False  # the client was disconnected: nothing more is sent
        self._closing: asyncio.Task[None] | None = None

    # --- Connection -----------------------------------------------------------------

    async def async_run(self) -> None:
        """Authenticate, then read messages until the client closes (or is closed)."""
        writer = asyncio.create_task(self._async_write(), name="majordome voice writer")
        try:
            refresh_token = await self._async_authenticate()
            if refresh_token is None:
                return
            self._user = refresh_token.user
            too_big = await async_spoken_message(
                self.hass, self.hass.config.language, "message_too_big"
            )
            self._socket.refusal = json_dumps(
                {"type": "error", "code": "message_too_big", "message": too_big}
            )
            self._unsubscribe_revoke = self.hass.auth.async_register_revoke_token_callback(
                refresh_token.id, self._revoked
            )
            self._send({"type": "ready", **self._describe()})
            async for message in self._socket:
                if message.type is WSMsgType.BINARY:
                    await self._async_audio(message.data)
                elif message.type is WSMsgType.TEXT:
                    await self._async_command(message.data)
                else:
                    break  # closed; or an error, such as a frame over the limit (1009)
        finally:
            await self._async_clean_up(writer)

    async def _async_clean_up(self, writer: asyncio.Task[None]) -> None:
        """Cancel everything the connection started, and close it."""
        if self._unsubscribe_revoke is not None:
            self._unsubscribe_revoke()
            self._unsubscribe_revoke = None
        reply = self._cancel_reply(notify=False)
        self._outbox.put_nowait((ALWAYS, None))  # the writer ends there
        try:
            await self._async_end_utterance()
            if reply is not None:
                await asyncio.wait([reply])  # its model call and speech end with it
            await asyncio.wait([writer], timeout=SEND_TIMEOUT)
        finally:
            writer.cancel()
            await self._socket.async_close()

    async def _async_authenticate(self) -> RefreshToken | None:
        """The login's refresh token: from the Authorization header, else an auth message."""
        if (
            self._request.get(KEY_AUTHENTICATED)
            and (token_id := self._request.get(KEY_HASS_REFRESH_TOKEN_ID))
            and (refresh_token := self.hass.auth.async_get_refresh_token(token_id))
        ):
            return refresh_token
        await self._socket.send_str(json_dumps({"type": "auth_required"}))
        token: Any = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(AUTH_TIMEOUT):
                first = await self._socket.receive()
            if first.type is WSMsgType.TEXT:
                with contextlib.suppress(*JSON_DECODE_EXCEPTIONS):
                    message = json_loads(first.data)
                    if isinstance(message, dict) and message.get("type") == "auth":
                        token = message.get("access_token")
        refresh_token = (
            self.hass.auth.async_validate_access_token(token)
            if isinstance(token, str) and token
            else None
        )
        if refresh_token is None or not refresh_token.user.is_active:
            if not self._socket.closed:
                await self._socket.send_str(json_dumps({"type": "auth_invalid"}))
            await process_wrong_login(self._request)
            return None
        await self._socket.send_str(json_dumps({"type": "auth_ok"}))
        process_success_login(self._request)
        return refresh_token

    def _revoked(self) -> None:
        """The login was revoked: the connection ends, as /api/websocket's does."""
        LOGGER.info("Voice connection closed: its login was revoked")
        self._unsubscribe_revoke = None  # Home Assistant forgets the callbacks itself
        self._closing = self.hass.async_create_background_task(
            self._async_close_now(), "majordome voice revoked"
        )

    async def _async_close_now(self) -> None:
        """Close the websocket (the reading loop ends there); abort if the client hangs."""
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await self._socket.close()
        except TimeoutError:
            self._disconnect()

    def _disconnect(self, why: str | None = None) -> None:
        """End the connection now: the reading loop ends, and with it everything.

        `why` is logged, once per connection: a client that stops reading trips both the
        send deadline and the outbox's limit, whichever comes first says so.
        """
        if why is not None and not self._gone:
            LOGGER.warning("A voice client %s: disconnected", why)
        self._gone = True
        if (transport := self._request.transport) is not None:
            transport.abort()

    async def _async_write(self) -> None:
        while True:
            generation, item = await self._outbox.get()
            if item is None:
                return
            if generation not in (ALWAYS, self._generation) or self._socket.closed or self._gone:
                continue
            try:
                async with asyncio.timeout(SEND_TIMEOUT):
                    if isinstance(item, bytes):
                        await self._socket.send_bytes(item)
                    else:
                        await self._socket.send_str(item)
            except TimeoutError:
                self._disconnect("stopped reading")
            except ConnectionError:
                self._gone = True

    def _send(self, message: dict[str, Any], generation: int = ALWAYS) -> None:
        self._queue(generation, json_dumps(message))

    def _queue(self, generation: int, item: str | bytes) -> None:
        if self._gone:
            return
        if self._outbox.qsize() >= MAX_PENDING:
            self._disconnect("reads too slowly")
            return
        self._outbox.put_nowait((generation, item))

    def _send_error(self, code: str, message: str) -> None:
        self._send({"type": "error", "code": code, "message": message})

    async def _async_send_spoken_error(
        self, code: str, language: str | None, key: str | None = None
    ) -> None:
        """An error with its sentence (`key`, else `code`, of the translations' `exceptions`).

        The sentence is in the utterance's language, else Home Assistant's.
        """
        message = await async_spoken_message(
            self.hass, language or self.hass.config.language, key or code
        )
        self._send_error(code, message)

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
        if not self._commands.take():
            await self._async_send_spoken_error(
                "rate_limited", self._language_of(raw), "too_many_messages"
            )
            return
        try:
            message = parse_message(raw)
        except InvalidMessage as err:
            self._send_error("invalid_message", str(err))
            return
        if "entry_id" in message:
            self._entry_id = message["entry_id"]
        if "agent_id" in message:
            self._agent_id = message["agent_id"]
        if "conversation_id" in message:
            self._conversation_id = message["conversation_id"]
        kind, language = message["type"], message.get("language")
        if kind == "start":
            await self._async_start_utterance(language)
        elif kind == "end":
            self._finish_utterance()
        elif kind == "text":
            await self._async_end_utterance()
            self._begin_reply(message["text"], language)
        else:  # stop
            self._cancel_reply()
            self._send({"type": "stopped"})

    @staticmethod
    def _language_of(raw: str) -> str | None:
        """The language a message names, if it is one: a refusal is said in it."""
        with contextlib.suppress(InvalidMessage):
            language = parse_message(raw).get("language")
            return language if isinstance(language, str) else None
        return None

    async def _async_start_utterance(self, language: str | None) -> None:
        """Barge-in: a new utterance cancels the reply in flight."""
        self._cancel_reply()
        await self._async_end_utterance()
        entry = self._entry()
        address = self._address(entry, CONF_STT_SERVER) if entry else None
        if entry is None or address is None:
            await self._async_send_spoken_error("stt_not_configured", language)
            return
        transcription = Transcription(address, language or self.hass.config.language)
        try:
            await transcription.start()
        except SpeechError as err:
            await transcription.close()
            await self._async_speech_failed(err, language)
            return
        self._utterance = _Utterance(transcription, language)

    async def _async_audio(self, pcm: bytes) -> None:
        if (utterance := self._utterance) is None:
            return  # audio outside an utterance (after an error, or before start)
        if not utterance.accepts(pcm):
            await self._async_end_utterance()
            await self._async_send_spoken_error("utterance_too_long", utterance.language)
            return
        try:
            await utterance.transcription.send(pcm)
        except SpeechError as err:
            await self._async_end_utterance()
            await self._async_speech_failed(err, utterance.language)

    def _finish_utterance(self) -> None:
        """End of speech: the utterance is transcribed and answered."""
        if (utterance := self._utterance) is None:
            return
        self._utterance = None
        self._begin_reply(utterance.transcription, utterance.language)

    async def _async_end_utterance(self) -> None:
        """Abandon the utterance being spoken, if any."""
        if (utterance := self._utterance) is not None:
            self._utterance = None
            await utterance.transcription.close()

    async def _async_speech_failed(self, err: SpeechError, language: str | None) -> None:
        LOGGER.warning("Speech-to-text failed: %s", err)
        await self._async_send_spoken_error(err.kind, language)

    # --- Replies -------------------------------------------------------------------

    def _begin_reply(self, said: Transcription | str, language: str | None) -> None:
        """Answer in a task of its own, once the reply it supersedes has ended."""
        previous = self._cancel_reply()
        self._reply = asyncio.create_task(
            self._async_reply(said, language, previous, self._generation),
            name="majordome voice reply",
        )

    def _cancel_reply(self, *, notify: bool = True) -> asyncio.Task[None] | None:
        """Cancel the reply in flight (its turn, model call and speech); the last reply.

        The task returned may still be ending: the next reply waits for it.
        """
        reply = self._reply
        if reply is not None and not reply.done() and reply is not self._cancelled:
            reply.cancel()
            self._cancelled = reply
            self._generation += 1
            if notify:
                self._send({"type": "interrupted"})
        return reply

    async def _async_reply(
        self,
        said: Transcription | str,
        language: str | None,
        previous: asyncio.Task[None] | None,
        generation: int,
    ) -> None:
        ended = time.monotonic()  # end of speech: every timing counts from here
        language = language or self.hass.config.language
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])  # one turn in flight
            if isinstance(said, Transcription):
                try:
                    text = await said.finish()
                except SpeechError as err:
                    await self._async_speech_failed(err, language)
                    return
                self._send({"type": "transcript", "text": text}, generation)
            else:
                text = said
        finally:
            if isinstance(said, Transcription):
                await said.close()  # also when cancelled before finishing
        await self._async_answer(text, language, ended, generation)

    async def _async_answer(self, text: str, language: str, ended: float, generation: int) -> None:
        entry = self._entry()
        if is_stop_word(text):
            self._send({"type": "stopped"}, generation)
            return
        if entry is None or (agent_id := self._agent(entry)) is None:
            await self._async_send_spoken_error("no_agent", language)
            return
        if not text.strip():
            self._send({"type": "ignored", "text": text}, generation)
            return
        address = self._address(entry, CONF_TTS_SERVER)
        speaker = (
            Speaker(
                address,
                entry.options.get(CONF_TTS_VOICE) or None,
                lambda message: self._send(message, generation),
                lambda pcm: self._queue(generation, pcm),
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
                return
            speech = result.response.speech.get("plain", {}).get("speech", "")
            if not speech:  # screened out: nothing is said
                self._send({"type": "ignored", "text": text}, generation)
                return
            reply.finish(speech)
            if speaker is not None:
                await speaker.finish()
                if speaker.error is not None:
                    await self._async_send_spoken_error(speaker.error.kind, language)
        except Exception:  # noqa: BLE001 - the client gets a sentence, the log the trace
            LOGGER.exception("Voice reply failed")
            await self._async_send_spoken_error("unknown", language)
            return
        finally:
            if speaker is not None:
                await speaker.async_cancel()  # done already, unless cut short
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
            },
            generation,
        )

    async def _async_run_turn(
        self,
        agent_id: str,
        text: str,
        language: str,
        listener: Callable[[conversation.ChatLog, dict[str, Any]], None],
    ) -> conversation.ConversationResult | None:
        """The turn's result once the conversation is free; None if it stayed busy.

        A turn of another client of the same conversation (Home Assistant 2026.11
        refuses a second turn in a busy conversation) is waited out for BUSY_WAIT_S,
        then the user is told.
        """
        deadline = time.monotonic() + BUSY_WAIT_S
        while True:
            try:
                return await self._async_turn(agent_id, text, language, listener)
            except compat.BUSY_ERRORS:
                if time.monotonic() >= deadline:
                    LOGGER.warning(
                        "Conversation %s stayed busy: turn dropped", self._conversation_id
                    )
                    await self._async_send_spoken_error("conversation_busy", language)
                    return None
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
            self._session(context) as session,
            conversation.async_get_chat_log(self.hass, session, chat_log_delta_listener=listener),
        ):
            # Known now, not when the turn ends: a barge-in must not lose the conversation.
            self._conversation_id = session.conversation_id
            return await conversation.async_converse(
                self.hass, text, session.conversation_id, context, language, agent_id=agent_id
            )

    @contextlib.contextmanager
    def _session(self, context: Context) -> Iterator[chat_session.ChatSession]:
        """The conversation's chat session, opened with the user's context.

        Home Assistant 2026.11 makes the first user of a conversation its owner and
        refuses it to others: a conversation id of another user's conversation starts
        a new conversation instead.
        """
        with contextlib.ExitStack() as stack:
            try:
                session = stack.enter_context(
                    compat.chat_session_for(self.hass, self._conversation_id, context)
                )
            except compat.NOT_OWNER_ERRORS:
                LOGGER.info(
                    "Conversation %s has another owner: a new one starts", self._conversation_id
                )
                self._conversation_id = None
                session = stack.enter_context(compat.chat_session_for(self.hass, None, context))
            yield session


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
