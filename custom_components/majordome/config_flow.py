"""Setup, reconfiguration and options of a Majordome agent.

Step 1 asks for the server and checks it by listing its models; step 2 picks one
(free text when the server lists none). One entry per server URL and model.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import voluptuous as vol

from homeassistant.config_entries import (
    SOURCE_RECONFIGURE,
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    OptionsFlow,
)
from homeassistant.const import CONF_API_KEY, CONF_MODEL, CONF_URL
from homeassistant.core import callback
from homeassistant.helpers import selector
from homeassistant.helpers.httpx_client import get_async_client

from .backend import BackendError, ErrorKind, async_list_models, create_client
from .const import (
    CONF_ALLOWED_SCRIPTS,
    CONF_FAST_MODEL,
    CONF_LLM_HASS_API,
    CONF_MAX_HISTORY,
    CONF_MAX_ITERATIONS,
    CONF_MAX_TOKENS,
    CONF_MEMORY_EVERY,
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
    MEMORY_KEY,
)
from .memory import Memory, MemoryStore, Onboarding
from .metacognition import SCRIPTS
from .prompt import default_instructions
from .voice.wyoming_client import ServerAddress, SpeechError, async_describe, installed_voices

DEFAULT_OPTIONS: dict[str, Any] = {
    CONF_LLM_HASS_API: LLM_API_ASSIST,
    CONF_TEMPERATURE: DEFAULT_TEMPERATURE,
    CONF_MAX_TOKENS: DEFAULT_MAX_TOKENS,
    CONF_MAX_ITERATIONS: DEFAULT_MAX_ITERATIONS,
    CONF_MAX_HISTORY: DEFAULT_MAX_HISTORY,
    CONF_TIMEOUT: DEFAULT_TIMEOUT,
    CONF_MEMORY_EVERY: DEFAULT_MEMORY_EVERY,
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


def _unique_id(url: str, model: str) -> str:
    return f"{url.rstrip('/')}|{model}"


class MajordomeConfigFlow(ConfigFlow, domain=DOMAIN):
    """Set up Majordome for one server and model."""

    VERSION = 1

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
        """Change the server, key or model of an existing entry."""
        return await self._async_step_server(
            "reconfigure", user_input, dict(self._get_reconfigure_entry().data)
        )

    async def _async_step_server(
        self, step_id: str, user_input: dict[str, Any] | None, suggested: dict[str, Any]
    ) -> ConfigFlowResult:
        errors: dict[str, str] = {}
        if user_input is not None:
            user_input = {**user_input, CONF_URL: user_input[CONF_URL].strip()}
            errors = await self._async_check_server(user_input)
            if not errors:
                self._server = user_input
                return await self.async_step_model()
            suggested = user_input
        return self.async_show_form(
            step_id=step_id,
            data_schema=self.add_suggested_values_to_schema(SERVER_SCHEMA, suggested),
            errors=errors,
        )

    async def _async_check_server(self, server: dict[str, Any]) -> dict[str, str]:
        """List the server's models; return the form errors (none when it answered)."""
        if not server[CONF_URL].startswith(("http://", "https://")):
            return {CONF_URL: "invalid_url"}
        client = await self.hass.async_add_executor_job(
            partial(
                create_client,
                server[CONF_URL],
                server.get(CONF_API_KEY),
                get_async_client(self.hass),
                CONNECT_TIMEOUT,
            )
        )
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                self._models = await async_list_models(client)
        except TimeoutError:
            return {"base": "timeout"}
        except BackendError as err:
            if err.kind is ErrorKind.MODEL_NOT_FOUND:
                # No /models endpoint on this server: the model is typed by hand.
                self._models = []
                return {}
            if err.kind not in _ERRORS:
                LOGGER.warning("Unexpected answer listing models: %s", err)
            return {"base": _ERRORS.get(err.kind, "unknown")}
        except Exception:  # noqa: BLE001 - the form says "unknown", the log says why
            LOGGER.exception("Unexpected error listing models")
            return {"base": "unknown"}
        return {}

    async def async_step_model(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Pick the model."""
        errors: dict[str, str] = {}
        if user_input is not None:
            if model := user_input[CONF_MODEL].strip():
                return await self._async_finish({**self._server, CONF_MODEL: model})
            errors["base"] = "model_required"
        elif not self._models:
            # Said on the first showing: the user has to type the name.
            errors["base"] = "no_models"

        current = (
            self._get_reconfigure_entry().data.get(CONF_MODEL)
            if self.source == SOURCE_RECONFIGURE
            else None
        )
        field: selector.Selector[Any] = (
            selector.SelectSelector(
                selector.SelectSelectorConfig(
                    options=self._models,
                    custom_value=True,
                    mode=selector.SelectSelectorMode.DROPDOWN,
                )
            )
            if self._models
            else selector.TextSelector()
        )
        default = current or (self._models[0] if self._models else "")
        return self.async_show_form(
            step_id="model",
            data_schema=vol.Schema({vol.Required(CONF_MODEL, default=default): field}),
            errors=errors,
            description_placeholders={"url": self._server[CONF_URL]},
        )

    async def _async_finish(self, data: dict[str, Any]) -> ConfigFlowResult:
        """Create the entry, or update the one being reconfigured."""
        unique_id = _unique_id(data[CONF_URL], data[CONF_MODEL])
        title = f"{data[CONF_MODEL]} ({data[CONF_URL]})"
        await self.async_set_unique_id(unique_id)
        if self.source == SOURCE_RECONFIGURE:
            entry = self._get_reconfigure_entry()
            if unique_id != entry.unique_id:
                self._abort_if_unique_id_configured()
            return self.async_update_reload_and_abort(
                entry, unique_id=unique_id, title=title, data=data
            )
        self._abort_if_unique_id_configured()
        return self.async_create_entry(title=title, data=data, options=DEFAULT_OPTIONS)

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> OptionsFlow:
        """Return the options flow."""
        return MajordomeOptionsFlow()


def _number(minimum: float, maximum: float, step: float = 1) -> selector.NumberSelector:
    return selector.NumberSelector(
        selector.NumberSelectorConfig(
            min=minimum, max=maximum, step=step, mode=selector.NumberSelectorMode.BOX
        )
    )


OPTIONS_SCHEMA = vol.Schema(
    {
        vol.Optional(CONF_PROMPT): selector.TemplateSelector(),
        vol.Optional(CONF_PROFILE): selector.TextSelector(
            selector.TextSelectorConfig(multiline=True)
        ),
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
        vol.Required(CONF_MEMORY_EVERY): vol.All(_number(0, 100), vol.Coerce(int)),
        vol.Required(CONF_SCREEN_VOICE): selector.BooleanSelector(),
        vol.Required(CONF_SCREEN_TYPED): selector.BooleanSelector(),
        vol.Required(CONF_SCREEN_LLM): selector.BooleanSelector(),
        vol.Optional(CONF_FAST_MODEL): selector.TextSelector(),
        vol.Required(CONF_ALLOWED_SCRIPTS): selector.SelectSelector(
            selector.SelectSelectorConfig(
                options=list(SCRIPTS),
                multiple=True,
                mode=selector.SelectSelectorMode.DROPDOWN,
                translation_key=CONF_ALLOWED_SCRIPTS,
            )
        ),
        vol.Optional(CONF_STT_SERVER): selector.TextSelector(),
        vol.Optional(CONF_TTS_SERVER): selector.TextSelector(),
        vol.Optional(CONF_TTS_VOICE): selector.TextSelector(),
    }
)


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
    """Tune the agent: instructions, tools, sampling and limits."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Show and save the options."""
        default_prompt = default_instructions(self.hass.config.language)
        memory = Memory.from_data(self.config_entry.data.get(MEMORY_KEY))
        errors: dict[str, str] = {}
        placeholders = {"voices": ""}
        if user_input is not None:
            # Addresses and the voice are saved as checked: trimmed, and absent when blank.
            for key in (CONF_STT_SERVER, CONF_TTS_SERVER, CONF_TTS_VOICE):
                if value := str(user_input.pop(key, None) or "").strip():
                    user_input[key] = value
            errors, placeholders = await async_check_voice(user_input)
        if user_input is not None and not errors:
            options = dict(user_input)
            prompt = (options.get(CONF_PROMPT) or "").strip()
            # The untouched default is not stored: it then follows each
            # conversation's language (English and French instructions).
            if prompt == default_prompt.strip():
                prompt = ""
            profile = (options.pop(CONF_PROFILE, "") or "").strip()
            if profile != memory.profile:
                # Memory lives in the entry's data, where writing it does not reload.
                MemoryStore(self.hass, self.config_entry).update(
                    profile=profile,
                    onboarding=Onboarding.DONE if profile else memory.onboarding,
                )
            return self.async_create_entry(data={**options, CONF_PROMPT: prompt})
        suggested = {**DEFAULT_OPTIONS, **self.config_entry.options}
        suggested[CONF_PROMPT] = suggested.get(CONF_PROMPT) or default_prompt
        suggested[CONF_PROFILE] = memory.profile
        if user_input is not None:
            suggested = user_input  # shown again with the errors, as typed
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(OPTIONS_SCHEMA, suggested),
            errors=errors,
            description_placeholders=placeholders,
        )
