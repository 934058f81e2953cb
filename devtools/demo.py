"""`scripts/demo`: a real Home Assistant with Majordome, a local model and voice.

Starts, each as its own child process on 127.0.0.1:
- the embedded llama.cpp server (devtools/llm.py),
- the Wyoming speech servers: faster-whisper (STT) and piper (TTS),
- Home Assistant itself (`python -m homeassistant`, the release of this venv: 2026.11 or
  2025.4, see scripts/demo), with its web frontend and
  the demo house (devtools/house.py) in a fresh configuration directory.

Then sets everything up the way a user would, through Home Assistant's own APIs:
onboarding (the owner account), the areas, which entities Assist may see, the two
Wyoming integrations and Majordome through their config flows (Majordome's makes the
server entry and its first agent; the household's options flow names the profile and
the speech servers, which it checks; the agent's subentry flow tunes it for the small
model), and two Assist pipelines with Majordome as their agent: "Majordome" (English, with STT and TTS; the preferred one)
and "Majordome (français)" (text).

Prints the URL and the login, then a readable log: what Home Assistant and Majordome
log, and every state change of the house. Ctrl-C (or SIGTERM) stops every child.
`scripts/ask "SENTENCE"` talks to it (devtools/ask.py reads the connection file).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
import contextlib
from dataclasses import dataclass
import json
from pathlib import Path
import re
import shutil
import signal
import sys
import time
from typing import Any
import urllib.error
import urllib.request

import aiohttp
import imageio_ffmpeg
import yaml

from custom_components.majordome.const import (
    CONF_FAST_MODEL,
    CONF_FAST_URL,
    CONF_MAX_TOKENS,
    CONF_PROFILE,
    CONF_STT_SERVER,
    CONF_TEMPERATURE,
    CONF_TIMEOUT,
    CONF_TTS_SERVER,
    CONF_TTS_VOICE,
    SUBENTRY_AGENT,
)
from devtools.child_process import ChildProcess, ChildServer, python_module
from devtools.ha_api import ApiError, HomeAssistantApi, Websocket
from devtools.hass_runner import CORE_CONFIG, INTEGRATION_SRC, REPO_ROOT
from devtools.house import ASSISTANT, HELPER_DOMAINS, house_config, house_devices
from devtools.llm import DEFAULT_MODEL_NAME, MODEL_NAMES, LocalLlmServer
from devtools.ports import free_port
from devtools.voice_servers import VOICE, PiperServer, WhisperServer
from homeassistant.const import CONF_NAME, __version__ as HA_VERSION

DEFAULT_DIR = REPO_ROOT / ".cache" / "demo"
CONNECTION_FILE = "connection.json"  # what scripts/ask and the tests read
USERNAME = "demo"
PASSWORD = "majordome"
OWNER = "Demo Owner"
AGENT_ID = "conversation.majordome"
PIPELINE_EN = "Majordome"
PIPELINE_FR = "Majordome (français)"
# The household, as the owner would write it in Majordome's options (it also keeps
# Majordome from asking for it on the first turn).
PROFILE = (
    "The Martin family: Claire and Paul, and their daughter Léa. They speak English and French."
)
HA_READY_TIMEOUT_S = 240.0  # first start on a slow machine: translations, frontend
HA_STOP_GRACE_S = 30.0
WARM_UP_TIMEOUT_S = 600.0
# The integrations onboarding sets up by itself (HA 2025.4's onboarding/views.py).
ONBOARDING_DOMAINS = ("google_translate", "met", "radio_browser", "shopping_list")
ONBOARDING_EXTRAS_WAIT_S = 3.0
ENTITY_WAIT_S = 60.0  # an entry's setup after its flow (Wyoming describes its server)

# Integrations of the demo's configuration.yaml besides the house. Not
# `default_config`: several of its integrations reach the network or need packages
# this venv does not have. These are what the frontend, Assist and voice need.
BASE_CONFIG: dict[str, Any] = {
    "frontend": {},
    "config": {},
    "conversation": {},
    "assist_pipeline": {},
    "person": {},
    "system_health": {},
    "logger": {
        "default": "warning",
        "logs": {
            "custom_components.majordome": "info",
            # Optional accelerators this machine does not have: told once, at start.
            "homeassistant.components.camera.img_util": "critical",
            "aiohttp_fast_zlib": "error",
            # Onboarding starts flows for integrations the demo does not install.
            "homeassistant.components.onboarding": "error",
        },
    },
}


@dataclass(frozen=True)
class Connection:
    """How to reach a running demo (written to CONNECTION_FILE, mode 0600)."""

    url: str
    token: str  # a long-lived access token of the owner
    agent_id: str  # Majordome's conversation entity
    pipeline_en: str
    pipeline_fr: str
    username: str = USERNAME
    password: str = PASSWORD

    @classmethod
    def load(cls, directory: Path) -> Connection:
        """Read the connection file of a running demo."""
        return cls(**json.loads((directory / CONNECTION_FILE).read_text()))

    def save(self, directory: Path) -> None:
        """Write it readable by its owner only: it holds a token."""
        path = directory / CONNECTION_FILE
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(json.dumps(self.__dict__, indent=2) + "\n")


def write_config(config_dir: Path, host: str, port: int) -> None:
    """A fresh configuration directory: configuration.yaml and custom_components."""
    if config_dir.exists():
        shutil.rmtree(config_dir)
    (config_dir / "custom_components").mkdir(parents=True)
    (config_dir / "custom_components" / "majordome").symlink_to(INTEGRATION_SRC)
    config: dict[str, Any] = {
        "homeassistant": {**CORE_CONFIG, "name": "Majordome Demo"},
        "http": {"server_host": host, "server_port": port},
        # HA's tts and wyoming need ffmpeg; this one comes from PyPI (imageio-ffmpeg).
        "ffmpeg": {"ffmpeg_bin": imageio_ffmpeg.get_ffmpeg_exe()},
        **BASE_CONFIG,
        **house_config("demo"),
    }
    (config_dir / "configuration.yaml").write_text(
        yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
    )


class HomeAssistantServer(ChildServer):
    """`python -m homeassistant` on a configuration directory, as a child process."""

    def __init__(self, config_dir: Path, url: str, on_line: Callable[[str], object]) -> None:
        """`url` is where its http integration listens (from configuration.yaml)."""
        self.config_dir = config_dir
        self.url = url
        self._on_line = on_line
        self._child = ChildProcess("Home Assistant", stop_grace=HA_STOP_GRACE_S)

    def start(self) -> None:
        """Spawn it and wait until its HTTP server answers."""
        # --skip-pip: everything it needs is in this venv; it must not install anything.
        cmd = python_module(
            sys.executable, "homeassistant", "-c", str(self.config_dir), "--skip-pip"
        )
        self._child.start(cmd, on_line=self._on_line, cwd=self.config_dir)
        try:
            self._child.wait_ready(
                self._probe, HA_READY_TIMEOUT_S, retry_on=(OSError,), interval=0.5
            )
        except BaseException:
            self.stop()
            raise

    def _probe(self) -> bool | None:
        try:
            with urllib.request.urlopen(f"{self.url}/api/onboarding", timeout=5) as response:
                return True if response.status == 200 else None
        except urllib.error.HTTPError:
            return None

    @property
    def running(self) -> bool:
        """Whether the process is still alive."""
        return self._child.running


# --- Setting the house up through Home Assistant's APIs ------------------------------


async def async_onboard(api: HomeAssistantApi) -> None:
    """Create the owner and finish onboarding, as the frontend's onboarding does."""
    client_id = f"{api.url}/"
    user = await api.rest(
        "POST",
        "/api/onboarding/users",
        {
            "client_id": client_id,
            "name": OWNER,
            "username": USERNAME,
            "password": PASSWORD,
            "language": "en",
        },
    )
    tokens = await api.rest(
        "POST",
        "/auth/token",
        form={
            "grant_type": "authorization_code",
            "code": user["auth_code"],
            "client_id": client_id,
        },
    )
    api.token = tokens["access_token"]
    await api.rest("POST", "/api/onboarding/core_config")
    await api.rest("POST", "/api/onboarding/analytics")
    await api.rest(
        "POST", "/api/onboarding/integration", {"client_id": client_id, "redirect_uri": client_id}
    )
    await async_remove_onboarding_extras(api)


async def async_remove_onboarding_extras(api: HomeAssistantApi) -> None:
    """Remove what onboarding adds on its own (a Google TTS, a shopping list...).

    They are not part of the demo house: a shopping list would add its intents to
    Assist's tools, Google's TTS needs the internet. Onboarding starts their flows in
    the background; each ends within moments (or fails: its package is not installed).
    """
    deadline = time.monotonic() + ONBOARDING_EXTRAS_WAIT_S
    while time.monotonic() < deadline:
        for entry in await api.rest("GET", "/api/config/config_entries/entry"):
            if entry["domain"] in ONBOARDING_DOMAINS and entry["source"] == "onboarding":
                await api.rest("DELETE", f"/api/config/config_entries/entry/{entry['entry_id']}")
        await asyncio.sleep(0.5)


async def async_setup_areas_and_exposure(ws: Websocket) -> None:
    """The house's areas (reusing onboarding's where names match) and Assist exposure."""
    areas, devices = house_devices("demo")
    existing = {a["name"]: a for a in await ws.call("config/area_registry/list")}
    wanted = {area.name for area in areas}
    aliases = {alias for area in areas for alias in area.aliases}
    for name, area in existing.items():
        # Onboarding made "Living Room", which is the Salon's alias here: one room.
        if name not in wanted and name in aliases:
            await ws.call("config/area_registry/delete", area_id=area["area_id"])
    area_ids: dict[str, str] = {}
    for area in areas:
        if area.name in existing:
            area_ids[area.name] = existing[area.name]["area_id"]
            await ws.call(
                "config/area_registry/update",
                area_id=area_ids[area.name],
                aliases=sorted(area.aliases),
            )
        else:
            created = await ws.call(
                "config/area_registry/create", name=area.name, aliases=sorted(area.aliases)
            )
            area_ids[area.name] = created["area_id"]
    for device in devices:
        await ws.call(
            "config/entity_registry/update",
            entity_id=device.entity_id,
            area_id=area_ids[device.area],
        )
    for exposed in (True, False):
        await ws.call(
            "homeassistant/expose_entity",
            assistants=[ASSISTANT],
            entity_ids=[d.entity_id for d in devices if d.exposed is exposed],
            should_expose=exposed,
        )
    # The helpers that hold the devices' states are neither for Assist nor for the
    # dashboard.
    states = await ws.call("get_states")
    helpers = [s["entity_id"] for s in states if s["entity_id"].split(".")[0] in HELPER_DOMAINS]
    for helper in helpers:
        await ws.call("config/entity_registry/update", entity_id=helper, hidden_by="user")
    await ws.call(
        "homeassistant/expose_entity",
        assistants=[ASSISTANT],
        entity_ids=helpers,
        should_expose=False,
    )


async def async_config_flow(api: HomeAssistantApi, handler: str, *steps: dict[str, Any]) -> Any:
    """Run a config flow through the REST API, one user_input per step; the entry."""
    result = await api.rest("POST", "/api/config/config_entries/flow", {"handler": handler})
    for user_input in steps:
        if result["type"] != "form":
            break
        result = await api.rest(
            "POST", f"/api/config/config_entries/flow/{result['flow_id']}", user_input
        )
    if result["type"] != "create_entry":
        raise ApiError(f"{handler} config flow ended with {result}")
    return result["result"]


def shown_values(form: dict[str, Any]) -> dict[str, Any]:
    """What a form shows filled in: its suggested values and defaults."""
    shown: dict[str, Any] = {}
    for field in form["data_schema"]:
        if "suggested_value" in (field.get("description") or {}):
            shown[field["name"]] = field["description"]["suggested_value"]
        elif "default" in field:
            shown[field["name"]] = field["default"]
    return shown


async def async_options_flow(api: HomeAssistantApi, entry_id: str, changes: dict[str, Any]) -> None:
    """Submit an entry's options form as the frontend would: shown values plus changes."""
    form = await api.rest("POST", "/api/config/config_entries/options/flow", {"handler": entry_id})
    result = await api.rest(
        "POST",
        f"/api/config/config_entries/options/flow/{form['flow_id']}",
        {**shown_values(form), **changes},
    )
    if result["type"] != "create_entry":
        raise ApiError(f"options flow of {entry_id} ended with {result}")


async def async_agent_flow(
    api: HomeAssistantApi, entry_id: str, subentry_id: str, changes: dict[str, Any]
) -> None:
    """Reconfigure an agent as the frontend would: each step's shown values plus changes."""
    url = "/api/config/config_entries/subentries/flow"
    result = await api.rest(
        "POST", url, {"handler": [entry_id, SUBENTRY_AGENT], "subentry_id": subentry_id}
    )
    while result["type"] == "form":
        step = {**shown_values(result), **changes}
        fields = {field["name"] for field in result["data_schema"]}
        result = await api.rest(
            "POST",
            f"{url}/{result['flow_id']}",
            {key: value for key, value in step.items() if key in fields},
        )
    if result.get("reason") != "reconfigure_successful":
        raise ApiError(f"agent flow of {subentry_id} ended with {result}")


async def async_entity_of(ws: Websocket, entry_id: str, domain: str) -> str:
    """The entity of `domain` that a config entry created (its setup runs in the background)."""
    deadline = time.monotonic() + ENTITY_WAIT_S
    while True:
        for entity in await ws.call("config/entity_registry/list"):
            if entity["config_entry_id"] == entry_id and entity["entity_id"].startswith(
                domain + "."
            ):
                return str(entity["entity_id"])
        if time.monotonic() > deadline:
            raise ApiError(f"entry {entry_id} has no {domain} entity after {ENTITY_WAIT_S} s")
        await asyncio.sleep(0.2)


async def async_create_pipeline(
    ws: Websocket,
    name: str,
    language: str,
    agent: str,
    *,
    stt: str | None = None,
    tts: tuple[str, str, str] | None = None,  # engine, language, voice
) -> dict[str, Any]:
    """An Assist pipeline with `agent` as its conversation agent (no wake word)."""
    tts_engine, tts_language, tts_voice = tts or (None, None, None)
    pipeline: dict[str, Any] = await ws.call(
        "assist_pipeline/pipeline/create",
        name=name,
        language=language,
        conversation_engine=agent,
        conversation_language=language,
        stt_engine=stt,
        stt_language=language if stt else None,
        tts_engine=tts_engine,
        tts_language=tts_language,
        tts_voice=tts_voice,
        wake_word_entity=None,
        wake_word_id=None,
    )
    return pipeline


async def async_setup_demo(
    api: HomeAssistantApi,
    llm: LocalLlmServer,
    stt: WhisperServer,
    tts: PiperServer,
    fast: LocalLlmServer | None = None,
) -> Connection:
    """Onboarding, the house, the integrations and the pipelines; how to connect.

    With `fast`, the agent runs the cascade: simple requests to that model, the rest
    to `llm` (the main model).
    """
    cascade = {} if fast is None else {CONF_FAST_MODEL: fast.model, CONF_FAST_URL: fast.base_url}
    await async_onboard(api)
    stt_entry = await async_config_flow(api, "wyoming", {"host": stt.host, "port": stt.port})
    tts_entry = await async_config_flow(api, "wyoming", {"host": tts.host, "port": tts.port})
    majordome = await async_config_flow(
        api, "majordome", {"url": llm.base_url}, {"model": llm.model}
    )
    # The household, shared by the server's agents.
    await async_options_flow(
        api,
        majordome["entry_id"],
        {
            CONF_PROFILE: PROFILE,
            CONF_STT_SERVER: f"{stt.host}:{stt.port}",
            CONF_TTS_SERVER: f"{tts.host}:{tts.port}",
            CONF_TTS_VOICE: VOICE,
        },
    )
    async with api.websocket() as ws:
        await async_confirm_http_config(ws)
        # The agent the config flow made with the server, tuned in its own flow.
        [agent_entry] = await ws.call(
            "config_entries/subentries/list", entry_id=majordome["entry_id"]
        )
        await async_agent_flow(
            api,
            majordome["entry_id"],
            agent_entry["subentry_id"],
            {
                CONF_NAME: "Majordome",
                # The embedded model is small: no sampling, short answers.
                CONF_TEMPERATURE: 0.0,
                CONF_MAX_TOKENS: 128,
                # A first read of the whole prompt takes tens of seconds on a busy CPU.
                CONF_TIMEOUT: 240,
                **cascade,
            },
        )
        await async_setup_areas_and_exposure(ws)
        # As a user would in the entity settings: a name to find it by.
        agent = AGENT_ID
        await ws.call(
            "config/entity_registry/update",
            entity_id=await async_entity_of(ws, majordome["entry_id"], "conversation"),
            new_entity_id=agent,
            name="Majordome",
        )
        stt_entity = await async_entity_of(ws, stt_entry["entry_id"], "stt")
        tts_entity = await async_entity_of(ws, tts_entry["entry_id"], "tts")
        english = await async_create_pipeline(
            ws, PIPELINE_EN, "en", agent, stt=stt_entity, tts=(tts_entity, "en_US", VOICE)
        )
        # No French voice or speech model ships on PyPI: the French pipeline is typed.
        french = await async_create_pipeline(ws, PIPELINE_FR, "fr", agent)
        await ws.call("assist_pipeline/pipeline/set_preferred", pipeline_id=english["id"])
        token = await ws.call(
            "auth/long_lived_access_token", client_name="Majordome demo (scripts/ask)", lifespan=365
        )
    return Connection(api.url, token, agent, english["id"], french["id"])


async def async_confirm_http_config(ws: Websocket) -> None:
    """Confirm the HTTP settings, as a user does once Home Assistant is reachable.

    Home Assistant 2026.10+ takes configuration.yaml's `http:` into storage as a trial
    and, unless it is confirmed within 5 minutes, restarts with its defaults. Releases
    before have no such command; the one without a trial (same settings) has nothing
    pending.
    """
    try:
        await ws.call("http/config/promote")
    except ApiError as err:
        if "unknown_command" not in str(err) and "No pending" not in str(err):
            raise


# --- The readable log -----------------------------------------------------------------


def say(source: str, line: str) -> None:
    """One line of the demo's log, prefixed with the time and where it comes from."""
    print(f"{time.strftime('%H:%M:%S')} {source:<9} {line.rstrip()}", flush=True)


def house_entity_ids() -> frozenset[str]:
    """The demo house's devices: the entities whose changes the log and scripts/ask show."""
    _, devices = house_devices("demo")
    return frozenset(device.entity_id for device in devices)


def describe_change(event: dict[str, Any], watched: frozenset[str]) -> str | None:
    """A state change of the house as one line, e.g. "Kitchen Light: off -> on"."""
    data = event["data"]
    new, old = data.get("new_state"), data.get("old_state")
    if not new or not old or new["entity_id"] not in watched:
        return None
    name = new["attributes"].get("friendly_name", new["entity_id"])
    if new["state"] != old["state"]:
        return f"{name}: {old['state']} -> {new['state']}"
    for attribute in ("brightness", "current_position", "temperature", "volume_level"):
        before, after = old["attributes"].get(attribute), new["attributes"].get(attribute)
        if before != after:
            return f"{name}: {attribute} {before} -> {after}"
    return None


async def async_watch(api: HomeAssistantApi) -> None:
    """Log the house's state changes and ignored utterances while HA runs."""
    watched = house_entity_ids()

    def on_state(event: dict[str, Any]) -> None:
        if line := describe_change(event, watched):
            say("house", line)

    def on_ignored(event: dict[str, Any]) -> None:
        data = event["data"]
        heard = repr(data["text"]) if "text" in data else f"{data.get('length')} characters"
        say("majordome", f"ignored {heard} ({data.get('reason')})")

    async with api.websocket() as ws:
        await ws.call("subscribe_events", event_type="state_changed", on_event=on_state)
        await ws.call(
            "subscribe_events", event_type="majordome_utterance_ignored", on_event=on_ignored
        )
        await ws.closed()


# --- Main ------------------------------------------------------------------------------


class HomeAssistantLog:
    """Home Assistant's console log, made readable: one line per record, no tracebacks.

    The full log, tracebacks included, is in the configuration directory's
    home-assistant.log. Onboarding starts config flows for integrations the demo does
    not install (met, radio_browser...): their failures are expected and not shown.
    """

    def __init__(self, log_file: Path) -> None:
        """`log_file` is named when a record's details are left out."""
        self._log_file = log_file
        self._held: list[str] = []  # a task error, shown once its traceback is known
        self._in_details = False

    def __call__(self, line: str) -> None:
        """One line of HA's output (called from the pump thread)."""
        text = line.rstrip()
        if not _RECORD_HEAD.match(text):  # a traceback or a continuation line
            if self._held:
                self._held.append(text)
            elif text and not self._in_details:
                say("ha", f"  (details in {self._log_file})")
            self._in_details = True
            return
        self._release()
        self._in_details = False
        record = text[24:]  # the demo's own prefix has the time
        if _EXPECTED_NOISE.search(record):
            self._in_details = True  # and its traceback
        elif "Task exception was never retrieved" in record:
            self._held = [record]
        else:
            say("ha", record)

    def _release(self) -> None:
        held, self._held = self._held, []
        if held and not _EXPECTED_NOISE.search("\n".join(held)):
            say("ha", held[0])
            say("ha", f"  (details in {self._log_file})")


_RECORD_HEAD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ")
_EXPECTED_NOISE = re.compile(
    rf"\b({'|'.join(ONBOARDING_DOMAINS)})\b"
    r"|Skipping pip installation|has not been tested by Home Assistant"
)


async def async_warm_up(api: HomeAssistantApi, connection: Connection) -> None:
    """One unanswered-for turn, so the server has read the prompt before the first visitor."""
    started = time.monotonic()
    say("demo", "warming the model up (its first read of the prompt)")
    try:
        await api.rest(
            "POST",
            "/api/conversation/process",
            {"text": "Hello", "language": "en", "agent_id": connection.agent_id},
            timeout_s=WARM_UP_TIMEOUT_S,
        )
    except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as err:
        say("demo", f"warm-up failed: {err!r}")
    else:
        say("demo", f"model warmed up in {time.monotonic() - started:.0f} s")


async def async_serve(
    url: str,
    directory: Path,
    host: str,
    servers: tuple[LocalLlmServer, WhisperServer, PiperServer],
    started: float,
    *,
    fast: LocalLlmServer | None = None,
) -> None:
    """Set the running Home Assistant up, then log until it exits (or Ctrl-C)."""
    async with HomeAssistantApi(url) as api:
        connection = await async_setup_demo(api, *servers, fast=fast)
        connection.save(directory)
        banner(connection, time.monotonic() - started, host)
        warm_up = asyncio.create_task(async_warm_up(api, connection))
        try:
            await async_watch(api)
        finally:  # Ctrl-C or HA gone: the warm-up may still be waiting on the model
            warm_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warm_up


def run(args: argparse.Namespace) -> None:
    """Start the children from this thread (each dies with it), then serve."""
    directory: Path = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    connection_file = directory / CONNECTION_FILE
    connection_file.unlink(missing_ok=True)
    port = args.port or free_port()
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{port}"
    started = time.monotonic()
    with contextlib.ExitStack() as children:
        children.callback(say, "demo", "stopped")
        children.callback(connection_file.unlink, missing_ok=True)
        say("demo", "starting the local model, speech-to-text and text-to-speech servers")
        servers = (
            LocalLlmServer(ctx=args.ctx, model_name=args.main_model),
            WhisperServer(),
            PiperServer(),
        )
        # The cascade: the embedded model takes the simple requests, the bigger one the rest.
        fast = None if args.main_model == DEFAULT_MODEL_NAME else LocalLlmServer(ctx=args.ctx)
        for server in (*servers, *([fast] if fast else [])):
            children.enter_context(server)
        llm, stt, tts = servers
        say("demo", f"model {llm.model} at {llm.base_url}")
        if fast is not None:
            say("demo", f"fast model {fast.model} at {fast.base_url}")
        say("demo", f"speech-to-text {stt.uri}, text-to-speech {tts.uri} (voice {VOICE})")
        config_dir = directory / "config"
        write_config(config_dir, args.host, port)
        say("demo", f"starting Home Assistant {HA_VERSION} in {config_dir}")
        ha_log = HomeAssistantLog(config_dir / "home-assistant.log")
        hass = children.enter_context(HomeAssistantServer(config_dir, url, ha_log))
        children.callback(say, "demo", "stopping Home Assistant and the servers")
        asyncio.run(async_serve(url, directory, args.host, servers, started, fast=fast))
        if not hass.running:
            say("demo", "Home Assistant exited")


def banner(connection: Connection, elapsed_s: float, host: str) -> None:
    """What a newcomer needs to walk in."""
    lines = [
        f"Majordome demo ready in {elapsed_s:.0f} s",
        f"  Open      {connection.url}",
        f"  Log in    {connection.username} / {connection.password}",
        "  Talk      the Assist button (top right of the dashboard), or the Majordome"
        " page in the sidebar",
        '  Ask       scripts/ask "turn on the kitchen light"',
        "  Stop      Ctrl-C",
    ]
    if host not in ("127.0.0.1", "localhost", "::1"):
        lines.append(
            f"  WARNING   listening on {host}: change the password before others can reach it"
        )
    width = max(len(line) for line in lines)
    print("\n" + "=" * width + "\n" + "\n".join(lines) + "\n" + "=" * width + "\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run the demo until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8123, help="HTTP port (0: any free one)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: loopback only)"
    )
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="where the demo keeps its files"
    )
    parser.add_argument("--ctx", type=int, default=8192, help="the model's context size")
    parser.add_argument(
        "--main-model",
        choices=MODEL_NAMES,
        default=DEFAULT_MODEL_NAME,
        help="the agent's model; another than the embedded 0.5b makes 0.5b its fast model",
    )
    args = parser.parse_args(argv)
    # SIGTERM stops the demo as Ctrl-C does: the children are stopped on the way out.
    # SIGINT too, even when started in the background (`scripts/demo &` in a script),
    # where the shell makes the child ignore it and Python then leaves it ignored.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.default_int_handler)
    try:
        run(args)
    except KeyboardInterrupt:
        return 0
    return 1  # Home Assistant stopped by itself


if __name__ == "__main__":
    sys.exit(main())
