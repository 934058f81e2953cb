"""Cut a streamed reply into sentences a TTS engine can say, each as soon as it is complete.

sentence-stream finds the sentence ends; this module fixes what it gets wrong for speech:
list markers ("1." taken for a sentence), line breaks without punctuation, abbreviations
it does not know ("e.g. Kitchen"), markup hiding a period ("**Done.** Next"), French
guillemets ("? » Oui"), sentences too long to wait for, and markdown or emoji left in.
"""

from __future__ import annotations

from collections.abc import Iterable

import regex as re
from sentence_stream import SentenceBoundaryDetector

# A sentence longer than this is cut at its last comma or semicolon from half of it on
# (or the next one), so TTS does not wait forever; at twice as long without one, at a
# space, else there.
MAX_SENTENCE = 200

_EMOJI = r"\p{Extended_Pictographic}\p{Emoji_Modifier}\p{Regional_Indicator}\u200d\ufe0f\u20e3"
# Never spoken, and dropped before boundary detection because they hide a sentence end
# from it ("**Done.** Next", "Vraiment ? » Oui", "Done! 😊 Next"). One char each, so
# removing them delta by delta is the same as removing them from the whole text.
_NOISE = re.compile(rf"[*`«»\r{_EMOJI}]|(?![°№])\p{{So}}")
# A list marker or heading opening a line, then its text.
_MARKER = re.compile(r"[ \t]*(?:[-+•]|\d{1,3}[.)]|#{1,6})[ \t]+(?=\S)")
# A line start that may still become a marker when more text comes: "1", "1.", "- ".
# (The spaces after the marker belong to it: two runs side by side, each optional, were
# tried in every split on a long run of spaces.)
_MAYBE_MARKER = re.compile(r"[ \t]*(?:(?:[-+•]|\d{1,3}[.)]?|#{1,6})[ \t]*)?")
# A line start held back longer than this is text: each delta re-read it (quadratic).
_MAX_LINE_START = 80
# Abbreviations that do not end a sentence even before a capital ("e.g. Kitchen").
# sentence-stream guesses only capitalised ones ("Mr.", "M."), so both are listed here.
_OPEN_ABBREVIATION = re.compile(
    r"(?:^|[\s(])(?:Mr|Mrs|Ms|Dr|St|Prof|M|MM|Mme|Mlle|Mmes|e\.g|i\.e|cf|vs|approx|env|p\. ex)\.$"
)
_COMMA = re.compile(r"[,;](?=\s)")
_SPACE = re.compile(r"\s")

# [text](url), the url with one level of parentheses (Wikipedia's). Neither part spans
# an opening bracket, and nothing is given back (possessive): a "[" or "(" left open was
# read to the end of the text from each of them (quadratic).
_LINK = re.compile(r"\[([^\[\]]*+)\]\((?:[^()]++|\([^()]*+\))*+\)")
_LINE_MARKER = re.compile(r"(?m)^[ \t]*(?:[-+•>]|\d{1,3}[.)]|#{1,6})[ \t]+")
# _italics_, __bold__: a run of underscores opening or ending a word. A run is only
# tried from its start: from each of its underscores, it was quadratic.
_EDGE_UNDERSCORES = re.compile(r"(?<!\w)_+|(?<!_)_+(?!\w)")
_SYMBOLS = re.compile(r"[_#~|\\^{}\[\]]")  # an inner "_" (kitchen_lamp) becomes a space
# Left where an emoji was: "on 👍.". On a line whose spaces are single already.
_SPACE_BEFORE_STOP = re.compile(r" (?=[.,…])")
_WORD = re.compile(r"\w")


def speakable(text: str) -> str:
    """Return text as it should be spoken: no markdown, emoji, bullets or stray symbols.

    Empty when nothing is left to say.
    """
    text = _LINK.sub(r"\1", _NOISE.sub("", text))
    text = _LINE_MARKER.sub("", text)
    text = _SYMBOLS.sub(" ", _EDGE_UNDERSCORES.sub("", text))
    lines = (_SPACE_BEFORE_STOP.sub("", " ".join(line.split())) for line in text.split("\n"))
    text = "\n".join(line for line in lines if line)
    return text if _WORD.search(text) else ""


class SentenceSplitter:
    """Feed text deltas as they stream; get sentences as soon as they are complete.

    One splitter per reply: flush() ends the reply, the splitter is not reused after it.
    """

    # Look-ahead, inherent to streaming: a sentence is released when the next non-space
    # char arrives and shows it is over (a capital: "It is 21." may go on with ".5", "Dr."
    # with a name), at a line break, or at flush(); a lowercase or digit start ("Done! 3
    # lamps") keeps it to the line end. So each sentence waits for at least one more delta.

    def __init__(self) -> None:
        self._detector = SentenceBoundaryDetector()
        # Start of the current line while it may still be a list marker; None once known.
        self._line_start: str | None = ""
        self._held = ""  # a sentence ending with an abbreviation, waiting for its end

    def feed(self, text: str) -> list[str]:
        """Add a delta; return the sentences it completed, cleaned for speech."""
        *lines, rest = _NOISE.sub("", text).split("\n")
        sentences: list[str] = []
        for line in lines:
            sentences += self._add(line)
            sentences += self._end_line()
        return sentences + self._add(rest)

    def flush(self) -> list[str]:
        """End the reply: return what is left, cleaned for speech."""
        return self._end_line()

    def _add(self, text: str) -> list[str]:
        if self._line_start is not None:
            text = self._line_start + text
            if marker := _MARKER.match(text):
                # Spoken without "1." and, unlike in sentence-stream, never a sentence.
                text = text[marker.end() :]
            elif len(text) <= _MAX_LINE_START and _MAYBE_MARKER.fullmatch(text):
                self._line_start = text
                return []
            self._line_start = None
        return self._release(self._detector.add_chunk(text)) + self._cut_long()

    def _end_line(self) -> list[str]:
        """A line break ends the sentence, with or without punctuation."""
        sentences = self._release(self._detector.add_chunk(self._line_start or ""))
        self._line_start = ""
        return sentences + self._release([self._detector.finish()], end=True)

    def _cut_long(self) -> list[str]:
        sentences: list[str] = []
        while True:
            # The text sentence-stream (1.3.0) holds back: its public state attributes.
            pending = self._detector.current_sentence + self._detector.remaining_text
            if len(pending) <= MAX_SENTENCE:
                return sentences
            # Cut positions depend on the text only, not on how it was split in deltas.
            # No search reads past twice MAX_SENTENCE, where a cut is certain (at a
            # space, else anywhere: no word is that long), so the pending text stays
            # short: each delta reads it again.
            longest = 2 * MAX_SENTENCE
            commas = list(_COMMA.finditer(pending, MAX_SENTENCE // 2, MAX_SENTENCE + 1))
            cut = commas[-1] if commas else _COMMA.search(pending, MAX_SENTENCE, longest + 1)
            if cut is not None:
                end = cut.end()
            elif len(pending) < longest:
                return sentences
            else:
                space = _SPACE.search(pending, MAX_SENTENCE, longest)
                end = space.end() if space else longest
            self._detector = SentenceBoundaryDetector()
            sentences += self._release([pending[:end]])
            sentences += self._release(self._detector.add_chunk(pending[end:]))

    def _release(self, sentences: Iterable[str], end: bool = False) -> list[str]:
        spoken: list[str] = []
        for found in sentences:
            sentence = f"{self._held} {found}".strip()
            self._held = ""
            if not end and _OPEN_ABBREVIATION.search(sentence):
                self._held = sentence
            elif text := speakable(sentence):
                spoken.append(text)
        return spoken
