// Majordome's talking page: a Home Assistant panel for the streaming voice endpoint.
//
// One ES module, no build step, no dependency. Home Assistant's frontend creates the
// <majordome-voice-panel> element and sets its `hass`, `narrow` and `panel` properties.
// The page opens a websocket to /api/majordome/voice (protocol: voice/endpoint.py),
// authenticates with the frontend's own access token, then:
// - captures the microphone with an AudioWorklet, converted to 16 kHz mono s16le and
//   streamed between {"type": "start"} and {"type": "end"}; a small energy detector
//   ends the utterance after a silence (or a second click ends it);
// - shows the transcript and the reply as it streams (reply_delta);
// - plays the reply's PCM chunks back to back in an AudioContext, and moves a sphere
//   with each chunk's level at the time that chunk is heard;
// - lets the user type instead, stop the reply, or interrupt it by speaking again.
//
// The host element carries its state as data attributes (data-state, data-connection,
// data-audio-bytes, data-chunks-played...), which the browser tests read.

const VOICE_PATH = "/api/majordome/voice";
const CAPTURE_RATE = 16000; // what the endpoint expects: 16 kHz mono s16le
const FRAME_SAMPLES = 320; // 20 ms per binary frame
const VAD = {
  floor: 0.01, // RMS (0..1) under which a frame is silence, whatever the noise
  noiseFactor: 3, // a frame is speech above this many times the noise estimate
  minSpeechMs: 200, // this much speech before an utterance counts as heard
  endSilenceMs: 900, // silence after speech that ends the utterance
  noSpeechMs: 8000, // nothing heard for this long: give up
  maxMs: 15000, // the longest utterance
};
const PLAYBACK_LEAD_S = 0.06; // head start when the queue has run dry
const LEVEL_ATTACK_S = 0.04; // the sphere's smoothing time constants
const LEVEL_RELEASE_S = 0.15;
const MAX_TURNS = 30; // turns kept on screen
const RETRY_MAX_S = 30;
const LANGUAGE_KEY = "majordome-voice-language";
const LANGUAGE_NAMES = { en: "English", fr: "Français" }; // others: Intl.DisplayNames

const ICONS = {
  mic: "M12,2A3,3 0 0,1 15,5V11A3,3 0 0,1 12,14A3,3 0 0,1 9,11V5A3,3 0 0,1 12,2M19,11C19,14.53 16.39,17.44 13,17.93V21H11V17.93C7.61,17.44 5,14.53 5,11H7A5,5 0 0,0 12,16A5,5 0 0,0 17,11H19Z",
  stop: "M18,18H6V6H18V18Z",
  send: "M2,21L23,12L2,3V10L17,12L2,14V21Z",
  menu: "M3,6H21V8H3V6M3,11H21V13H3V11M3,16H21V18H3V16Z",
};

const STRINGS = {
  en: {
    idle: "Press the microphone and speak, or type below.",
    listening: "Listening…",
    thinking: "Thinking…",
    speaking: "Speaking…",
    connecting: "Connecting to Majordome…",
    reconnecting: "Connection lost. Reconnecting…",
    authInvalid: "Home Assistant refused the page's login. Reload the page.",
    noAgent: "No Majordome agent is set up: add the integration first.",
    noStt:
      "No speech-to-text server is set up in Majordome's options: the microphone is off, typing still works.",
    noTts:
      "No text-to-speech server is set up in Majordome's options: replies are written, not spoken.",
    insecure:
      "Browsers only allow the microphone on https:// pages or on localhost: typing still works.",
    micDenied: "The microphone could not be opened ({error}).",
    talk: "Talk",
    finish: "Done",
    interrupt: "Interrupt and talk",
    stop: "Stop",
    send: "Send",
    placeholder: "Type a request…",
    language: "Language",
    you: "You",
    agent: "Majordome",
    ignored: "(not meant for me: ignored)",
    nothingHeard: "(nothing heard)",
    stopped: "Stopped.",
    menu: "Menu",
  },
  fr: {
    idle: "Appuyez sur le micro et parlez, ou écrivez ci-dessous.",
    listening: "J'écoute…",
    thinking: "Je réfléchis…",
    speaking: "Je parle…",
    connecting: "Connexion à Majordome…",
    reconnecting: "Connexion perdue. Reconnexion…",
    authInvalid: "Home Assistant a refusé la connexion de la page. Rechargez la page.",
    noAgent: "Aucun agent Majordome n'est configuré\u00a0: ajoutez d'abord l'intégration.",
    noStt:
      "Aucun serveur de reconnaissance vocale n'est configuré dans les options de Majordome\u00a0: le micro est désactivé, vous pouvez toujours écrire.",
    noTts:
      "Aucun serveur de synthèse vocale n'est configuré dans les options de Majordome\u00a0: les réponses sont écrites, pas dites.",
    insecure:
      "Les navigateurs n'autorisent le micro que sur les pages https:// ou sur localhost\u00a0: vous pouvez toujours écrire.",
    micDenied: "Impossible d'ouvrir le micro ({error}).",
    talk: "Parler",
    finish: "Terminer",
    interrupt: "Interrompre et parler",
    stop: "Arrêter",
    send: "Envoyer",
    placeholder: "Écrivez une demande…",
    language: "Langue",
    you: "Vous",
    agent: "Majordome",
    ignored: "(pas pour moi\u00a0: ignoré)",
    nothingHeard: "(rien entendu)",
    stopped: "Arrêté.",
    menu: "Menu",
  },
};

// The capture worklet: mixes to mono, low-passes and decimates to 16 kHz by averaging
// the input samples that fall into each output sample, converts to s16, and posts
// 20 ms frames to the page.
const WORKLET_SOURCE = `
class MajordomeCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate, frameSamples } = options.processorOptions;
    this.step = sampleRate / targetRate; // input samples per output sample
    this.position = 0;
    this.sum = 0;
    this.count = 0;
    this.frameSamples = frameSamples;
    this.frame = new Int16Array(frameSamples);
    this.filled = 0;
  }
  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length;
    const length = input[0].length;
    for (let i = 0; i < length; i++) {
      let sample = 0;
      for (let c = 0; c < channels; c++) sample += input[c][i];
      this.sum += sample / channels;
      this.count += 1;
      this.position += 1;
      while (this.position >= this.step) {
        this.position -= this.step;
        const value = this.count ? this.sum / this.count : 0;
        this.sum = 0;
        this.count = 0;
        this.frame[this.filled++] = Math.max(-32768, Math.min(32767, Math.round(value * 32767)));
        if (this.filled === this.frameSamples) {
          this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
          this.frame = new Int16Array(this.frameSamples);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor("majordome-capture", MajordomeCapture);
`;

// Events that belong to a reply (dropped while an interrupted reply drains) and
// events that end one.
const REPLY_EVENTS = new Set(["reply_delta", "sentence", "audio_start", "level", "audio_end"]);
const TERMINAL_EVENTS = new Set(["reply_end", "ignored", "interrupted", "stopped", "error"]);

const STYLE = `
:host {
  display: flex;
  flex-direction: column;
  height: 100%;
  min-height: 100vh;
  box-sizing: border-box;
  background: var(--primary-background-color, #fafafa);
  color: var(--primary-text-color, #212121);
  font-family: var(--ha-font-family-body, var(--paper-font-body1_-_font-family, Roboto, sans-serif));
  --mj-level: 0;
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
.toolbar {
  display: flex;
  align-items: center;
  gap: 4px;
  height: var(--header-height, 56px);
  padding: 0 12px;
  background: var(--app-header-background-color, var(--primary-color, #03a9f4));
  color: var(--app-header-text-color, var(--text-primary-color, #fff));
  border-bottom: var(--app-header-border-bottom, none);
  flex: none;
}
.toolbar .title { font-size: 20px; font-weight: 400; margin-left: 12px; }
.icon-button {
  border: none;
  background: transparent;
  color: inherit;
  width: 48px;
  height: 48px;
  border-radius: 50%;
  cursor: pointer;
  display: inline-flex;
  align-items: center;
  justify-content: center;
}
.icon-button:hover { background: rgba(127, 127, 127, 0.15); }
svg { width: 24px; height: 24px; fill: currentColor; flex: none; }
main {
  flex: 1;
  overflow-y: auto;
  display: flex;
  flex-direction: column;
  align-items: center;
  padding: 16px;
}
.column { width: 100%; max-width: 720px; display: flex; flex-direction: column; gap: 16px; flex: 1; }
.stage { display: flex; flex-direction: column; align-items: center; gap: 12px; padding: 8px 0; }
.orb {
  position: relative;
  width: 200px;
  height: 200px;
  display: flex;
  align-items: center;
  justify-content: center;
}
.orb .glow {
  position: absolute;
  inset: 10%;
  border-radius: 50%;
  background: var(--primary-color, #03a9f4);
  filter: blur(28px);
  opacity: calc(0.18 + var(--mj-level) * 0.7);
  transform: scale(calc(0.9 + var(--mj-level) * 0.5));
}
.orb .sphere {
  position: relative;
  width: 140px;
  height: 140px;
  border-radius: 50%;
  background:
    radial-gradient(circle at 34% 28%, rgba(255, 255, 255, 0.75) 0%, rgba(255, 255, 255, 0) 38%),
    radial-gradient(circle at 50% 55%, var(--primary-color, #03a9f4) 35%, var(--dark-primary-color, #0288d1) 100%);
  box-shadow: inset -10px -14px 30px rgba(0, 0, 0, 0.25);
  transform: scale(calc(0.92 + var(--mj-level) * 0.36));
}
.orb .ring {
  position: absolute;
  inset: 0;
  border-radius: 50%;
  border: 3px solid transparent;
  opacity: 0;
  transition: opacity 0.3s;
}
:host([data-state="idle"]) .orb .sphere-wrap { animation: breathe 4s ease-in-out infinite; }
:host([data-state="listening"]) .orb .ring {
  opacity: 1;
  border-color: var(--accent-color, #ff9800);
  transform: scale(calc(0.86 + var(--mj-level) * 0.2));
}
:host([data-state="thinking"]) .orb .ring {
  opacity: 1;
  border-top-color: var(--primary-color, #03a9f4);
  border-right-color: var(--primary-color, #03a9f4);
  animation: spin 1.1s linear infinite;
}
:host([data-state="thinking"]) .orb .sphere-wrap { animation: breathe 1.4s ease-in-out infinite; }
.sphere-wrap { position: relative; display: flex; }
@keyframes breathe { 0%, 100% { transform: scale(1); } 50% { transform: scale(1.04); } }
@keyframes spin { to { transform: rotate(360deg); } }
@media (prefers-reduced-motion: reduce) {
  .sphere-wrap, .orb .ring { animation: none !important; }
}
.status { font-size: 16px; color: var(--secondary-text-color, #727272); min-height: 1.4em; text-align: center; }
.notices { display: flex; flex-direction: column; gap: 8px; width: 100%; }
.notice {
  padding: 10px 14px;
  border-radius: var(--ha-card-border-radius, 12px);
  border: 1px solid var(--divider-color, rgba(0, 0, 0, 0.12));
  background: var(--card-background-color, #fff);
  color: var(--primary-text-color, #212121);
  border-left: 4px solid var(--warning-color, #ffa600);
  line-height: 1.4;
}
.notice.error { border-left-color: var(--error-color, #db4437); }
.controls { display: flex; justify-content: center; gap: 16px; align-items: center; }
.round {
  border: none;
  cursor: pointer;
  border-radius: 50%;
  display: inline-flex;
  align-items: center;
  justify-content: center;
  box-shadow: var(--ha-card-box-shadow, 0 2px 6px rgba(0, 0, 0, 0.2));
}
.round:focus-visible, .send:focus-visible { outline: 2px solid var(--accent-color, #ff9800); outline-offset: 2px; }
#mic {
  width: 72px;
  height: 72px;
  background: var(--primary-color, #03a9f4);
  color: var(--text-primary-color, #fff);
}
#mic svg { width: 34px; height: 34px; }
:host([data-state="listening"]) #mic { background: var(--accent-color, #ff9800); }
#mic:disabled { background: var(--disabled-color, #bdbdbd); cursor: not-allowed; box-shadow: none; }
#stop {
  width: 52px;
  height: 52px;
  background: var(--card-background-color, #fff);
  color: var(--error-color, #db4437);
  border: 1px solid var(--divider-color, rgba(0, 0, 0, 0.12));
}
#stop[hidden] { display: none; }
.conversation {
  background: var(--card-background-color, #fff);
  border-radius: var(--ha-card-border-radius, 12px);
  border: 1px solid var(--divider-color, rgba(0, 0, 0, 0.12));
  box-shadow: var(--ha-card-box-shadow, none);
  padding: 8px 16px;
  display: flex;
  flex-direction: column;
  gap: 4px;
}
.conversation:empty { display: none; }
.turn { padding: 8px 0; border-bottom: 1px solid var(--divider-color, rgba(0, 0, 0, 0.12)); }
.turn:last-child { border-bottom: none; }
.turn.old { opacity: 0.7; }
.line { display: flex; gap: 10px; align-items: baseline; margin: 4px 0; }
.who {
  flex: none;
  width: 88px;
  font-size: 12px;
  text-transform: uppercase;
  letter-spacing: 0.05em;
  color: var(--secondary-text-color, #727272);
}
.said, .answer { margin: 0; line-height: 1.5; white-space: pre-wrap; overflow-wrap: anywhere; }
.answer { color: var(--primary-text-color, #212121); }
.said { color: var(--primary-text-color, #212121); font-style: italic; }
.muted { color: var(--secondary-text-color, #727272); font-style: italic; }
.failed { color: var(--error-color, #db4437); }
form {
  display: flex;
  gap: 8px;
  align-items: center;
  background: var(--card-background-color, #fff);
  border-radius: var(--ha-card-border-radius, 12px);
  border: 1px solid var(--divider-color, rgba(0, 0, 0, 0.12));
  padding: 6px 6px 6px 10px;
  position: sticky;
  bottom: 0;
}
select, input {
  font: inherit;
  color: var(--primary-text-color, #212121);
  background: transparent;
  border: none;
  outline: none;
}
select { max-width: 9em; color: var(--secondary-text-color, #727272); }
select option { background: var(--card-background-color, #fff); color: var(--primary-text-color, #212121); }
input { flex: 1; min-width: 0; padding: 8px 4px; font-size: 16px; }
input::placeholder { color: var(--secondary-text-color, #727272); }
.send {
  border: none;
  border-radius: 50%;
  width: 40px;
  height: 40px;
  background: transparent;
  color: var(--primary-color, #03a9f4);
  cursor: pointer;
  display: inline-flex;
  align-items: center;
  justify-content: center;
}
.send:disabled, input:disabled { color: var(--disabled-text-color, #bdbdbd); cursor: not-allowed; }
.spacer { flex: 1; }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
`;

function icon(path) {
  return `<svg viewBox="0 0 24 24" aria-hidden="true"><path d="${path}"></path></svg>`;
}

function baseLanguage(tag) {
  return String(tag || "")
    .split(/[-_]/)[0]
    .toLowerCase();
}

class MajordomeVoicePanel extends HTMLElement {
  constructor() {
    super();
    this._hass = null;
    this._narrow = false;
    this._uiLanguage = null;
    this._connected = false;
    // Connection
    this._ws = null;
    this._connection = "connecting";
    this._ready = null; // the endpoint's ready event: entry_id, stt, tts
    this._authRetried = false;
    this._authFailed = false;
    this._refreshing = null; // a token refresh after auth_invalid
    this._retries = 0;
    this._retryTimer = null;
    this._conversationId = null;
    // The reply: open from the request until its last event; while an interrupted
    // reply drains (events already on the wire), its events are dropped.
    this._replyOpen = false;
    this._replyAudio = false;
    this._sentenceSeen = false;
    this._discarding = false;
    this._drainSentenceSeen = false;
    this._turn = null;
    this._replyText = "";
    // Capture
    this._capture = null;
    this._starting = false;
    this._micError = null;
    this._workletUrl = null;
    // Playback
    this._audio = null; // one AudioContext, at its default rate, for capture and playback
    this._workletReady = null;
    this._output = null;
    this._format = { rate: 22050, width: 2, channels: 1 };
    this._pendingLevel = null;
    this._carry = null;
    this._scheduled = []; // {source, start, end, level, bytes, cancelled}
    this._playhead = 0;
    this._level = 0;
    this._levelTime = null;
    this._frame = null;
    // Honest counters, mirrored as data attributes for tests and curious users.
    this._counters = {
      audioBytes: 0, // reply audio received
      audioChunks: 0,
      audioDropped: 0, // chunks of an interrupted reply, not played
      chunksPlayed: 0, // chunks whose buffer played to its end
      chunksCancelled: 0, // chunks stopped before their end (stop, barge-in)
      bytesPlayed: 0,
      micBytes: 0, // microphone audio sent
      replies: 0, // reply_end events
      replyDeltas: 0, // reply_delta events shown
      peakLevel: 0, // highest level the sphere has shown
    };
    this._state = "idle";
    this._notices = new Map();
    this._build();
  }

  // --- Properties Home Assistant sets -------------------------------------------------

  set hass(hass) {
    const first = this._hass === null;
    this._hass = hass;
    const language = baseLanguage(hass && hass.language);
    if (language !== this._uiLanguage) {
      this._uiLanguage = language;
      this._applyStrings();
    }
    this._updateMenuButton();
    if (first && this._connected) this._connect();
  }

  get hass() {
    return this._hass;
  }

  set narrow(narrow) {
    this._narrow = Boolean(narrow);
    this._updateMenuButton();
  }

  get narrow() {
    return this._narrow;
  }

  set panel(panel) {
    this._panel = panel;
  }

  get panel() {
    return this._panel;
  }

  connectedCallback() {
    this._connected = true;
    this._render();
    if (this._hass) this._connect();
    this._frame = requestAnimationFrame((now) => this._animate(now));
  }

  disconnectedCallback() {
    this._connected = false;
    clearTimeout(this._retryTimer);
    cancelAnimationFrame(this._frame);
    this._stopCapture();
    this._stopPlayback();
    if (this._ws) {
      const ws = this._ws;
      this._ws = null;
      ws.close();
    }
    this._replyOpen = false;
    this._discarding = false;
    if (this._audio) {
      const audio = this._audio;
      this._audio = null;
      this._workletReady = null;
      this._output = null;
      audio.close().catch(() => {});
    }
  }

  // --- Strings ---------------------------------------------------------------------

  _t(key, values = {}) {
    const table = STRINGS[this._uiLanguage] || STRINGS.en;
    const text = table[key] ?? STRINGS.en[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
  }

  // --- The page ----------------------------------------------------------------------

  _build() {
    const root = this.attachShadow({ mode: "open" });
    root.innerHTML = `
      <style>${STYLE}</style>
      <div class="toolbar">
        <button class="icon-button" id="menu" hidden>${icon(ICONS.menu)}</button>
        <div class="title">Majordome</div>
      </div>
      <main>
        <div class="column">
          <div class="stage">
            <div class="orb" id="orb" aria-hidden="true">
              <div class="glow"></div>
              <div class="ring"></div>
              <div class="sphere-wrap"><div class="sphere" id="sphere"></div></div>
            </div>
            <div class="status" id="status" role="status" aria-live="polite"></div>
            <div class="controls">
              <button class="round" id="mic">${icon(ICONS.mic)}</button>
              <button class="round" id="stop" hidden>${icon(ICONS.stop)}</button>
            </div>
          </div>
          <div class="notices" id="notices"></div>
          <div class="conversation" id="turns" aria-live="polite"></div>
          <div class="spacer"></div>
          <form id="type-form" autocomplete="off">
            <label class="sr-only" for="language" id="language-label"></label>
            <select id="language"></select>
            <input id="text" type="text" enterkeyhint="send" />
            <button class="send" id="send" type="submit">${icon(ICONS.send)}</button>
          </form>
        </div>
      </main>`;
    const $ = (id) => root.getElementById(id);
    this._el = {
      menu: $("menu"),
      orb: $("orb"),
      sphere: $("sphere"),
      status: $("status"),
      mic: $("mic"),
      stop: $("stop"),
      notices: $("notices"),
      turns: $("turns"),
      form: $("type-form"),
      language: $("language"),
      languageLabel: $("language-label"),
      text: $("text"),
      send: $("send"),
    };
    this._el.menu.addEventListener("click", () =>
      this.dispatchEvent(new Event("hass-toggle-menu", { bubbles: true, composed: true })),
    );
    this._el.mic.addEventListener("click", () => this._onMicClick());
    this._el.stop.addEventListener("click", () => this._onStopClick());
    this._el.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this._onSubmit();
    });
    this._el.language.addEventListener("change", () => {
      try {
        localStorage.setItem(LANGUAGE_KEY, this._el.language.value);
      } catch (err) {
        // private browsing: the choice lasts for this page only
      }
    });
    // No _render() here: a custom element's constructor may not set attributes.
  }

  _applyStrings() {
    if (!this._el) return;
    this._el.menu.title = this._t("menu");
    this._el.menu.setAttribute("aria-label", this._t("menu"));
    this._el.stop.title = this._t("stop");
    this._el.stop.setAttribute("aria-label", this._t("stop"));
    this._el.send.title = this._t("send");
    this._el.send.setAttribute("aria-label", this._t("send"));
    this._el.text.placeholder = this._t("placeholder");
    this._el.languageLabel.textContent = this._t("language");
    this._el.language.title = this._t("language");
    for (const label of this.shadowRoot.querySelectorAll(".who.you")) {
      label.textContent = this._t("you");
    }
    for (const label of this.shadowRoot.querySelectorAll(".who.agent")) {
      label.textContent = this._t("agent");
    }
    this._fillLanguages();
    this._refreshNotices();
    this._render();
  }

  _fillLanguages() {
    const select = this._el.language;
    const previous = select.value;
    const configLanguage = baseLanguage(this._hass && this._hass.config && this._hass.config.language);
    const codes = [...new Set([this._uiLanguage, configLanguage, "en", "fr"].filter(Boolean))];
    // Each language in its own name ("English", "Français"), as language pickers do.
    const nameOf = (code) => {
      if (LANGUAGE_NAMES[code]) return LANGUAGE_NAMES[code];
      try {
        return new Intl.DisplayNames([code], { type: "language" }).of(code) || code;
      } catch (err) {
        return code;
      }
    };
    select.replaceChildren(
      ...codes.map((code) => {
        const option = document.createElement("option");
        option.value = code;
        const name = nameOf(code);
        option.textContent = name.charAt(0).toLocaleUpperCase() + name.slice(1);
        return option;
      }),
    );
    let stored = null;
    try {
      stored = localStorage.getItem(LANGUAGE_KEY);
    } catch (err) {
      stored = null;
    }
    const wanted = [previous, stored, this._uiLanguage].find((code) => code && codes.includes(code));
    select.value = wanted || codes[0];
  }

  _updateMenuButton() {
    if (!this._el) return;
    const hidden = !(this._narrow || (this._hass && this._hass.dockedSidebar === "always_hidden"));
    this._el.menu.hidden = hidden;
  }

  /** State, buttons and the test hooks, from what is true now. */
  _render() {
    const state = this._computeState();
    this._state = state;
    const el = this._el;
    const ready = this._connection === "ready";
    const sttReady = ready && Boolean(this._ready && this._ready.stt);
    const micPossible = this._micSupported();
    el.mic.disabled = !sttReady || !micPossible || this._starting;
    const micLabel =
      state === "listening" ? this._t("finish") : state === "idle" ? this._t("talk") : this._t("interrupt");
    el.mic.title = micLabel;
    el.mic.setAttribute("aria-label", micLabel);
    el.stop.hidden = !(state === "thinking" || state === "speaking");
    el.text.disabled = !ready;
    el.send.disabled = !ready || state === "listening";
    el.status.textContent =
      this._connection === "ready"
        ? this._t(state)
        : this._connection === "auth-invalid"
          ? ""
          : this._connection === "closed"
            ? this._t("reconnecting")
            : this._t("connecting");
    const counters = this._counters;
    const attributes = {
      "data-state": state,
      "data-connection": this._connection,
      "data-stt": String(Boolean(this._ready && this._ready.stt)),
      "data-tts": String(Boolean(this._ready && this._ready.tts)),
      "data-audio-bytes": counters.audioBytes,
      "data-audio-chunks": counters.audioChunks,
      "data-audio-dropped": counters.audioDropped,
      "data-chunks-played": counters.chunksPlayed,
      "data-chunks-cancelled": counters.chunksCancelled,
      "data-bytes-played": counters.bytesPlayed,
      "data-mic-bytes": counters.micBytes,
      "data-replies": counters.replies,
      "data-reply-deltas": counters.replyDeltas,
      "data-peak-level": counters.peakLevel.toFixed(3),
    };
    for (const [name, value] of Object.entries(attributes)) {
      const text = String(value);
      if (this.getAttribute(name) !== text) this.setAttribute(name, text);
    }
  }

  _computeState() {
    if (this._capture || this._starting) return "listening";
    if (this._scheduled.length > 0 || (this._replyOpen && this._replyAudio)) return "speaking";
    if (this._replyOpen) return "thinking";
    return "idle";
  }

  // --- Notices -----------------------------------------------------------------------

  _refreshNotices() {
    const notices = new Map();
    if (this._connection === "auth-invalid") notices.set("auth", ["error", this._t("authInvalid")]);
    if (this._ready) {
      if (!this._ready.entry_id) notices.set("agent", ["error", this._t("noAgent")]);
      else if (!this._ready.stt) notices.set("stt", ["warning", this._t("noStt")]);
      if (this._ready.entry_id && !this._ready.tts) notices.set("tts", ["warning", this._t("noTts")]);
    }
    if (this._ready && this._ready.stt && !this._micSupported()) {
      notices.set("insecure", ["warning", this._t("insecure")]);
    }
    if (this._micError) notices.set("mic", ["error", this._t("micDenied", { error: this._micError })]);
    for (const [key, value] of this._notices) {
      if (key.startsWith("message:")) notices.set(key, value);
    }
    this._notices = notices;
    this._el.notices.replaceChildren(
      ...[...notices.entries()].map(([key, [kind, text]]) => {
        const div = document.createElement("div");
        div.className = `notice ${kind}`;
        div.dataset.notice = key;
        div.textContent = text;
        return div;
      }),
    );
  }

  /** A message from the endpoint outside any turn (already in the user's language). */
  _showMessage(text) {
    this._notices.set("message:last", ["error", text]);
    this._refreshNotices();
  }

  _micSupported() {
    return Boolean(
      window.isSecureContext &&
        navigator.mediaDevices &&
        navigator.mediaDevices.getUserMedia &&
        window.AudioWorkletNode,
    );
  }

  // --- Turns on screen ----------------------------------------------------------------

  _newTurn(said, source) {
    if (this._turn) {
      this._turn.root.classList.add("old");
      this._turn.said.removeAttribute("id");
      this._turn.answer.removeAttribute("id");
    }
    const root = document.createElement("div");
    root.className = "turn";
    root.dataset.source = source;
    root.innerHTML = `
      <div class="line"><span class="who you"></span><p class="said"></p></div>
      <div class="line"><span class="who agent"></span><p class="answer"></p></div>`;
    root.querySelector(".who.you").textContent = this._t("you");
    root.querySelector(".who.agent").textContent = this._t("agent");
    const turn = { root, said: root.querySelector(".said"), answer: root.querySelector(".answer") };
    turn.said.id = "transcript";
    turn.answer.id = "reply";
    turn.said.textContent = said;
    if (source === "voice" && !said) turn.said.classList.add("muted");
    this._el.turns.append(root);
    while (this._el.turns.children.length > MAX_TURNS) this._el.turns.firstElementChild.remove();
    this._turn = turn;
    this._replyText = "";
    this._scrollDown();
    return turn;
  }

  _setSaid(text, muted = false) {
    if (!this._turn) this._newTurn("", "voice");
    this._turn.said.textContent = text;
    this._turn.said.classList.toggle("muted", muted);
    this._scrollDown();
  }

  _setAnswer(text, kind = "") {
    if (!this._turn) this._newTurn("", "voice");
    const answer = this._turn.answer;
    answer.textContent = text;
    answer.classList.toggle("muted", kind === "muted");
    answer.classList.toggle("failed", kind === "failed");
    this._scrollDown();
  }

  _scrollDown() {
    const main = this.shadowRoot.querySelector("main");
    if (main) main.scrollTop = main.scrollHeight;
  }

  // --- The websocket -----------------------------------------------------------------

  _connect() {
    if (this._ws || !this._connected || !this._hass || this._authFailed) return;
    clearTimeout(this._retryTimer);
    const auth = this._hass.auth;
    const base = (auth && auth.data && auth.data.hassUrl) || window.location.origin;
    const url = new URL(VOICE_PATH, base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(url.href);
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    this._ready = null;
    this._setConnection(this._retries ? "closed" : "connecting");
    ws.addEventListener("message", (event) => this._onMessage(ws, event));
    ws.addEventListener("close", () => this._onClose(ws));
  }

  _setConnection(connection) {
    this._connection = connection;
    this._refreshNotices();
    this._render();
  }

  _send(message) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(typeof message === "string" || message instanceof ArrayBuffer ? message : JSON.stringify(message));
    return true;
  }

  async _authenticate(ws) {
    const auth = this._hass.auth;
    try {
      if (this._refreshing) await this._refreshing;
      else if (auth.expired) await auth.refreshAccessToken();
    } catch (err) {
      // The endpoint refuses the stale token; auth_invalid handles it.
    }
    if (ws !== this._ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({ type: "auth", access_token: auth.data.access_token }));
  }

  _onClose(ws) {
    if (ws !== this._ws) return;
    this._ws = null;
    this._ready = null;
    if (this._capture || this._starting) this._stopCapture();
    // A reply cut by the connection will not end: nothing more comes for it.
    this._replyOpen = false;
    this._discarding = false;
    this._replyAudio = false;
    if (this._authFailed) {
      this._setConnection("auth-invalid");
      return;
    }
    this._setConnection("closed");
    if (!this._connected) return;
    const delay = this._authRetried && this._retries === 0 ? 0 : Math.min(RETRY_MAX_S, 2 ** this._retries);
    this._retries += 1;
    this._retryTimer = setTimeout(() => this._connect(), delay * 1000);
  }

  _onMessage(ws, event) {
    if (ws !== this._ws) return;
    if (typeof event.data !== "string") {
      this._onAudio(event.data);
      return;
    }
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (err) {
      return;
    }
    const type = message && message.type;
    if (this._discarding) {
      // What an interrupted reply had already sent, up to its last event: dropped.
      if (type === "sentence") this._drainSentenceSeen = true;
      if (REPLY_EVENTS.has(type)) return;
      if (TERMINAL_EVENTS.has(type)) {
        if (type === "error" && this._errorContinuesReply(message, this._drainSentenceSeen)) return;
        this._discarding = false;
        this._render();
        return;
      }
      if (type === "transcript") this._discarding = false; // the new utterance's
    }
    if (REPLY_EVENTS.has(type) && !this._replyOpen) return; // no reply is expected
    switch (type) {
      case "auth_required":
        this._authenticate(ws);
        break;
      case "auth_ok":
        this._authRetried = false;
        this._setConnection("authenticated");
        break;
      case "auth_invalid":
        this._onAuthInvalid();
        break;
      case "ready":
        this._retries = 0;
        this._ready = { entry_id: message.entry_id ?? null, stt: Boolean(message.stt), tts: Boolean(message.tts) };
        this._setConnection("ready");
        break;
      case "sentence":
        this._sentenceSeen = true;
        break;
      case "transcript":
        this._setSaid(message.text || "", !message.text);
        break;
      case "reply_delta":
        this._replyText += message.text || "";
        this._counters.replyDeltas += 1;
        this._setAnswer(this._replyText);
        break;
      case "audio_start":
        this._format = {
          rate: Number(message.rate) || 22050,
          width: Number(message.width) || 2,
          channels: Number(message.channels) || 1,
        };
        this._carry = null;
        this._replyAudio = true;
        this._playbackContext();
        break;
      case "level":
        this._pendingLevel = Math.max(0, Math.min(1, Number(message.value) || 0));
        break;
      case "audio_end":
        this._carry = null;
        break;
      case "reply_end":
        if (!this._replyOpen) break; // a reply already closed (an error ended it)
        this._conversationId = message.conversation_id || this._conversationId;
        this._setAnswer(message.text || this._replyText);
        this._counters.replies += 1;
        this._closeReply();
        break;
      case "ignored":
        this._setSaid(message.text || this._t("nothingHeard"), !message.text);
        this._setAnswer(this._t("ignored"), "muted");
        this._closeReply();
        break;
      case "interrupted":
        this._stopPlayback();
        this._closeReply();
        break;
      case "stopped":
        this._stopPlayback();
        if (this._replyOpen && this._turn && !this._replyText) this._setAnswer(this._t("stopped"), "muted");
        this._closeReply();
        break;
      case "error":
        this._onError(message);
        break;
      default:
        break;
    }
    this._render();
  }

  /** A speech error after a sentence was sent to TTS: the text still comes, then reply_end. */
  _errorContinuesReply(message, sentenceSeen = this._sentenceSeen) {
    return sentenceSeen && String(message.code || "").startsWith("speech_");
  }

  _onError(message) {
    const text = message.message || message.code || "error";
    if (this._capture || this._starting) {
      // The utterance is over on the server's side (STT failed or is not set up).
      this._stopCapture();
      this._setSaid(this._t("nothingHeard"), true);
      this._setAnswer(text, "failed");
      if (message.code === "stt_not_configured" && this._ready) {
        this._ready.stt = false;
        this._refreshNotices();
      }
      return;
    }
    if (this._replyOpen) {
      if (this._errorContinuesReply(message)) {
        this._showMessage(text); // no speech, but the text goes on
        return;
      }
      this._setAnswer(this._replyText ? `${this._replyText}\n${text}` : text, "failed");
      this._closeReply();
      return;
    }
    this._showMessage(text);
  }

  _closeReply() {
    this._replyOpen = false;
    this._replyAudio = false;
  }

  _onAuthInvalid() {
    if (!this._authRetried) {
      // The token may have expired between the check and the message: refresh it,
      // once; the endpoint closes the socket and the next connection waits for it.
      this._authRetried = true;
      this._refreshing = this._hass.auth
        .refreshAccessToken()
        .catch(() => this._giveUpAuth())
        .finally(() => {
          this._refreshing = null;
        });
      return;
    }
    this._giveUpAuth();
  }

  _giveUpAuth() {
    this._authFailed = true;
    clearTimeout(this._retryTimer);
    this._setConnection("auth-invalid");
  }

  // --- User actions ------------------------------------------------------------------

  _onMicClick() {
    if (this._capture) {
      this._finishListening();
      return;
    }
    this._startListening();
  }

  _onStopClick() {
    this._playbackContext();
    this._bargeIn();
    this._send({ type: "stop" });
    this._render();
  }

  _onSubmit() {
    const text = this._el.text.value.trim();
    if (!text || this._connection !== "ready" || this._capture || this._starting) return;
    this._playbackContext(); // a user gesture: the browser lets the page play sound now
    this._bargeIn();
    this._newTurn(text, "text");
    const message = { type: "text", text, language: this._el.language.value };
    if (this._conversationId) message.conversation_id = this._conversationId;
    if (!this._send(message)) return;
    this._el.text.value = "";
    this._openReply();
    this._render();
  }

  /** Silence what is playing; a reply still on its way is dropped until it ends. */
  _bargeIn() {
    this._stopPlayback();
    if (this._replyOpen) {
      this._discarding = true;
      this._drainSentenceSeen = this._sentenceSeen;
    }
    this._replyOpen = false;
    this._replyAudio = false;
    this._notices.delete("message:last");
    this._refreshNotices();
  }

  _openReply() {
    this._replyOpen = true;
    this._replyAudio = false;
    this._sentenceSeen = false;
    this._replyText = "";
  }

  _language() {
    return this._el.language.value || this._uiLanguage || "en";
  }

  // --- Capture -----------------------------------------------------------------------

  async _startListening() {
    if (this._starting || this._capture || this._connection !== "ready") return;
    if (!this._ready || !this._ready.stt || !this._micSupported()) return;
    this._starting = true;
    this._micError = null;
    const audio = this._playbackContext(); // created in the click: allowed to run
    this._bargeIn();
    this._render();
    let stream = null;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
      await audio.resume();
      await this._ensureWorklet(audio);
    } catch (err) {
      if (stream) for (const track of stream.getTracks()) track.stop();
      this._starting = false;
      this._micError = (err && (err.message || err.name)) || String(err);
      this._refreshNotices();
      this._render();
      return;
    }
    if (!this._starting || audio !== this._audio || this._connection !== "ready") {
      // Cancelled meanwhile (the page left, the connection dropped, text was sent).
      for (const track of stream.getTracks()) track.stop();
      this._starting = false;
      this._render();
      return;
    }
    const message = { type: "start", language: this._language() };
    if (this._conversationId) message.conversation_id = this._conversationId;
    this._send(message);
    const source = audio.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(audio, "majordome-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { targetRate: CAPTURE_RATE, frameSamples: FRAME_SAMPLES },
    });
    // The worklet outputs nothing, but a node must reach the destination to be run.
    const sink = audio.createGain();
    sink.gain.value = 0;
    source.connect(node);
    node.connect(sink);
    sink.connect(audio.destination);
    this._capture = {
      stream,
      source,
      node,
      sink,
      elapsedMs: 0,
      voicedMs: 0,
      silenceMs: 0,
      heard: false,
      noise: VAD.floor / VAD.noiseFactor,
      level: 0,
    };
    node.port.onmessage = (event) => this._onCaptured(event.data);
    this._starting = false;
    this._newTurn("", "voice");
    this._setSaid("…", true);
    this._render();
  }

  async _ensureWorklet(audio) {
    if (!this._workletReady) {
      if (!this._workletUrl) {
        this._workletUrl = URL.createObjectURL(new Blob([WORKLET_SOURCE], { type: "text/javascript" }));
      }
      this._workletReady = audio.audioWorklet.addModule(this._workletUrl);
      this._workletReady.catch(() => {
        this._workletReady = null;
      });
    }
    await this._workletReady;
  }

  _onCaptured(buffer) {
    const capture = this._capture;
    if (!capture) return;
    if (this._send(buffer)) this._counters.micBytes += buffer.byteLength;
    const pcm = new Int16Array(buffer);
    let sum = 0;
    for (let i = 0; i < pcm.length; i++) sum += pcm[i] * pcm[i];
    const rms = pcm.length ? Math.sqrt(sum / pcm.length) / 32768 : 0;
    const ms = (pcm.length * 1000) / CAPTURE_RATE;
    capture.elapsedMs += ms;
    capture.level = Math.min(1, rms * 4);
    // The noise estimate follows quiet frames quickly and loud ones very slowly.
    capture.noise = rms < capture.noise ? capture.noise * 0.7 + rms * 0.3 : capture.noise * 0.998 + rms * 0.002;
    const threshold = Math.max(VAD.floor, capture.noise * VAD.noiseFactor);
    if (rms > threshold) {
      capture.voicedMs += ms;
      capture.silenceMs = 0;
      if (capture.voicedMs >= VAD.minSpeechMs) capture.heard = true;
    } else {
      capture.silenceMs += ms;
      if (!capture.heard) capture.voicedMs = Math.max(0, capture.voicedMs - ms / 2);
    }
    if (
      (capture.heard && capture.silenceMs >= VAD.endSilenceMs) ||
      (!capture.heard && capture.elapsedMs >= VAD.noSpeechMs) ||
      capture.elapsedMs >= VAD.maxMs
    ) {
      this._finishListening();
    } else {
      this._render();
    }
  }

  /** End of speech: the endpoint transcribes and answers. */
  _finishListening() {
    if (!this._capture) return;
    this._stopCapture();
    if (this._send({ type: "end" })) {
      this._openReply();
      this._setSaid("…", true);
    }
    this._render();
  }

  _stopCapture() {
    this._starting = false;
    const capture = this._capture;
    this._capture = null;
    if (!capture) return;
    capture.node.port.onmessage = null;
    try {
      capture.source.disconnect();
      capture.node.disconnect();
      capture.sink.disconnect();
    } catch (err) {
      // already disconnected
    }
    for (const track of capture.stream.getTracks()) track.stop();
  }

  // --- Playback ----------------------------------------------------------------------

  /** The page's AudioContext, at the device's default rate; created on a user gesture. */
  _playbackContext() {
    if (!this._audio) {
      const Context = window.AudioContext || window.webkitAudioContext;
      this._audio = new Context();
      this._output = this._audio.createGain();
      this._output.connect(this._audio.destination);
      this._playhead = 0;
    }
    if (this._audio.state === "suspended") this._audio.resume().catch(() => {});
    return this._audio;
  }

  _onAudio(data) {
    const level = this._pendingLevel ?? 0;
    this._pendingLevel = null;
    this._counters.audioBytes += data.byteLength;
    this._counters.audioChunks += 1;
    if (this._discarding || !this._replyOpen) {
      this._counters.audioDropped += 1;
      this._render();
      return;
    }
    const { rate, width, channels } = this._format;
    if (width !== 2) {
      this._counters.audioDropped += 1; // only 16-bit PCM is spoken by Wyoming TTS
      this._render();
      return;
    }
    let bytes = new Uint8Array(data);
    if (this._carry) {
      const joined = new Uint8Array(this._carry.length + bytes.length);
      joined.set(this._carry);
      joined.set(bytes, this._carry.length);
      bytes = joined;
      this._carry = null;
    }
    const frameBytes = width * channels;
    const usable = bytes.length - (bytes.length % frameBytes);
    if (usable < bytes.length) this._carry = bytes.slice(usable);
    const frames = usable / frameBytes;
    if (frames === 0) return;
    const audio = this._playbackContext();
    const buffer = audio.createBuffer(channels, frames, rate); // the browser resamples
    const view = new DataView(bytes.buffer, bytes.byteOffset, usable);
    for (let c = 0; c < channels; c++) {
      const out = buffer.getChannelData(c);
      for (let i = 0; i < frames; i++) out[i] = view.getInt16((i * channels + c) * 2, true) / 32768;
    }
    const source = audio.createBufferSource();
    source.buffer = buffer;
    source.connect(this._output);
    const start = Math.max(this._playhead, audio.currentTime + PLAYBACK_LEAD_S);
    const item = { source, start, end: start + buffer.duration, level, bytes: usable, cancelled: false };
    this._playhead = item.end;
    this._scheduled.push(item);
    source.addEventListener("ended", () => {
      const index = this._scheduled.indexOf(item);
      if (index >= 0) this._scheduled.splice(index, 1);
      if (!item.cancelled) {
        this._counters.chunksPlayed += 1;
        this._counters.bytesPlayed += item.bytes;
      }
      this._render();
    });
    source.start(start);
    this._render();
  }

  _stopPlayback() {
    const scheduled = this._scheduled;
    this._scheduled = [];
    for (const item of scheduled) {
      item.cancelled = true;
      this._counters.chunksCancelled += 1;
      try {
        item.source.stop();
      } catch (err) {
        // not started yet or already over
      }
      item.source.disconnect();
    }
    this._pendingLevel = null;
    this._carry = null;
    this._playhead = 0;
  }

  /** The context time being heard now: the output's own clock when it has one. */
  _audibleTime() {
    const audio = this._audio;
    if (!audio) return 0;
    if (audio.getOutputTimestamp) {
      const stamp = audio.getOutputTimestamp();
      if (stamp && stamp.contextTime > 0) return stamp.contextTime;
    }
    return Math.max(0, audio.currentTime - (audio.outputLatency || audio.baseLatency || 0));
  }

  // --- The sphere --------------------------------------------------------------------

  _animate(now) {
    if (!this._connected) return;
    let target = 0;
    let playing = null;
    if (this._capture) {
      target = this._capture.level;
    } else if (this._scheduled.length && this._audio) {
      const heard = this._audibleTime();
      playing = this._scheduled.find((item) => item.start <= heard && heard < item.end) || null;
      target = playing ? playing.level : 0;
    }
    const dt = this._levelTime === null ? 0 : Math.min(0.25, (now - this._levelTime) / 1000);
    this._levelTime = now;
    const tau = target > this._level ? LEVEL_ATTACK_S : LEVEL_RELEASE_S;
    this._level += (target - this._level) * (1 - Math.exp(-dt / tau));
    if (this._level < 0.001) this._level = 0;
    this.style.setProperty("--mj-level", this._level.toFixed(3));
    if (playing && this._level > this._counters.peakLevel) {
      this._counters.peakLevel = this._level; // the sphere moved with speech being played
      this._render();
    }
    this._frame = requestAnimationFrame((time) => this._animate(time));
  }
}

if (!customElements.get("majordome-voice-panel")) {
  customElements.define("majordome-voice-panel", MajordomeVoicePanel);
}
