"""Metacognition: deciding whether what the microphone heard deserves an answer.

Speech-to-text engines hallucinate on silence and noise. Whisper in particular writes
the text its training subtitles put on silent stretches: "Thank you.", "you", YouTube
outros, subtitle credits ("Sous-titres réalisés par la communauté d'Amara.org"), music
markers, strings in an alphabet nobody in the house speaks, one word twenty times.
Answering those makes the butler talk to an empty room.

Stage 1, `screen_rules`, is rules only (microseconds, no I/O). On the normalised text
(casefolded, accents and punctuation removed) it drops:

- empty text, noise markers alone ("[Music]", "(rires)", "*sigh*") and anything with a
  music note (lyrics), text without letters ("...", "♪"), except a short number, which
  answers a question ("21", "7:30");
- credits and outros matched by patterns, so unseen variants go too: Amara.org and
  subtitle credits in many languages, URLs, "thanks for watching", "subscribe";
- text made only of known hallucination phrases, fillers and connectors ("Thank you.",
  "Merci. Au revoir.", "you", "Hmm.", "Thank you thank you thank you");
- runaway repetition: a word or group of words four times in a row (a phrase of three
  words or more, three times) covering most of the text, or a long text of few words;
- text whose letters are mostly outside the allowed scripts (default Latin).

Policy on the ambiguous ones. Politeness alone is dropped: "thank you", "merci",
"bye", "au revoir", "à bientôt" are Whisper's most frequent inventions, and a genuine
one needs no answer, whereas answering a false one speaks up in an empty room. A
request that comes with them passes ("thank you, turn off the light", "non merci").
Answers to the butler's questions always pass: "yes", "no", "oui", "non", "okay",
"d'accord", a number, a room. Greetings that may trigger routines pass ("good night",
"bonne nuit", "bonjour"), as do mild repetitions ("très très chaud", "non non non").
Media words pass when they are a command ("active les sous-titres", "subtitles on"):
only credit-shaped text is dropped.

Stage 2, `async_check_with_llm`, optional, asks a model whether the utterance is meant
for the assistant and coherent with the conversation. It is built to share the main
turn's prompt prefix (see its docstring) and fails open: on any doubt, Majordome answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
import json
from pathlib import Path
import re
import time
from typing import Any, Final
import unicodedata

import openai

from .backend import BackendError, ErrorKind, async_side_completion, without_think
from .const import LOGGER, MAX_UTTERANCE_CHARS


class Reason(StrEnum):
    """Why an utterance was ignored or kept."""

    EMPTY = "empty"
    NO_LETTERS = "no_letters"
    HALLUCINATION = "hallucination"
    REPETITION = "repetition"
    FOREIGN_SCRIPT = "foreign_script"
    NOT_ADDRESSED = "not_addressed"
    PASSED = "passed"
    CHECK_FAILED = "check_failed"  # stage 2 could not decide: failed open


@dataclass(frozen=True)
class Verdict:
    """The decision on one utterance: `ignore` it or answer it, and why."""

    ignore: bool
    reason: Reason
    stage: int  # 1: the rules, 2: the model's check
    detail: str = ""  # what matched, for the debug log and the traces


# --- Normalisation -----------------------------------------------------------------

_FOLDED_LETTERS: Final = {"œ": "oe", "æ": "ae", "ø": "o", "ł": "l", "đ": "d", "ı": "i"}


class _NormalizeTable(dict[int, int | str | None]):
    """A `str.translate` table filled on first sight of each character.

    Letters and digits stay, combining marks (the accents NFKD split off) go, anything
    else becomes a space. Filling lazily avoids scanning all of Unicode at import.
    """

    def __missing__(self, code: int) -> int | str | None:
        char = chr(code)
        category = unicodedata.category(char)
        value: int | str | None
        if char in _FOLDED_LETTERS:
            value = _FOLDED_LETTERS[char]
        elif category[0] in "LN":
            value = code
        elif category[0] == "M":
            value = None
        else:
            value = " "
        self[code] = value
        return value


_TABLE: Final = _NormalizeTable()
for _code in range(128):  # ASCII filled now, the rest on first sight
    _TABLE.__missing__(_code)


def normalize(text: str) -> str:
    """Casefold, strip accents, turn punctuation and symbols to spaces, collapse spaces."""
    folded = text.casefold()
    if not folded.isascii():
        # NFKD splits accents off their letters and folds width and ligature variants.
        folded = unicodedata.normalize("NFKD", folded)
    return " ".join(folded.translate(_TABLE).split())


# --- Scripts -------------------------------------------------------------------------

SCRIPTS: Final[tuple[str, ...]] = (
    "Latin",
    "Cyrillic",
    "Greek",
    "Arabic",
    "Hebrew",
    "Han",
    "Hiragana",
    "Katakana",
    "Hangul",
    "Devanagari",
    "Thai",
)
DEFAULT_SCRIPTS: Final = frozenset({"Latin"})

# The first word of a letter's Unicode name names its script, with these exceptions.
_SCRIPT_OF_NAME_PREFIX: Final = {
    "CJK": "Han",
    "IDEOGRAPHIC": "Han",
    "KATAKANA-HIRAGANA": "Katakana",
    "MODIFIER": "",  # modifier letters belong to no script in particular
}
_script_cache: dict[str, str] = {}


def script_of(letter: str) -> str:
    """Return the script of a letter ("Latin", "Han"...), "" when it has none."""
    script = _script_cache.get(letter)
    if script is None:
        prefix = unicodedata.name(letter, "").split(" ", 1)[0]
        script = _SCRIPT_OF_NAME_PREFIX.get(prefix, prefix.title())
        _script_cache[letter] = script
    return script


def _foreign_share(normalized: str, allowed: frozenset[str]) -> tuple[float, str]:
    """Return the share of letters outside `allowed` scripts and the most frequent one."""
    if normalized.isascii():
        # ASCII letters are Latin: the common case costs one check.
        return (0.0, "") if "Latin" in allowed else (1.0, "Latin")
    letters = 0
    foreign: dict[str, int] = {}
    for char in normalized:
        if char.isascii():
            if char.isalpha():
                letters += 1
                if "Latin" not in allowed:
                    foreign["Latin"] = foreign.get("Latin", 0) + 1
            continue
        if not char.isalpha():
            continue
        script = script_of(char)
        if not script:
            continue
        letters += 1
        if script not in allowed:
            foreign[script] = foreign.get(script, 0) + 1
    if not letters or not foreign:
        return 0.0, ""
    main = max(foreign, key=lambda name: foreign[name])
    return sum(foreign.values()) / letters, main


# --- Known hallucinations --------------------------------------------------------------

# The word lists live in phrases/, next to this module, one plain-text file per
# list (the rules for editing them are at the top of each file). They are read once,
# here at import: Home Assistant imports integrations in an executor thread.
_LISTS_DIR: Final = Path(__file__).with_name("phrases")


def read_list(name: str) -> tuple[str, ...]:
    """Return the entries of phrases/<name>.txt, in file order.

    One entry a line, surrounding spaces stripped; blank lines and lines that start
    with "#" are skipped.
    """
    text = (_LISTS_DIR / f"{name}.txt").read_text(encoding="utf-8-sig")
    entries = []
    for line in text.splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            entries.append(entry)
    return tuple(entries)


# Whole utterances Whisper invents on silence, by language (phrases.txt). The text is
# dropped when it is made only of these, fillers and connectors, so "Thank you. Bye."
# goes too.
_PHRASES: Final = read_list("phrases")
# Tokens that may sit between phrases without making the text a request (connectors.txt).
_CONNECTORS: Final = frozenset(normalize(word) for word in read_list("connectors"))
# Hesitations and laughter: "hmm", "euh", "mhm", "ahh", "hahahaha".
_FILLER: Final = re.compile(
    r"h*m+h*|m+h+m+|h*u+h*m*|h?e+u+h*|h+u+m+|a+h+|o+h+|e+h+|e+r+m*|p+f+|p+s+t+|s+h+|t+s+"
    r"|(?:h[aeiou]){2,}h?|(\w{1,3}?)\1{3,}"
)


def _phrase_index(phrases: tuple[str, ...]) -> dict[str, list[tuple[str, ...]]]:
    """Index the normalised phrases by their first token, longest first."""
    index: dict[str, list[tuple[str, ...]]] = {}
    for phrase in phrases:
        tokens = tuple(normalize(phrase).split())
        index.setdefault(tokens[0], []).append(tokens)
    for candidates in index.values():
        candidates.sort(key=len, reverse=True)
    return index


_PHRASE_INDEX: Final = _phrase_index(_PHRASES)
_MAX_PHRASE_TOKENS: Final = 40  # longer texts are not a string of outros


def _is_free(token: str) -> bool:
    """Return True for a token that adds nothing: a connector or a filler."""
    return token in _CONNECTORS or _FILLER.fullmatch(token) is not None


def _only_known_phrases(tokens: list[str]) -> bool:
    """Return True when the tokens are known phrases, fillers and connectors only."""
    count = len(tokens)
    if count > _MAX_PHRASE_TOKENS:
        return False
    # A request starts with a verb or a noun: most texts leave on the first token.
    if tokens[0] not in _PHRASE_INDEX and not _is_free(tokens[0]):
        return False
    reachable = [False] * (count + 1)
    reachable[0] = True
    for start in range(count):
        if not reachable[start]:
            continue
        token = tokens[start]
        if _is_free(token):
            reachable[start + 1] = True
        for phrase in _PHRASE_INDEX.get(token, ()):
            end = start + len(phrase)
            if end <= count and tuple(tokens[start:end]) == phrase:
                reachable[end] = True
    return reachable[count]


# Patterns on the normalised text, for the families whose wording varies: credits,
# outros and calls to subscribe. Each is named for the log.
_SUBTITLE = r"(?:sous titr\w*|subtit\w*|untertitel\w*|sottotitol\w*|ondertitel\w*|legendas?|napisy)"
_PATTERNS: Final = {
    "amara": r"\bamara\b",
    "subtitle credit": (
        r"^sous titrage\b"
        rf"|^{_SUBTITLE}(?: \w+){{0,2}}? (?:by|par|realise\w*|fait\w*|fourni\w*|von|im|des|der"
        r"|creati|creato|a cura|e revisione|realizados?|hechos?|por|de la|door|ingediend|pela"
        r"|przez|stworzone|wykonane)\b"
        r"|\b(?:transcri\w*|translat\w*|caption\w*|traduction|tradu\w*|sous titr\w*|subtit\w*)"
        r" (?:by|par)\b"
        r"|\bsous titres? (?:et|&) (?:traduction|synchro\w*)"
    ),
    "russian subtitle credit": r"субтитр|\bdimatorzok\b",
    # In a French or English home, thanks in another language are an outro.
    "foreign thanks": (r"^(?:\w+ )?(?:danke|gracias|grazie|obrigad[oa]|bedankt|dziekuje)\b"),
    "thanks for watching": (
        r"\b(?:thanks?|thank you)(?: \w+){0,2}? for (?:watching|viewing|listening|tuning in"
        r"|your attention|joining us|having me|having us)\b"
        r"|\bmerci(?: \w+){0,2}? (?:d avoir|de nous avoir|de m avoir) (?:regarde|ecoute|suivi|visionne)"
        r"|\b(?:merci|remercie\w*) (?:de|pour) (?:votre|ton|vos) (?:attention|ecoute|visionnage)"
        r"|\b(?:furs|fur s|fur das) zuschauen\b|\bgracias por ver\b|\bper la visione\b"
        r"|\bpor assistir\b|\bvoor het kijken\b"
    ),
    "subscribe": (
        r"\b(?:subscrib\w*|abonnez|abonner|abonne toi|abonnes vous|suscribe\w*|inscreva se"
        r"|iscriviti|abonniert|abonnieren)\b"
        r"|\blike and (?:share|comment)\b|\b(?:hit|ring|smash) the bell\b|\b(?:clique|cliquez|active|activez) sur la cloche\b"
        r"|\bpouce bleu\b|\bleave a (?:like|comment)\b|\blaissez (?:un|moi un) (?:like|commentaire|pouce)\b"
        r"|\b(?:liker|commenter|partager) (?:la|cette) video\b|\blikez\b"
        r"|\bn oubliez pas de (?:liker|partager|commenter|mettre un pouce)\b"
        r"|\blike button\b|\bin the comments\b|\b(?:dans les|en) commentaires?\b"
        r"|\b(?:my|our) (?:channel|other videos)\b|\bmes autres videos\b"
        r"|\bin the description\b|\blink below\b|\b(?:dans|en) (?:la )?description\b"
    ),
    "outro": (
        r"\bsee you(?: \w+){0,2}? (?:next (?:time|week|video|episode)|(?:in|on) (?:the|my) next)\b"
        r"|\b(?:in|dans) (?:the|la|le) (?:next|prochaine?) (?:video|episode)\b"
        r"|\b(?:on se retrouve|rendez vous|je vous retrouve|je vous dis)(?: dans| a| au| pour)?"
        r" (?:la|le) prochain\w*"
        r"|\b(?:une|la) (?:nouvelle|prochaine) video\b|\bend of (?:the|this) video\b"
        r"|\bfin de (?:la|cette) video\b|\bthat s (?:it|all) for (?:today|this video)\b"
        r"|\bi hope you (?:enjoyed|liked)\b"
        r"|\bwelcome (?:back )?to (?:my|our|the) channel\b"
        r"|\bbienvenue (?:sur|dans) (?:ma|notre|cette) (?:chaine|video)\b"
        r"|\bj espere que (?:vous avez|ca vous a|cette video vous a) (?:aime|apprecie|plu)\b"
        r"|\bbis zum nachsten mal\b|\bhasta la proxima\b|\balla prossima\b|\btot de volgende\b"
    ),
}
# Scripts without spaces between words: substrings rather than words (cjk_fragments.txt).
_CJK_FRAGMENTS: Final = read_list("cjk_fragments")

_PATTERN_NAMES: Final = list(_PATTERNS)
_HALLUCINATION_RE: Final = re.compile(
    "|".join(
        [f"(?P<p{i}>{pattern})" for i, pattern in enumerate(_PATTERNS.values())]
        + [f"(?P<cjk>{'|'.join(re.escape(normalize(f)) for f in _CJK_FRAGMENTS)})"]
    )
)
# On the raw text: a URL, a credit ("Sous-titres : ..."), markers Whisper brackets.
_URL_RE: Final = re.compile(r"\bwww\.|https?://|\b\w+\.(?:com|org|net|gov|edu|tv)\b", re.IGNORECASE)
_CREDIT_RE: Final = re.compile(
    r"^\W*(?:sous[- ]?titr\w*|subt[ií]t\w*|untertitel\w*|sottotitol\w*|ondertitel\w*"
    r"|traduction|transcription|translation|captions?)\s*:",
    re.IGNORECASE,
)
_MUSIC_RE: Final = re.compile(r"[♩♪♫♬🎵🎶🎼]")
# A number alone answers a question: "21", "20,5", "7:30", "19 h", "50 %".
# On the stripped text: no two runs of spaces side by side, so no run is tried in every
# split (on "1", a million spaces and "#", the unstripped pattern never ended).
_NUMBER_RE: Final = re.compile(
    r"[+-]?\d{1,4}(?:[.,:h]\s?\d{1,2})?(?:\s*(?:%|°\s?c?|h))?(?:\s*[.!?])?"
)
# Markers Whisper brackets: "[Music]", "(rires)", "*applause*", "<noise>".
_MARKER_CLOSERS: Final = {"[": "]", "(": ")", "*": "*", "<": ">", "【": "】", "（": "）"}


def strip_markers(text: str) -> tuple[str, int]:
    """Replace each bracketed marker by a space; return the text and how many there were.

    A marker runs from an opener to the first closer after it. One pass, in linear time:
    once an opener has no closer after it, no later one of its kind can have one, so its
    kind is no longer looked for (a regex retried it at every opener: quadratic).
    """
    parts: list[str] = []
    count = start = position = 0
    openers = "".join(_MARKER_CLOSERS)
    finder = re.compile(f"[{re.escape(openers)}]")
    while match := finder.search(text, position):
        index = match.start()
        end = text.find(_MARKER_CLOSERS[text[index]], index + 1)
        if end >= 0:
            parts += (text[start:index], " ")
            count += 1
            start = position = end + 1
            continue
        openers = openers.replace(text[index], "")
        if not openers:
            break
        finder = re.compile(f"[{re.escape(openers)}]")
        position = index + 1
    return "".join([*parts, text[start:]]), count


# --- Repetition ------------------------------------------------------------------------

_MAX_PERIOD: Final = 8  # the longest group of words looked at for repetition
_MAX_REPETITION_TOKENS: Final = 300  # Whisper's 30 s windows stay far below


def _runaway_repetition(tokens: list[str]) -> str:
    """Describe the runaway repetition in the tokens, "" when there is none.

    Four times the same word or group of words in a row, or three times a group of
    three or more, covering at least 60% of the text; or 12 words or more with a
    quarter of them distinct. "très très chaud" and "non non non" pass: people say those.
    """
    tokens = tokens[:_MAX_REPETITION_TOKENS]
    count = len(tokens)
    if count < 4:
        return ""
    distinct = len(set(tokens))
    # A long text of few words is a loop with small variations.
    if count >= 12 and distinct * 4 <= count:
        return f"{distinct} distinct words in {count}"
    # A run covering 60% of the text leaves at most 40% of it for other words.
    if distinct > _MAX_PERIOD + count * 2 // 5:
        return ""
    for period in range(1, min(_MAX_PERIOD, count // 3) + 1):
        needed = 4 if period < 3 else 3
        if period * needed > count:
            break
        streak = 0
        for index, (token, later) in enumerate(zip(tokens, tokens[period:], strict=False)):
            if token == later:
                streak += 1
                repeats = (streak + period) // period
                if repeats >= needed and repeats * period * 5 >= count * 3:
                    first = index - streak + 1
                    group = " ".join(tokens[first : first + period])
                    return f"{group!r} x{repeats}+"
            else:
                streak = 0
    return ""


# --- Stage 1 ---------------------------------------------------------------------------


def _drop(reason: Reason, detail: str) -> Verdict:
    return Verdict(ignore=True, reason=reason, stage=1, detail=detail)


_PASSED: Final = Verdict(ignore=False, reason=Reason.PASSED, stage=1)


def screen_rules(text: str, allowed_scripts: frozenset[str] = DEFAULT_SCRIPTS) -> Verdict:
    """Stage 1: drop what is certainly not speech meant for the assistant (rules only).

    `allowed_scripts` holds names from SCRIPTS. See the module docstring for the policy.
    """
    text = text[:MAX_UTTERANCE_CHARS]  # a longer message is refused before: see entity.py
    if not text or text.isspace():
        return _drop(Reason.EMPTY, "")
    if _MUSIC_RE.search(text):
        return _drop(Reason.HALLUCINATION, "music note")
    if _URL_RE.search(text):
        return _drop(Reason.HALLUCINATION, "url")
    if _CREDIT_RE.match(text):
        return _drop(Reason.HALLUCINATION, "credit")
    spoken, markers = strip_markers(text)
    normalized = normalize(spoken)
    if not normalized:
        if markers:
            return _drop(Reason.HALLUCINATION, "noise marker")
        return _drop(Reason.NO_LETTERS, "")
    if not any(char.isalpha() for char in normalized):
        if _NUMBER_RE.fullmatch(spoken.strip()):
            return _PASSED
        return _drop(Reason.NO_LETTERS, normalized[:40])

    if match := _HALLUCINATION_RE.search(normalized):
        group = match.lastgroup or ""
        name = "cjk credit" if group == "cjk" else _PATTERN_NAMES[int(group[1:])]
        return _drop(Reason.HALLUCINATION, name)
    tokens = normalized.split()
    if _only_known_phrases(tokens):
        return _drop(Reason.HALLUCINATION, normalized[:60])
    if repetition := _runaway_repetition(tokens):
        return _drop(Reason.REPETITION, repetition)
    share, script = _foreign_share(normalized, allowed_scripts)
    if share >= 0.5:
        return _drop(Reason.FOREIGN_SCRIPT, f"{script} {share:.0%}")
    return _PASSED


# --- Stage 2 ---------------------------------------------------------------------------

CHECK_MAX_TOKENS: Final = 3

_CHECK_INSTRUCTION: Final = """\
[System check, not a request from the user.] The microphone picked up the speech \
transcribed below{language}. Before anyone answers it, decide: is it plausibly addressed \
to you, the home assistant, and coherent with the conversation so far?
YES: a request, a question or an answer meant for you, even a very short one \
("stop", "yes", "lights off", "la cuisine").
NO: noise, a transcription artefact (subtitle credits, "thanks for watching", a word \
repeated), or talk not meant for you (people talking to each other, a TV, a song).
Answer with exactly one word, YES or NO, and call no tool.
Transcription: {utterance}"""

_FIRST_WORD: Final = re.compile(r"[^\W\d_]+")
_YES: Final = frozenset({"yes", "oui"})
_NO: Final = frozenset({"no", "non"})


def check_message(utterance: str, language: str | None) -> dict[str, Any]:
    """Return the user message that asks the model to judge the utterance."""
    return {
        "role": "user",
        "content": _CHECK_INSTRUCTION.format(
            language=f" (language: {language})" if language else "",
            # JSON quoting: the utterance cannot close the quotes and speak as us.
            utterance=json.dumps(utterance, ensure_ascii=False),
        ),
    }


def _fail_open(detail: str) -> Verdict:
    LOGGER.warning("Addressee check failed, answering anyway: %s", detail)
    return Verdict(ignore=False, reason=Reason.CHECK_FAILED, stage=2, detail=detail)


def parse_check_answer(content: str | None) -> Verdict:
    """Read the model's answer: its first word must be yes/oui or no/non."""
    answer = without_think(content or "")
    word = _FIRST_WORD.search(answer)
    first = word.group().casefold() if word else ""
    if first in _YES:
        return Verdict(ignore=False, reason=Reason.PASSED, stage=2, detail=answer.strip())
    if first in _NO:
        return Verdict(ignore=True, reason=Reason.NOT_ADDRESSED, stage=2, detail=answer.strip())
    return _fail_open(f"unexpected answer {answer[:80]!r}")


async def async_check_with_llm(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    prefix_messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    utterance: str,
    language: str | None,
    timeout: float,  # noqa: ASYNC109 - the caller's budget, applied with asyncio.timeout
    extra_body: dict[str, Any] | None = None,
) -> Verdict:
    """Stage 2: ask the model whether the utterance is meant for the assistant.

    llama.cpp keeps one cached prompt per slot, so any side request evicts the main
    turn's cached prefix. This one shares it instead: `prefix_messages` must be the
    system prompt and history exactly as the main call will send them, and `tools` the
    same tools when `model` is the main model (None for another, faster model). Only a
    final user message is new, so the check costs its own tokens, and the main turn
    that follows reuses the prefix up to its own user message.

    Never raises (except cancellation): on a timeout, an error or an answer that is
    neither yes nor no, it logs why and fails open with CHECK_FAILED.
    """
    started = time.monotonic()
    try:
        answer = await async_side_completion(
            client,
            model=model,
            messages=[*prefix_messages, check_message(utterance, language)],
            # No tool_choice: "none" makes some servers render the prompt without the
            # tools, which would break the shared prefix. A tool call fails open.
            tools=tools,
            max_tokens=CHECK_MAX_TOKENS,
            time_limit=timeout,
            extra_body=extra_body,
        )
    except BackendError as err:
        if err.kind is ErrorKind.TIMEOUT:
            return _fail_open(f"no answer within {timeout:g} s")
        return _fail_open(f"{type(err.__cause__ or err).__name__}: {err}")
    elapsed = time.monotonic() - started
    verdict = parse_check_answer(answer)
    LOGGER.debug("Addressee check in %.2f s: %s %r", elapsed, verdict.reason, verdict.detail)
    return verdict
