"""Setup of a Majordome server, the options of its household, and its agents.

- The server (config flow): step 1 asks for the server and checks it by listing its
  models; step 2 picks the first agent's model (free text when the server lists none).
  One entry per server URL. Reconfiguring it changes the URL or the key, nothing else.
- The household (options flow): its profile and the voice endpoint's speech servers,
  shared by every agent of the server.
- The agents (subentry flow, `conversation`): a model from the server's list, then the
  agent's name, instructions, tools, sampling and limits. Added, or reconfigured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import partial
from typing import Any

import openai
import voluptuous as vol

from homeassistant.config_entries import (
    SOURCE_RECONFIGURE,
    ConfigEntry,
    ConfigEntryState,
    ConfigFlow,
    ConfigFlowResult,
    ConfigSubentryData,
    ConfigSubentryFlow,
    OptionsFlow,
    SubentryFlowResult,
)
from homeassistant.const import CONF_API_KEY, CONF_MODEL, CONF_NAME, CONF_URL
from homeassistant.core import HomeAssistant, callback
from homeassistant.data_entry_flow import AbortFlow
from homeassistant.helpers import selector
from homeassistant.helpers.httpx_client import get_async_client

from .backend import (
    BackendError,
    ErrorKind,
    async_list_models,
    create_client,
    key_for,
    public_url,
    same_server,
)
from .const import (
    CONF_ALLOWED_SCRIPTS,
    CONF_FAST_MODEL,
    CONF_FAST_URL,
    CONF_IGNORED_EVENT_TEXT,
    CONF_LLM_HASS_API,
    CONF_LOCAL_INTENTS,
    CONF_MAX_HISTORY,
    CONF_MAX_ITERATIONS,
    CONF_MAX_TOKENS,
    CONF_MEMORY_EVERY,
    CONF_MEMORY_FROM_AUTOMATIONS,
    CONF_PROFILE,
    CONF_PROMPT,
    CONF_SCREEN_LLM,
    CONF_SCREEN_TYPED,
    CONF_SCREEN_VOICE,
    CONF_STT_SERVER,
    CONF_TEMPERATURE,
    CONF_TIMEOUT,
    CONF_TTS_SERVER,
    CONF_TTS_VOICE,
    CONNECT_TIMEOUT,
    DEFAULT_ALLOWED_SCRIPTS,
    DEFAULT_LOCAL_INTENTS,
    DEFAULT_MAX_HISTORY,
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_MAX_TOKENS,
    DEFAULT_MEMORY_EVERY,
    DEFAULT_TEMPERATURE,
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    DOMAIN,
    LLM_API_ASSIST,
    LLM_API_NONE,
    LOGGER,
    MAX_PROFILE_CHARS,
    MEMORY_KEY,
    SPEECH_OPTIONS,
    SUBENTRY_AGENT,
)
from .memory import Memory, MemoryStore, Onboarding
from .metacognition import SCRIPTS
from .migration import VERSION
from .models import MajordomeConfigEntry
from .prompt import default_instructions
from .voice.wyoming_client import ServerAddress, SpeechError, async_describe, installed_voices

# A new agent's options (its subentry's data, with its model).
DEFAULT_OPTIONS: dict[str, Any] = {
    CONF_LLM_HASS_API: LLM_API_ASSIST,
    CONF_TEMPERATURE: DEFAULT_TEMPERATURE,
    CONF_MAX_TOKENS: DEFAULT_MAX_TOKENS,
    CONF_MAX_ITERATIONS: DEFAULT_MAX_ITERATIONS,
    CONF_MAX_HISTORY: DEFAULT_MAX_HISTORY,
    CONF_TIMEOUT: DEFAULT_TIMEOUT,
    CONF_MEMORY_EVERY: DEFAULT_MEMORY_EVERY,
    CONF_LOCAL_INTENTS: DEFAULT_LOCAL_INTENTS,
    CONF_SCREEN_VOICE: True,
    CONF_SCREEN_TYPED: False,
    CONF_SCREEN_LLM: False,
    CONF_ALLOWED_SCRIPTS: DEFAULT_ALLOWED_SCRIPTS,
}

_ERRORS = {
    ErrorKind.CANNOT_CONNECT: "cannot_connect",
    ErrorKind.TIMEOUT: "timeout",
    ErrorKind.INVALID_AUTH: "invalid_auth",
}
# The same failures, said of the fast model's server on the agent's form.
_FAST_ERRORS = {
    "cannot_connect": "fast_cannot_connect",
    "timeout": "fast_timeout",
    "invalid_auth": "fast_invalid_auth",
    "unknown": "fast_unknown",
}

SERVER_SCHEMA = vol.Schema(
    {
        vol.Required(CONF_URL): selector.TextSelector(
            selector.TextSelectorConfig(type=selector.TextSelectorType.URL)
        ),
        vol.Optional(CONF_API_KEY): selector.TextSelector(
            selector.TextSelectorConfig(type=selector.TextSelectorType.PASSWORD)
        ),
    }
)


def _number(minimum: float, maximum: float, step: float = 1) -> selector.NumberSelector:
    return selector.NumberSelector(
        selector.NumberSelectorConfig(
            min=minimum, max=maximum, step=step, mode=selector.NumberSelectorMode.BOX
        )
    )


# An agent's options, as its form shows them (its name first, its model is the step before).
AGENT_SCHEMA = vol.Schema(
    {
        vol.Required(CONF_NAME): selector.TextSelector(),
        vol.Optional(CONF_PROMPT): selector.TemplateSelector(),
        vol.Required(CONF_LLM_HASS_API): selector.SelectSelector(
            selector.SelectSelectorConfig(
                options=[LLM_API_ASSIST, LLM_API_NONE], translation_key=CONF_LLM_HASS_API
            )
        ),
        vol.Required(CONF_TEMPERATURE): _number(0, 2, 0.05),
        vol.Required(CONF_MAX_TOKENS): vol.All(_number(16, 8192), vol.Coerce(int)),
        vol.Required(CONF_MAX_ITERATIONS): vol.All(_number(1, 30), vol.Coerce(int)),
        vol.Required(CONF_MAX_HISTORY): vol.All(_number(0, 100), vol.Coerce(int)),
        vol.Required(CONF_TIMEOUT): vol.All(_number(5, 600), vol.Coerce(int)),
        # The cascade (routing.py): empty fast model, no cascade; empty URL, the entry's server.
        vol.Optional(CONF_FAST_MODEL): selector.TextSelector(),
        vol.Optional(CONF_FAST_URL): selector.TextSelector(
            selector.TextSelectorConfig(type=selector.TextSelectorType.URL)
        ),
        vol.Required(CONF_MEMORY_EVERY): vol.All(_number(0, 100), vol.Coerce(int)),
        # Optional: agents saved before it existed have it on.
        vol.Optional(CONF_LOCAL_INTENTS, default=DEFAULT_LOCAL_INTENTS): selector.BooleanSelector(),
        vol.Required(CONF_SCREEN_VOICE): selector.BooleanSelector(),
        vol.Required(CONF_SCREEN_TYPED): selector.BooleanSelector(),
        vol.Required(CONF_SCREEN_LLM): selector.BooleanSelector(),
        vol.Required(CONF_ALLOWED_SCRIPTS): selector.SelectSelector(
            selector.SelectSelectorConfig(
                options=list(SCRIPTS),
                multiple=True,
                mode=selector.SelectSelectorMode.DROPDOWN,
                translation_key=CONF_ALLOWED_SCRIPTS,
            )
        ),
        # Off unless set (agents made before it have no such key).
        vol.Optional(CONF_IGNORED_EVENT_TEXT): selector.BooleanSelector(),
    }
)

# The household's options: what every agent of the server shares.
HOUSEHOLD_SCHEMA = vol.Schema(
    {
        vol.Optional(CONF_PROFILE): selector.TextSelector(
            selector.TextSelectorConfig(multiline=True)
        ),
        vol.Optional(CONF_MEMORY_FROM_AUTOMATIONS): selector.BooleanSelector(),
        vol.Optional(CONF_STT_SERVER): selector.TextSelector(),
        vol.Optional(CONF_TTS_SERVER): selector.TextSelector(),
        vol.Optional(CONF_TTS_VOICE): selector.TextSelector(),
    }
)


# --- The server's models, shared by the setup and the agents' flows -----------------


async def async_server_models(client: openai.AsyncOpenAI) -> tuple[list[str], dict[str, str]]:
    """List the server's models; return them and the form errors (none when it answered).

    A server without a /models endpoint lists nothing: the model is then typed by hand.
    """
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            return await async_list_models(client), {}
    except TimeoutError:
        return [], {"base": "timeout"}
    except BackendError as err:
        if err.kind is ErrorKind.MODEL_NOT_FOUND:
            return [], {}
        if err.kind not in _ERRORS:
            LOGGER.warning("Unexpected answer listing models: %s", err)
        return [], {"base": _ERRORS.get(err.kind, "unknown")}
    except Exception:  # noqa: BLE001 - the form says "unknown", the log says why
        LOGGER.exception("Unexpected error listing models")
        return [], {"base": "unknown"}


async def async_check_server(
    hass: HomeAssistant, url: str, api_key: str | None
) -> tuple[list[str], dict[str, str]]:
    """List the models of the server at `url` with a client made for the check."""
    client = await hass.async_add_executor_job(
        partial(create_client, url, api_key, get_async_client(hass), CONNECT_TIMEOUT)
    )
    return await async_server_models(client)


def _picked_model(
    user_input: dict[str, Any] | None, models: list[str]
) -> tuple[str, dict[str, str]]:
    """The model chosen or typed ("" until there is one), and the model form's errors."""
    if user_input is not None:
        if model := user_input[CONF_MODEL].strip():
            return model, {}
        return "", {"base": "model_required"}
    # Said on the first showing: the user has to type the name.
    return "", {} if models else {"base": "no_models"}


def _model_schema(models: list[str], current: str | None) -> vol.Schema:
    """Pick among the listed models (or type another), the current one proposed."""
    field: selector.Selector[Any] = (
        selector.SelectSelector(
            selector.SelectSelectorConfig(
                options=models, custom_value=True, mode=selector.SelectSelectorMode.DROPDOWN
            )
        )
        if models
        else selector.TextSelector()
    )
    default = current or (models[0] if models else "")
    return vol.Schema({vol.Required(CONF_MODEL, default=default): field})


def _trimmed_fast_model(user_input: dict[str, Any]) -> dict[str, Any]:
    """The fast model and its server's URL trimmed, and absent when blank."""
    options = dict(user_input)
    for key in (CONF_FAST_MODEL, CONF_FAST_URL):
        if value := str(options.pop(key, None) or "").strip():
            options[key] = value
    return options


# --- The server ---------------------------------------------------------------------


class MajordomeConfigFlow(ConfigFlow, domain=DOMAIN):
    """Set up Majordome for one server, with its first agent."""

    VERSION = VERSION

    def __init__(self) -> None:
        """Start with no server."""
        self._server: dict[str, Any] = {}
        self._models: list[str] = []

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the server."""
        return await self._async_step_server("user", user_input, {CONF_URL: DEFAULT_URL})

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the server's URL or key; its agents and memory stay."""
        return await self._async_step_server(
            "reconfigure", user_input, dict(self._get_reconfigure_entry().data)
        )

    async def _async_step_server(
        self, step_id: str, user_input: dict[str, Any] | None, suggested: dict[str, Any]
    ) -> ConfigFlowResult:
        errors: dict[str, str] = {}
        if user_input is not None:
            user_input = {**user_input, CONF_URL: user_input[CONF_URL].strip()}
            if not user_input[CONF_URL].startswith(("http://", "https://")):
                errors = {CONF_URL: "invalid_url"}
            else:
                self._abort_if_server_configured(user_input[CONF_URL])
                errors = await self._async_check_server(user_input)
            if not errors:
                self._server = user_input
                if self.source == SOURCE_RECONFIGURE:
                    return self._async_update_server()
                return await self.async_step_model()
            suggested = user_input
        return self.async_show_form(
            step_id=step_id,
            data_schema=self.add_suggested_values_to_schema(SERVER_SCHEMA, suggested),
            errors=errors,
        )

    def _abort_if_server_configured(self, url: str) -> None:
        """One entry per server: its agents are added to it."""
        reconfigured = (
            self._get_reconfigure_entry().entry_id if self.source == SOURCE_RECONFIGURE else None
        )
        for entry in self._async_current_entries(include_ignore=False):
            if entry.entry_id != reconfigured and same_server(entry.data[CONF_URL], url):
                raise AbortFlow("already_configured")

    async def _async_check_server(self, server: dict[str, Any]) -> dict[str, str]:
        """List the server's models; return the form errors (none when it answered)."""
        self._models, errors = await async_check_server(
            self.hass, server[CONF_URL], server.get(CONF_API_KEY)
        )
        return errors

    def _async_update_server(self) -> ConfigFlowResult:
        """Save the new URL and key; the rest of the data (the memory) is kept."""
        entry = self._get_reconfigure_entry()
        kept = {k: v for k, v in entry.data.items() if k not in (CONF_URL, CONF_API_KEY)}
        return self.async_update_reload_and_abort(
            entry, title=public_url(self._server[CONF_URL]), data={**kept, **self._server}
        )

    async def async_step_model(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Pick the first agent's model, and create the server with that agent."""
        model, errors = _picked_model(user_input, self._models)
        if model:
            first_agent = ConfigSubentryData(
                subentry_type=SUBENTRY_AGENT,
                title=model,
                data={CONF_MODEL: model, **DEFAULT_OPTIONS},
                unique_id=None,
            )
            return self.async_create_entry(
                title=public_url(self._server[CONF_URL]),
                data=self._server,
                subentries=[first_agent],
            )
        return self.async_show_form(
            step_id="model",
            data_schema=_model_schema(self._models, None),
            errors=errors,
            description_placeholders={"url": public_url(self._server[CONF_URL])},
        )

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> OptionsFlow:
        """Return the household's options flow."""
        return MajordomeOptionsFlow()

    @classmethod
    @callback
    def async_get_supported_subentry_types(
        cls, config_entry: ConfigEntry
    ) -> dict[str, type[ConfigSubentryFlow]]:
        """Agents are the server's subentries."""
        return {SUBENTRY_AGENT: AgentSubentryFlow}


# --- The household ------------------------------------------------------------------


async def async_check_voice(options: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Ask each Wyoming server what it offers; return (form errors, their placeholders)."""
    errors: dict[str, str] = {}
    placeholders = {"voices": ""}
    for key, offers, missing in (
        (CONF_STT_SERVER, "asr", "not_asr"),
        (CONF_TTS_SERVER, "tts", "not_tts"),
    ):
        if not (text := (options.get(key) or "").strip()):
            continue
        try:
            info = await async_describe(ServerAddress.parse(text))
        except ValueError:
            errors[key] = "invalid_address"
            continue
        except SpeechError as err:
            LOGGER.debug("Describe failed for %s: %s", text, err)
            errors[key] = "speech_cannot_connect"
            continue
        if not getattr(info, offers):
            errors[key] = missing
        elif key == CONF_TTS_SERVER and (voice := (options.get(CONF_TTS_VOICE) or "").strip()):
            voices = installed_voices(info)
            if voice not in voices:
                errors[CONF_TTS_VOICE] = "voice_not_found"
                placeholders["voices"] = ", ".join(voices[:20]) or "-"
    return errors, placeholders


class MajordomeOptionsFlow(OptionsFlow):
    """The household: its profile, and the speech servers of the voice endpoint."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Show and save the household's options."""
        memory = Memory.from_data(self.config_entry.data.get(MEMORY_KEY))
        errors: dict[str, str] = {}
        placeholders = {"voices": ""}
        facts = {"facts": remembered_facts(memory)}
        if user_input is not None:
            # Addresses and the voice are saved as checked: trimmed, and absent when blank.
            for key in SPEECH_OPTIONS:
                if value := str(user_input.pop(key, None) or "").strip():
                    user_input[key] = value
            errors, placeholders = await async_check_voice(user_input)
            if len((user_input.get(CONF_PROFILE) or "").strip()) > MAX_PROFILE_CHARS:
                # The cap of every memory write, said rather than applied unseen.
                errors[CONF_PROFILE] = "profile_too_long"
        if user_input is not None and not errors:
            options = dict(user_input)
            profile = (options.pop(CONF_PROFILE, "") or "").strip()
            if profile != memory.profile:
                # Memory lives in the entry's data, where writing it does not reload.
                _memory_store(self.hass, self.config_entry).update(
                    profile=profile,
                    onboarding=Onboarding.DONE if profile else memory.onboarding,
                )
            return self.async_create_entry(data=options)
        suggested = {**self.config_entry.options, CONF_PROFILE: memory.profile}
        if user_input is not None:
            suggested = user_input  # shown again with the errors, as typed
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(HOUSEHOLD_SCHEMA, suggested),
            errors=errors,
            description_placeholders={**placeholders, **facts},
        )


def _memory_store(hass: HomeAssistant, entry: ConfigEntry) -> MemoryStore:
    """The loaded entry's store, whose write counts a running summary checks."""
    if entry.state is ConfigEntryState.LOADED:
        store: MemoryStore = entry.runtime_data.memory
        return store
    return MemoryStore(hass, entry)


def remembered_facts(memory: Memory) -> str:
    """The facts as the options show them: each with who remembered it, and when."""
    lines = []
    for detail in memory.fact_details:
        when = detail.at[:16].replace("T", " ") if detail.at else "?"
        lines.append(f"- {detail.fact} ({detail.by or '?'}, {when})")
    return "\n".join(lines) or "-"


# --- The agents ---------------------------------------------------------------------


class AgentSubentryFlow(ConfigSubentryFlow):
    """Add an agent to a server, or reconfigure one: its model, then its options."""

    def __init__(self) -> None:
        """Start with no model."""
        self._models: list[str] = []
        self._model = ""

    @property
    def _current(self) -> Mapping[str, Any]:
        """The settings of the agent being reconfigured (none for a new one)."""
        if self.source == SOURCE_RECONFIGURE:
            return self._get_reconfigure_subentry().data
        return {}

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """Add an agent."""
        return await self._async_list_models()

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Change an agent."""
        return await self._async_list_models()

    async def _async_list_models(self) -> SubentryFlowResult:
        """Ask the server for its models, with the entry's client."""
        entry: MajordomeConfigEntry = self._get_entry()
        if entry.state is not ConfigEntryState.LOADED:
            return self.async_abort(reason="entry_not_loaded")
        self._models, errors = await async_server_models(entry.runtime_data.client)
        if errors:
            return self.async_abort(reason=errors["base"])
        return await self.async_step_model()

    async def async_step_model(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Pick the agent's model."""
        self._model, errors = _picked_model(user_input, self._models)
        if self._model:
            return await self.async_step_agent()
        return self.async_show_form(
            step_id="model",
            data_schema=_model_schema(self._models, self._current.get(CONF_MODEL)),
            errors=errors,
            description_placeholders={"url": public_url(self._get_entry().data[CONF_URL])},
        )

    async def async_step_agent(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Name the agent and set its options; save it."""
        default_prompt = default_instructions(self.hass.config.language)
        errors: dict[str, str] = {}
        placeholders = {"model": self._model}
        if user_input is not None:
            user_input = _trimmed_fast_model(user_input)
            if not user_input.get(CONF_FAST_URL, "http://").startswith(("http://", "https://")):
                errors[CONF_FAST_URL] = "invalid_url"
            elif CONF_FAST_MODEL in user_input:
                errors, listed = await self._async_check_fast_model(user_input)
                placeholders.update(listed)
        if user_input is None or errors:
            suggested = {**DEFAULT_OPTIONS, **self._current, CONF_NAME: self._model}
            if self.source == SOURCE_RECONFIGURE:
                suggested[CONF_NAME] = self._get_reconfigure_subentry().title
            suggested[CONF_PROMPT] = suggested.get(CONF_PROMPT) or default_prompt
            return self.async_show_form(
                step_id="agent",
                data_schema=self.add_suggested_values_to_schema(
                    AGENT_SCHEMA, user_input or suggested
                ),
                errors=errors,
                description_placeholders=placeholders,
            )
        options = dict(user_input)
        title = str(options.pop(CONF_NAME)).strip() or self._model
        prompt = (options.get(CONF_PROMPT) or "").strip()
        # The untouched default is not stored: it then follows each conversation's
        # language (English and French instructions).
        if prompt == default_prompt.strip():
            prompt = ""
        data = {CONF_MODEL: self._model, **options, CONF_PROMPT: prompt}
        if self.source == SOURCE_RECONFIGURE:
            return self.async_update_and_abort(
                self._get_entry(), self._get_reconfigure_subentry(), title=title, data=data
            )
        return self.async_create_entry(title=title, data=data)

    async def _async_check_fast_model(
        self, options: dict[str, Any]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """List the fast model's server's models; return (form errors, their placeholders).

        As the main model: a server that lists no models takes the name as typed.
        """
        entry = self._get_entry()
        url: str = options.get(CONF_FAST_URL) or entry.data[CONF_URL]
        # The entry's API key goes to the entry's server only, as its clients do.
        own_server = same_server(url, entry.data[CONF_URL])
        api_key = key_for(url, entry.data[CONF_URL], entry.data.get(CONF_API_KEY))
        models, errors = await async_check_server(self.hass, url, api_key)
        if errors:
            return {CONF_FAST_URL: _FAST_ERRORS[errors["base"]]}, {}
        model = options[CONF_FAST_MODEL]
        # The main model doubling as the fast one was already chosen, listed or typed.
        if models and model not in models and not (own_server and model == self._model):
            errors[CONF_FAST_MODEL] = "fast_model_not_listed"
            return errors, {"fast_models": ", ".join(models[:20])}
        return {}, {}
