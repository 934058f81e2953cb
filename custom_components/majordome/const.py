"""Constants for Majordome: the domain, option keys and their defaults."""

from __future__ import annotations

import logging
from typing import Final

DOMAIN: Final = "majordome"
LOGGER = logging.getLogger(__package__)

# One config entry per server (data: CONF_URL, CONF_API_KEY and the household's memory;
# options: the household's voice servers). Each agent is a subentry of this type, with
# its model (CONF_MODEL) and the agent options below.
DEFAULT_URL: Final = "http://localhost:11434/v1"  # Ollama's OpenAI-compatible endpoint
SUBENTRY_AGENT: Final = "conversation"

# Agent options (a subentry's data)
CONF_PROMPT: Final = "prompt"
CONF_LLM_HASS_API: Final = "llm_hass_api"  # same key as homeassistant.const
CONF_TEMPERATURE: Final = "temperature"
CONF_MAX_TOKENS: Final = "max_tokens"
CONF_MAX_ITERATIONS: Final = "max_iterations"
CONF_MAX_HISTORY: Final = "max_history"

LLM_API_NONE: Final = "none"
LLM_API_ASSIST: Final = "assist"

DEFAULT_TEMPERATURE: Final = 0.3
DEFAULT_MAX_TOKENS: Final = 300
DEFAULT_MAX_ITERATIONS: Final = 10
DEFAULT_MAX_HISTORY: Final = 10  # user turns kept in what is sent to the model

# Timeouts (seconds)
CONNECT_TIMEOUT: Final = 10.0  # config flow and model listing


# The llm.API Majordome registers: Assist's intent tools plus its own tools.
MAJORDOME_API_ID: Final = "majordome"

CONF_TIMEOUT: Final = "timeout"
DEFAULT_TIMEOUT: Final = 120  # seconds for one whole reply of the server (connect and stream)

# Tool arguments that could not be parsed travel under this key, so the tool layer
# can answer the model with an error instead of calling the tool with garbage.
INVALID_ARGUMENTS_KEY: Final = "__majordome_unparsable_arguments__"

# Memory (stored in the entry's data, not its options: writing it must not reload)
MEMORY_KEY: Final = "memory"
CONF_PROFILE: Final = "profile"  # shown in the options form, stored under MEMORY_KEY
CONF_MEMORY_EVERY: Final = "memory_every"
DEFAULT_MEMORY_EVERY: Final = 5  # user turns between two re-summaries of the dynamic memory
MEMORY_TIMEOUT: Final = 120.0  # a background summary may be slow on a CPU server
# Caps on what memory holds, whoever writes it (the tools, the services, the options)
MAX_PROFILE_CHARS: Final = 1200
MAX_DYNAMIC_CHARS: Final = 800
MAX_FACTS: Final = 30
MAX_FACT_CHARS: Final = 200
# A household option: whether a request with no person behind it (an automation) may
# write memory (off: only people do, so text fed to an automation cannot persist).
CONF_MEMORY_FROM_AUTOMATIONS: Final = "memory_from_automations"

# The local stage: Home Assistant's own sentences before any model call (local.py)
CONF_LOCAL_INTENTS: Final = "local_intents"
DEFAULT_LOCAL_INTENTS: Final = True

# Metacognition: screening utterances before any LLM call
CONF_SCREEN_VOICE: Final = "screen_voice"  # screen what satellites transcribed
CONF_SCREEN_TYPED: Final = "screen_typed"  # screen typed text too
CONF_SCREEN_LLM: Final = "screen_llm"  # stage 2: ask a model whether it was meant for us
# The cascade (routing.py): simple requests to a fast model, the rest to the main one.
CONF_FAST_MODEL: Final = "fast_model"  # empty: no cascade (stage 2 uses the main model)
CONF_FAST_URL: Final = "fast_url"  # the fast model's server (empty: the entry's)
CONF_ALLOWED_SCRIPTS: Final = "allowed_scripts"
DEFAULT_ALLOWED_SCRIPTS: Final = ["Latin"]
SCREEN_TIMEOUT: Final = 5.0  # stage 2 fails open after this
EVENT_UTTERANCE_IGNORED: Final = "majordome_utterance_ignored"
# Whether that event carries what was heard (off: overheard speech stays out of the recorder)
CONF_IGNORED_EVENT_TEXT: Final = "ignored_event_text"
# A user message longer than this is refused with a clear answer and never reaches the
# model (nor the chat log); the screening rules read no more of any text.
MAX_UTTERANCE_CHARS: Final = 4000

# Voice: Wyoming servers for the streaming voice endpoint ("host:port"; empty: off)
CONF_STT_SERVER: Final = "stt_server"
CONF_TTS_SERVER: Final = "tts_server"
CONF_TTS_VOICE: Final = "tts_voice"  # empty: the server's default voice
VOICE_URL: Final = "/api/majordome/voice"
# The household's settings, in the server entry's options: every agent shares them.
SPEECH_OPTIONS: Final = (CONF_STT_SERVER, CONF_TTS_SERVER, CONF_TTS_VOICE)
HOUSEHOLD_OPTIONS: Final = (*SPEECH_OPTIONS, CONF_MEMORY_FROM_AUTOMATIONS)

# The talking page: a sidebar panel (served only when the frontend is loaded)
PANEL_URL_PATH: Final = "majordome"  # the page is at /majordome
PANEL_ELEMENT: Final = "majordome-voice-panel"  # the custom element the module defines
PANEL_MODULE_URL: Final = "/majordome_static/majordome-voice-panel.js"
PANEL_TITLE: Final = "Majordome"
PANEL_ICON: Final = "mdi:account-voice"
