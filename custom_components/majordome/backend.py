"""The OpenAI-compatible backend.

Owns the client, model listing, and turning a chat-completions chunk stream into
chat-log deltas, with the quirks of real servers and small local models handled here:
tool-call arguments split across chunks, arguments that are not JSON, tool calls written
as bare JSON in the text, `<think>` blocks, and servers' prompt-cache hints.
What the server sends is held to a deadline for the whole request and a size, and every
text passed on can be encoded as UTF-8 (and so stored as JSON); credentials written in
the server's URL never reach a log.
It knows nothing about Home Assistant entities or memory.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
import contextlib
from dataclasses import dataclass, field
from enum import StrEnum
import json
import logging
import re
import string
import time
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlparse, urlsplit, urlunsplit

import httpx
import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage

from homeassistant.components import conversation
from homeassistant.helpers import llm

from .compat import base_tool_name
from .const import DEFAULT_TIMEOUT, INVALID_ARGUMENTS_KEY, LOGGER

# A reply's size on the wire: 8192 tokens (the most an agent may ask for) of the
# chattiest server's events fit four times over; a server streaming without end does not.
MAX_REPLY_BYTES: Final = 8 * 1024 * 1024


class ErrorKind(StrEnum):
    """What went wrong talking to the server; each value is a translation key."""

    CANNOT_CONNECT = "cannot_connect"
    TIMEOUT = "timeout"
    INVALID_AUTH = "invalid_auth"
    MODEL_NOT_FOUND = "model_not_found"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    BAD_REQUEST = "bad_request"
    CONTEXT_TOO_LONG = "context_too_long"
    BROKEN_STREAM = "broken_stream"
    EMPTY_REPLY = "empty_reply"
    UNKNOWN = "unknown"


class BackendError(Exception):
    """A failed exchange with the server, classified for the user."""

    def __init__(self, kind: ErrorKind, detail: str = "") -> None:
        """Keep the kind for the spoken answer and the detail for the log."""
        detail = hide_secrets(detail)  # a server's error may echo the URL
        super().__init__(f"{kind}: {detail}" if detail else str(kind))
        self.kind = kind
        self.detail = detail


# How llama.cpp, vLLM, OpenAI and LM Studio say the prompt does not fit.
_CONTEXT_FULL = re.compile(
    r"exceed_context_size|context_length_exceeded|maximum context length|exceeds the "
    r"(available )?context|context (window|length|size).{0,40}(exceed|too (long|small))",
    re.IGNORECASE,
)


class ReplyTooLargeError(Exception):
    """The server sent more than MAX_REPLY_BYTES: the reply was cut."""


def classify_error(err: BaseException) -> ErrorKind:
    """Map a client exception to the kind of failure the user is told about."""
    # Order matters: APITimeoutError subclasses APIConnectionError.
    if isinstance(err, openai.APITimeoutError | httpx.TimeoutException | TimeoutError):
        return ErrorKind.TIMEOUT
    if isinstance(err, ReplyTooLargeError | UnicodeDecodeError):
        # Cut by us, or bytes that are not text: the answer did not come through whole.
        return ErrorKind.BROKEN_STREAM
    if isinstance(err, openai.APIConnectionError | httpx.ConnectError):
        return ErrorKind.CANNOT_CONNECT
    if isinstance(err, openai.AuthenticationError | openai.PermissionDeniedError):
        return ErrorKind.INVALID_AUTH
    if isinstance(err, openai.NotFoundError):
        return ErrorKind.MODEL_NOT_FOUND
    if isinstance(err, openai.RateLimitError):
        return ErrorKind.RATE_LIMITED
    if isinstance(err, openai.InternalServerError):
        return ErrorKind.SERVER_ERROR
    if isinstance(err, openai.BadRequestError | openai.UnprocessableEntityError):
        return (
            ErrorKind.CONTEXT_TOO_LONG if _CONTEXT_FULL.search(str(err)) else ErrorKind.BAD_REQUEST
        )
    if isinstance(err, openai.APIStatusError):
        # Statuses without a class of their own (409, 413...): refused before any stream.
        return ErrorKind.BAD_REQUEST if err.status_code < 500 else ErrorKind.SERVER_ERROR
    if isinstance(err, openai.APIError | httpx.HTTPError | json.JSONDecodeError):
        # Errors raised while iterating a stream that had started fine.
        return ErrorKind.BROKEN_STREAM
    return ErrorKind.UNKNOWN


def create_client(
    url: str, api_key: str | None, http_client: httpx.AsyncClient, timeout: float
) -> openai.AsyncOpenAI:
    """Create the client (blocking: it loads certificates, run it in the executor).

    No retries: a voice user waiting in silence is better served by a quick, clear
    answer than by a backoff. A query in the URL (`?api_key=...`) goes with every
    request, after the endpoint's path; the URL's credentials are hidden from the logs.
    """
    hide_in_logs(url)
    parts = urlsplit(url)
    return openai.AsyncOpenAI(
        base_url=urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
        # Local servers need no key, but the client insists on one.
        api_key=api_key or "no-key",
        http_client=http_client,
        timeout=timeout,
        max_retries=0,
        default_query=dict(parse_qsl(parts.query, keep_blank_values=True)) or None,
    )


async def async_list_models(client: openai.AsyncOpenAI) -> list[str]:
    """Return the ids of the models the server lists, sorted (empty if none)."""
    try:
        page = await client.models.list()
    except Exception as err:  # every failure is classified
        raise BackendError(classify_error(err), str(err)) from err
    return sorted({model.id for model in page.data if model.id})


# --- Credentials in the server's URL -------------------------------------------------

REDACTED: Final = "**REDACTED**"
_MIN_SECRET_CHARS = 4  # a shorter query value is not a secret (hiding it garbles logs)
_SECRETS: set[str] = set()  # of every URL a client was made for, this run
# The loggers that may write the URL: Majordome's, and the clients' (their debug logs
# and the tracebacks of their errors, e.g. httpx's "Client error ... for url '...'").
_LOGGERS = (LOGGER.name, "httpx", "httpx2", "openai", "openai._base_client")


def same_server(first: str, second: str) -> bool:
    """Whether two server URLs are the same server (a trailing slash aside)."""
    return first.rstrip("/") == second.rstrip("/")


def key_for(url: str, server_url: str, server_key: str | None) -> str | None:
    """The API key to send to `url`: the entry's key goes to the entry's server only.

    Another server (an agent's fast model elsewhere) gets the credentials its own URL
    carries, if any.
    """
    return server_key if same_server(url, server_url) else None


def public_url(url: str) -> str:
    """The server's URL as it may be shown (titles, logs): no user, password or query."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def url_secrets(url: str) -> set[str]:
    """What in `url` is a secret: its user and password, its query's values.

    As written and decoded; values too short to be secrets are left out.
    """
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    secrets: set[str] = set()
    if at and userinfo:
        user, colon, password = userinfo.partition(":")
        secrets |= {userinfo, password if colon else user}  # a lone user is a token
    if parts.query:
        secrets.add(parts.query)
        secrets.update(value for _, value in parse_qsl(parts.query, keep_blank_values=True))
    secrets |= {unquote(secret) for secret in secrets}
    return {secret for secret in secrets if len(secret) >= _MIN_SECRET_CHARS}


def hide_secrets(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` with the secrets (by default those of every client's URL) replaced."""
    for secret in sorted(_SECRETS if secrets is None else secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class _HideSecrets(logging.Filter):
    """Replace the URLs' secrets in a record's message and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _SECRETS:
            return True
        with contextlib.suppress(Exception):  # a log call must never fail here
            message = record.getMessage()
            if (hidden := hide_secrets(message)) != message:
                record.msg, record.args = hidden, None
            if record.exc_info and record.exc_info[1] is not None:
                trace = logging.Formatter().formatException(record.exc_info)
                if (hidden := hide_secrets(trace)) != trace:
                    # Formatters print exc_text as the traceback; it is kept hidden.
                    record.exc_info, record.exc_text = None, hidden
        return True


_FILTER = _HideSecrets()


def hide_in_logs(url: str) -> None:
    """Hide the secrets of `url` in every log that may write it, from now on."""
    if not (secrets := url_secrets(url)):
        return
    _SECRETS.update(secrets)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def cache_hints(url: str, cache_key: str) -> dict[str, Any]:
    """Return the prompt-cache hints the server at `url` understands.

    OpenAI rejects unknown parameters but takes `prompt_cache_key`; llama.cpp
    reads `cache_prompt`; Ollama, vLLM and LM Studio ignore unknown fields.
    """
    host = urlparse(url).hostname or ""
    if host == "api.openai.com":
        return {"prompt_cache_key": cache_key}
    return {"cache_prompt": True}


@dataclass
class StreamStats:
    """What one completion cost, for the debug log and the benchmarks."""

    started: float = field(default_factory=time.monotonic)
    first_token_s: float | None = None
    total_s: float = 0.0
    cache_n: int | None = None  # prompt tokens the server reused (llama.cpp)
    prompt_n: int | None = None  # prompt tokens it had to process
    finish_reason: str | None = None


# --- Text that UTF-8 can encode ----------------------------------------------------


def encodable(text: str) -> str:
    r"""`text` as UTF-8 can encode it, and so JSON can store it.

    Surrogate halves that belong together are joined, lone ones (a cut-off emoji,
    `"\ud83d`) dropped.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "ignore")
    return text


def _encodable_value(value: Any) -> Any:
    """A JSON value whose every string (keys too) UTF-8 can encode."""
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, dict):
        return {_encodable_value(key): _encodable_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable_value(item) for item in value]
    return value


class EncodableStream:
    """Streamed text made encodable; an emoji's halves may come in two chunks."""

    def __init__(self) -> None:
        """Start with nothing held back."""
        self._high = ""  # a first half waiting for its second

    def feed(self, text: str) -> str:
        """Take the next chunk and return it encodable, its last first half held back."""
        text, self._high = self._high + text, ""
        if text and "\ud800" <= text[-1] <= "\udbff":
            text, self._high = text[:-1], text[-1]
        return encodable(text)


# --- <think> blocks --------------------------------------------------------------

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"


class ThinkFilter:
    """Drop `<think>...</think>` from streamed text, even when tags straddle chunks."""

    def __init__(self) -> None:
        """Start outside a think block with nothing held back."""
        self._inside = False
        self._held = ""  # a tail that may be the start of a tag

    def feed(self, text: str) -> str:
        """Take the next chunk and return what may be shown of it."""
        buffer = self._held + text
        self._held = ""
        shown: list[str] = []
        while buffer:
            tag = _THINK_CLOSE if self._inside else _THINK_OPEN
            index = buffer.find(tag)
            if index >= 0:
                if not self._inside:
                    shown.append(buffer[:index])
                buffer = buffer[index + len(tag) :]
                self._inside = not self._inside
                continue
            # Hold back a tail that could be the beginning of the tag.
            keep = _partial_suffix(buffer, tag)
            if not self._inside:
                shown.append(buffer[: len(buffer) - keep])
            self._held = buffer[len(buffer) - keep :]
            break
        return "".join(shown)

    def flush(self) -> str:
        """Return what was held back once the stream has ended."""
        held, self._held = self._held, ""
        return "" if self._inside else held


def without_think(text: str) -> str:
    """Return a whole (not streamed) text without its `<think>` blocks."""
    think = ThinkFilter()
    return think.feed(text) + think.flush()


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


# --- Tool-call arguments ---------------------------------------------------------

_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_FENCE = "```"


def without_code_fence(text: str) -> str:
    r"""The text without the markdown fence around it ("```json ... ```"), stripped.

    String methods, not a regex: `\s*```$` searched from every space of a long run of
    them was quadratic on the model's text.
    """
    text = text.strip()
    if text.startswith(_FENCE):
        text = text[len(_FENCE) :].lstrip(string.ascii_letters).lstrip()
    if text.endswith(_FENCE):
        text = text[: -len(_FENCE)]
    return text.strip()


def parse_arguments(raw: str | None) -> dict[str, Any] | None:
    """Parse tool-call arguments, repairing what small models typically break.

    Returns None when the intent is not obvious: the caller sends an error back to
    the model instead of guessing.
    """
    text = (raw or "").strip()
    if not text:
        return {}
    text = without_code_fence(text)
    candidates = [text, _TRAILING_COMMA.sub(r"\1", text)]
    # A truncated object: close the braces and brackets left open.
    candidates.append(_close_brackets(candidates[-1]))
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        return _as_arguments(value)
    # Python literals: single quotes, True/False/None.
    try:
        value = ast.literal_eval(candidates[-1])
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        # TypeError: "{{...}}" evaluates to a set holding a dict.
        return None
    return _as_arguments(value)


def _as_arguments(value: Any) -> dict[str, Any] | None:
    """Accept an object, or a JSON string that holds one (a common double encoding).

    Its strings are made encodable: what a tool stores must be storable.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return _encodable_value(value) if isinstance(value, dict) else None


def _close_brackets(text: str) -> str:
    r"""Append the closing brackets a truncated JSON text is missing.

    A string cut inside an escape loses that escape: a lone backslash, a `\u` short
    of its four digits, or the first half of an emoji (`\ud83d`) without its second.
    """
    stack: list[str] = []
    in_string = escaped = False
    escape_at = -1  # where the string's last escape began
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped, escape_at = True, index
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]" and stack:
            stack.pop()
    if in_string and escape_at >= 0 and _cut_escape(text[escape_at + 1 :]):
        text = text[:escape_at]
    return text + ('"' if in_string else "") + "".join(reversed(stack))


def _cut_escape(escape: str) -> bool:
    r"""Whether a string's text ending with `\` + `escape` ends inside an escape."""
    if not escape:
        return True
    if escape[0] != "u" or len(escape) > 5:
        return False
    digits = escape[1:]
    return len(digits) < 4 or "d800" <= digits.lower() < "dc00"


def tool_input(tool_id: str | None, name: str, raw_arguments: str | None) -> llm.ToolInput:
    """Build a tool input; unparsable arguments travel along for the tool layer to refuse."""
    name = encodable(name)
    arguments = parse_arguments(raw_arguments)
    if arguments is None:
        arguments = {INVALID_ARGUMENTS_KEY: encodable(raw_arguments or "")}
    if tool_id:
        return llm.ToolInput(id=tool_id, tool_name=name, tool_args=arguments)
    return llm.ToolInput(tool_name=name, tool_args=arguments)


_TOOL_CALL_TAGS = re.compile(r"</?tool_call>")


def tool_calls_in_text(text: str, tool_names: Iterable[str]) -> list[llm.ToolInput] | None:
    """Read tool calls a model wrote as text (`{"name": ..., "arguments": ...}`).

    A call counts if it names a tool that exists, or has the shape of a call (a
    name and arguments) to one that does not: that one then gets the unknown-tool
    error with the list of real tools, as a structured call would, instead of the
    turn ending without an answer. Anything else (an echoed tool result, a list of
    devices) is not a call. Small models repeat a call until they run out of
    tokens: the same call counts once and a cut-off last one is dropped.
    """
    body = without_code_fence(_TOOL_CALL_TAGS.sub("\n", text))
    decoder = json.JSONDecoder()
    # By base name too: a model writes `HassTurnOn` where 2026.9+ has `intent__HassTurnOn`.
    known = set(tool_names) | {base_tool_name(name) for name in tool_names}
    calls: list[llm.ToolInput] = []
    seen: set[tuple[str, str]] = set()
    position = 0
    while position < len(body):
        if body[position].isspace() or body[position] == ",":
            position += 1
            continue
        try:
            value, position = decoder.raw_decode(body, position)
        except ValueError:
            if calls and body[position] in "{[":
                break  # cut off by the token limit
            return None
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, dict) or not _is_call(item, known):
                return None
            arguments = item.get("arguments", item.get("parameters", {}))
            raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
            if (item["name"], raw) not in seen:
                seen.add((item["name"], raw))
                calls.append(tool_input(None, item["name"], raw))
    return calls or None


def _is_call(item: dict[str, Any], known: set[str]) -> bool:
    """Whether a JSON object the model wrote is a tool call."""
    name = item.get("name")
    if not isinstance(name, str) or not name:
        return False
    if name in known or base_tool_name(name) in known:
        return True
    arguments = item.get("arguments", item.get("parameters"))
    return isinstance(arguments, (dict, str)) and set(item) <= _CALL_KEYS


_CALL_KEYS = {"name", "arguments", "parameters", "id", "type"}


# --- Requests --------------------------------------------------------------------


def _request(
    *,
    model: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    temperature: float,
    max_tokens: int,
    extra_body: dict[str, Any] | None,
    stream: bool,
) -> dict[str, Any]:
    """Return the arguments of a chat-completions call (no empty tools or hints).

    The messages and tools are JSON already: they go into the body as they are (the
    client's `extra_body`, which wins over its own keys), not through the client's
    conversion of its parameters, which walks them by their type hints: about 8 ms of
    the event loop per call with a dozen tools on openai 1.68, fifty times over when
    fifty people speak at once.
    """
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": [],
        "temperature": temperature,
        "max_tokens": max_tokens,
        "stream": stream,
        "extra_body": {
            "messages": messages,
            **({"tools": tools} if tools else {}),
            **(extra_body or {}),
        },
    }
    return kwargs


@dataclass
class _PendingCall:
    """A tool call whose pieces are still arriving."""

    id: str | None = None
    name: str = ""
    arguments: str = ""


async def async_stream_completion(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    temperature: float,
    max_tokens: int,
    extra_body: dict[str, Any],
    stats: StreamStats,
    time_limit: float | None = None,
) -> AsyncGenerator[conversation.AssistantContentDeltaDict]:
    """Stream one completion as chat-log deltas.

    The whole request, from connecting to the stream's last byte, has `time_limit`
    seconds (by default the client's timeout: the agent's option); the reply has
    MAX_REPLY_BYTES. Raises BackendError for every failure, with what was received so
    far discarded by the chat log (it only stores a message once the stream ends).
    """
    kwargs = _request(
        model=model,
        messages=messages,
        tools=tools,
        temperature=temperature,
        max_tokens=max_tokens,
        extra_body=extra_body,
        stream=True,
    )
    tool_names = [tool["function"]["name"] for tool in tools or []]
    limit = _time_limit(client) if time_limit is None else time_limit
    deadline = asyncio.get_running_loop().time() + limit

    try:
        async with asyncio.timeout_at(deadline):
            stream = await client.chat.completions.create(**kwargs)
    except Exception as err:  # every failure is classified
        raise BackendError(classify_error(err), _describe(err, limit)) from err
    _cap_body(stream.response)

    think = ThinkFilter()
    text_stream = EncodableStream()
    pending: dict[Any, _PendingCall] = {}
    # A reply that opens like JSON may be a tool call written as text: hold it back.
    held_text: list[str] | None = None
    produced = False
    streamed = False  # whether any text already went out
    yield {"role": "assistant"}
    try:
        while True:
            try:
                # Each wait on the server ends by the request's deadline; the
                # listeners' time between chunks is never cut short.
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(stream)
            except StopAsyncIteration:
                break
            _record_timings(chunk, stats)
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            stats.finish_reason = choice.finish_reason or stats.finish_reason
            delta = choice.delta
            if delta is None:
                continue
            for call in delta.tool_calls or []:
                key = call.index if call.index is not None else (call.id or len(pending))
                entry = pending.setdefault(key, _PendingCall())
                entry.id = entry.id or call.id
                if call.function is not None:
                    # Servers send the name once; some repeat it whole in each chunk.
                    entry.name = entry.name or (call.function.name or "")
                    entry.arguments += call.function.arguments or ""
                _mark_first_token(stats)
            if not delta.content:
                continue
            text = think.feed(text_stream.feed(delta.content))
            if not text:
                continue
            _mark_first_token(stats)
            if held_text is None and not produced and text.lstrip()[:1] in ("{", "[", "<", "`"):
                held_text = []
            if held_text is not None:
                held_text.append(text)
                continue
            produced = produced or bool(text.strip())
            streamed = True
            yield {"content": text}
    except BackendError:
        raise
    except Exception as err:  # a stream can break in many ways
        kind = classify_error(err)
        if kind is not ErrorKind.TIMEOUT:
            kind = ErrorKind.BROKEN_STREAM
        if streamed or not _server_error_event(err):
            raise BackendError(kind, _describe(err, limit)) from err
        # llama.cpp's streaming tool-call parser sometimes gives up mid-stream
        # ("Invalid diff: now finding less tool calls!"); the same request without
        # streaming goes through another path. Nothing was delivered yet: ask again.
        LOGGER.warning("The server broke its stream (%s); asking again without streaming", err)
        message = await _async_complete_once(client, kwargs, err, stats, deadline)
        pending = {
            index: _PendingCall(call.id, call.function.name, call.function.arguments)
            for index, call in enumerate(message.tool_calls or [])
        }
        think = ThinkFilter()
        held_text = [think.feed(encodable(message.content or ""))]
    finally:
        stats.total_s = time.monotonic() - stats.started
        with contextlib.suppress(Exception):  # the connection is not left to the collector
            await stream.close()

    tail = think.flush()
    calls = [
        tool_input(entry.id, entry.name, entry.arguments)
        for entry in pending.values()  # first-seen order, i.e. the servers' index order
        if entry.name
    ]
    if held_text is not None:
        text = "".join(held_text) + tail
        tail = ""
        written_calls = None if calls else tool_calls_in_text(text, tool_names)
        if written_calls:
            LOGGER.debug("Read %d tool call(s) written as text", len(written_calls))
            calls = written_calls
        elif text.lstrip()[:1] in ("{", "["):
            # A sentence never opens with a brace: small models echo tool results as
            # JSON. Held back, it never reaches a listener (the Assist dialog, a voice
            # reply being spoken) nor the history. Calls written beside the same calls
            # made for real are their echo (llama.cpp leaves a call's text in the
            # content too): the calls run. Anything else: the model gave no answer.
            if not (calls and tool_calls_in_text(text, tool_names)):
                raise BackendError(ErrorKind.EMPTY_REPLY, f"a reply that is JSON: {text[:200]}")
            LOGGER.debug("Dropped the text of %d tool call(s) made for real", len(calls))
        elif text.strip():
            produced = True
            yield {"content": text}
    if tail:
        produced = produced or bool(tail.strip())
        yield {"content": tail}
    if calls:
        yield {"tool_calls": calls}
    elif not produced:
        raise BackendError(ErrorKind.EMPTY_REPLY, f"finish_reason={stats.finish_reason}")


def _time_limit(client: openai.AsyncOpenAI) -> float:
    """The client's timeout, as the limit of a whole request."""
    timeout = client.timeout
    if isinstance(timeout, int | float):
        return float(timeout)
    return float(getattr(timeout, "read", None) or DEFAULT_TIMEOUT)


def _describe(err: BaseException, limit: float) -> str:
    """What went wrong, for the log."""
    if isinstance(err, TimeoutError):  # the request's deadline
        return f"no complete reply within {limit:g} s"
    if isinstance(err, UnicodeDecodeError):
        return f"the server sent bytes that are not UTF-8 ({err})"
    return str(err)


class _CappedBody(httpx.AsyncByteStream):
    """A response's body that ends at MAX_REPLY_BYTES instead of growing without end.

    An iterator, not an async generator: one left unfinished (the reader stopped at
    `[DONE]`) would be closed by a task of its own whenever it is collected.
    """

    def __init__(self, body: httpx.AsyncByteStream) -> None:
        """Wrap the body as the client received it."""
        self._body = body
        self._parts: AsyncIterator[bytes] | None = None
        self._received = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        """Iterate over the body's bytes, up to the limit."""
        self._parts = aiter(self._body)
        return self

    async def __anext__(self) -> bytes:
        """The body's next bytes."""
        assert self._parts is not None
        part = await anext(self._parts)
        self._received += len(part)
        if self._received > MAX_REPLY_BYTES:
            raise ReplyTooLargeError(f"the reply passed {MAX_REPLY_BYTES} bytes: cut there")
        return part

    async def aclose(self) -> None:
        """Close the body."""
        await self._body.aclose()


def _cap_body(response: httpx.Response) -> None:
    """Cut the body of `response`, not read yet, at MAX_REPLY_BYTES.

    For a response of Home Assistant's shared httpx client (the one Majordome uses),
    before the openai client reads it: read only as far as the limit, never held whole.
    """
    if isinstance(response.stream, httpx.AsyncByteStream):
        response.stream = _CappedBody(response.stream)


async def _async_complete(client: openai.AsyncOpenAI, kwargs: dict[str, Any]) -> Any:
    """One non-streamed completion (the client's parse of it), its body capped too."""
    async with client.chat.completions.with_streaming_response.create(**kwargs) as response:
        _cap_body(response.http_response)
        return await response.parse()


def _server_error_event(err: BaseException) -> bool:
    """Whether the server itself sent an error inside a stream (not a network failure)."""
    return isinstance(err, openai.APIError) and not isinstance(
        err, openai.APIStatusError | openai.APIConnectionError
    )


async def _async_complete_once(
    client: openai.AsyncOpenAI,
    kwargs: dict[str, Any],
    first_error: Exception,
    stats: StreamStats,
    deadline: float,
) -> ChatCompletionMessage:
    """Ask again without streaming, by the same deadline.

    A failure reports the broken stream.
    """
    try:
        async with asyncio.timeout_at(deadline):
            completion: ChatCompletion = await _async_complete(client, {**kwargs, "stream": False})
        choice = completion.choices[0]
        stats.finish_reason = choice.finish_reason
        _record_timings(completion, stats)
        _mark_first_token(stats)
        message: ChatCompletionMessage = choice.message
        return message
    except Exception as err:  # noqa: BLE001 - a courtesy retry: report the first failure
        LOGGER.debug("The retry without streaming failed too: %s", err)
        raise BackendError(ErrorKind.BROKEN_STREAM, str(first_error)) from first_error


def _mark_first_token(stats: StreamStats) -> None:
    if stats.first_token_s is None:
        stats.first_token_s = time.monotonic() - stats.started


def _record_timings(chunk: ChatCompletionChunk | ChatCompletion, stats: StreamStats) -> None:
    """Read llama.cpp's `timings` (an extra field of the last chunk) when present."""
    timings = (chunk.model_extra or {}).get("timings")
    if isinstance(timings, dict):
        stats.cache_n = timings.get("cache_n", stats.cache_n)
        stats.prompt_n = timings.get("prompt_n", stats.prompt_n)


async def async_side_completion(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    max_tokens: int,
    time_limit: float,
    extra_body: dict[str, Any] | None = None,
) -> str:
    """Return the text of a short, non-streamed completion (checks, summaries).

    Callers pass the conversation so far as the prefix; with the same tools too when
    the next turn should find that prefix in a one-slot server's cache (the check).
    """
    kwargs = _request(
        model=model,
        messages=messages,
        tools=tools,
        temperature=0,
        max_tokens=max_tokens,
        extra_body=extra_body,
        stream=False,
    )
    try:
        async with asyncio.timeout(time_limit):
            completion = await _async_complete(client, kwargs)
    except Exception as err:  # every failure is classified
        raise BackendError(classify_error(err), _describe(err, time_limit)) from err
    # A server that ignores stream=False sends events, which the client returns as text.
    if not getattr(completion, "choices", None):
        raise BackendError(ErrorKind.EMPTY_REPLY, "no choices in the response")
    message = completion.choices[0].message
    if message.tool_calls and not message.content:
        names = ", ".join(call.function.name for call in message.tool_calls)
        raise BackendError(ErrorKind.EMPTY_REPLY, f"answered with a tool call ({names})")
    return encodable(without_think(message.content or "")).strip()
