"""The sentence splitter: streamed replies cut into speakable sentences, English and French."""

from __future__ import annotations

from collections.abc import Callable
import itertools

import pytest

from custom_components.majordome.voice.sentences import MAX_SENTENCE, SentenceSplitter, speakable


def _whole(text: str) -> list[str]:
    return [text]


def _deltas(sizes: tuple[int, ...]) -> Callable[[str], list[str]]:
    def chunk(text: str) -> list[str]:
        out, at = [], 0
        for size in itertools.cycle(sizes):
            if at >= len(text):
                return out
            out.append(text[at : at + size])
            at += size
        return out  # pragma: no cover

    return chunk


CHUNKERS = {
    "whole": _whole,
    "1": _deltas((1,)),
    "2": _deltas((2,)),
    "3": _deltas((3,)),
    "1-3": _deltas((1, 3, 2, 2, 1, 3)),
}


def split(text: str, chunker: Callable[[str], list[str]]) -> list[str]:
    splitter = SentenceSplitter()
    sentences = [s for delta in chunker(text) for s in splitter.feed(delta)]
    return sentences + splitter.flush()


def cases(*items: tuple[str, list[str]]) -> list[tuple[str, list[str]]]:
    return list(items)


@pytest.fixture(params=list(CHUNKERS), name="chunker")
def fixture_chunker(request: pytest.FixtureRequest) -> Callable[[str], list[str]]:
    return CHUNKERS[request.param]


NUMBERS = cases(
    ("It is 21.5 degrees. The heating is on.", ["It is 21.5 degrees.", "The heating is on."]),
    (
        "Il fait 21,5 degrés. Le chauffage est allumé.",
        ["Il fait 21,5 degrés.", "Le chauffage est allumé."],
    ),
    ("The time is 10:30. Have a nice day.", ["The time is 10:30.", "Have a nice day."]),
    ("Il est 10 h 30. Bonne journée.", ["Il est 10 h 30.", "Bonne journée."]),
    ("The alarm rings at 7.30 p.m. tomorrow.", ["The alarm rings at 7.30 p.m. tomorrow."]),
    ("I eat at 7.30 p.m. Then I sleep.", ["I eat at 7.30 p.m.", "Then I sleep."]),
    ("Le réveil sonne à 7.30 demain. Voilà.", ["Le réveil sonne à 7.30 demain.", "Voilà."]),
    ("Version 1.5.4 is installed. Restart?", ["Version 1.5.4 is installed.", "Restart?"]),
    (
        "La version 1.5.4 est installée. Redémarrer ?",
        ["La version 1.5.4 est installée.", "Redémarrer ?"],
    ),
)

ABBREVIATIONS = cases(
    (
        "Mr. Smith and Mrs. Smith are home. Dr. Brown is out. St. Louis is far.",
        ["Mr. Smith and Mrs. Smith are home.", "Dr. Brown is out.", "St. Louis is far."],
    ),
    (
        "Pick a room, e.g. Kitchen or Hall. Then ask.",
        ["Pick a room, e.g. Kitchen or Hall.", "Then ask."],
    ),
    (
        "Use the main one, i.e. The big lamp. Done.",
        ["Use the main one, i.e. The big lamp.", "Done."],
    ),
    ("Lamps, blinds, etc. are off. Good night.", ["Lamps, blinds, etc. are off.", "Good night."]),
    ("I get up at 7 a.m. and leave. Bye.", ["I get up at 7 a.m. and leave.", "Bye."]),
    ("M. Dupont est arrivé. Mme Martin aussi.", ["M. Dupont est arrivé.", "Mme Martin aussi."]),
    (
        "Choisis une pièce, p. ex. Salon ou Cuisine. Merci.",
        ["Choisis une pièce, p. ex. Salon ou Cuisine.", "Merci."],
    ),
    (
        "Il reste env. Vingt minutes. Ensuite, fini.",
        ["Il reste env. Vingt minutes.", "Ensuite, fini."],
    ),
    ("La lampe n° 3 est allumée. Voilà.", ["La lampe n° 3 est allumée.", "Voilà."]),
)

LISTS = cases(
    (
        "Here are the lights:\n1. Kitchen\n2. Hall\nThat is all.",
        ["Here are the lights:", "Kitchen", "Hall", "That is all."],
    ),
    (
        "Voici les lumières :\n1) Cuisine.\n2) Entrée.\n10) Garage\nC'est tout.",
        ["Voici les lumières :", "Cuisine.", "Entrée.", "Garage", "C'est tout."],
    ),
    ("Lights on:\n- Kitchen\n- Hall\n\nDone.", ["Lights on:", "Kitchen", "Hall", "Done."]),
    ("Allumées :\n* Cuisine\n  * Entrée\nFini.", ["Allumées :", "Cuisine", "Entrée", "Fini."]),
    ("Lights: kitchen, hall and garage. Done.", ["Lights: kitchen, hall and garage.", "Done."]),
    ("Lumières : cuisine, entrée et garage.", ["Lumières : cuisine, entrée et garage."]),
    ("It is -5 degrees.\n10 lamps are on.", ["It is -5 degrees.", "10 lamps are on."]),
    ("Total:\n42", ["Total:", "42"]),
)

MARKDOWN = cases(
    ("**Done.** The *kitchen* light is on.", ["Done.", "The kitchen light is on."]),
    (
        "**C'est fait.** La lumière de la *cuisine* est allumée.",
        ["C'est fait.", "La lumière de la cuisine est allumée."],
    ),
    ("Run `light.turn_on` now.", ["Run light.turn on now."]),
    ("# Lights\n## Kitchen\nAll on.", ["Lights", "Kitchen", "All on."]),
    ("See [the docs](https://example.com/a.b) for more.", ["See the docs for more."]),
    ("Voir [la doc](https://exemple.fr/x) ici.", ["Voir la doc ici."]),
    ("Done! 😊 The lights are on 👍🏽.", ["Done!", "The lights are on."]),
    ("C'est fait ! 🇫🇷 ✅ Bonne soirée.", ["C'est fait !", "Bonne soirée."]),
    ("Too   many    spaces here.", ["Too many spaces here."]),
    ("Hello.\n---\n😊\n**\nBye.", ["Hello.", "Bye."]),
)

PUNCTUATION = cases(
    ("Great! Is it on? Yes… Well... Fine.", ["Great!", "Is it on?", "Yes…", "Well...", "Fine."]),
    (
        "Super ! Elle est allumée ? Oui… Bon... D'accord.",
        ["Super !", "Elle est allumée ?", "Oui…", "Bon...", "D'accord."],
    ),
    (
        "Il a demandé : « Vraiment ? » Oui, vraiment.",
        ["Il a demandé : Vraiment ?", "Oui, vraiment."],
    ),
    ("Voici : la cuisine est allumée.", ["Voici : la cuisine est allumée."]),
    ("He said “Really?” Then he left.", ["He said “Really?”", "Then he left."]),
    ("First line\nSecond line", ["First line", "Second line"]),
    ("Première ligne\r\nDeuxième ligne", ["Première ligne", "Deuxième ligne"]),
)


@pytest.mark.parametrize(
    ("text", "expected"), NUMBERS + ABBREVIATIONS + LISTS + MARKDOWN + PUNCTUATION
)
def test_sentences(text: str, expected: list[str], chunker: Callable[[str], list[str]]) -> None:
    assert split(text, chunker) == expected


@pytest.mark.parametrize(
    ("clause", "separator"),
    [("the kitchen light is on", ", "), ("la lampe de la cuisine est allumée", "; ")],
)
def test_long_sentence_is_cut_at_a_comma(
    clause: str, separator: str, chunker: Callable[[str], list[str]]
) -> None:
    text = separator.join([clause] * 20) + "."
    sentences = split(text, chunker)
    assert len(sentences) > 1
    assert " ".join(sentences) == text
    assert all(s.endswith((separator.strip(), ".")) for s in sentences)
    assert all(len(s) <= MAX_SENTENCE for s in sentences)


@pytest.mark.parametrize("word", ["lamp", "lampe"])
def test_long_sentence_without_comma_is_cut_between_words(
    word: str, chunker: Callable[[str], list[str]]
) -> None:
    text = " ".join([word] * 200) + "."
    sentences = split(text, chunker)
    assert len(sentences) > 1
    assert " ".join(sentences) == text
    assert all(len(s) < 2 * MAX_SENTENCE + len(word) + 2 for s in sentences)


@pytest.mark.parametrize(
    ("deltas", "expected"),
    [
        (["All ", "done.", " T"], [[], [], ["All done."]]),
        (["C'est ", "fait.", " E"], [[], [], ["C'est fait."]]),
        (["It is 21.", "5 degrees. ", "N"], [[], [], ["It is 21.5 degrees."]]),
        (["Il fait 21", ",5 degrés", "\n"], [[], [], ["Il fait 21,5 degrés"]]),
        (["Here:\n1.", " Kit", "chen\n"], [["Here:"], [], ["Kitchen"]]),
        (["Dr.", " Brown", " is out. ", "B"], [[], [], [], ["Dr. Brown is out."]]),
    ],
)
def test_sentences_are_released_as_soon_as_certain(
    deltas: list[str], expected: list[list[str]]
) -> None:
    splitter = SentenceSplitter()
    assert [splitter.feed(delta) for delta in deltas] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The light is on. And the", ["The light is on.", "And the"]),
        ("Il fait 21,", ["Il fait 21,"]),
        ("1.", ["1."]),
    ],
)
def test_flush_returns_the_rest(text: str, expected: list[str]) -> None:
    splitter = SentenceSplitter()
    assert splitter.feed(text) + splitter.flush() == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("**Bold** and *italic* with `code`", "Bold and italic with code"),
        (
            "## Titre\n- **Cuisine** : allumée 💡\n- Entrée : éteinte",
            "Titre\nCuisine : allumée\nEntrée : éteinte",
        ),
        ("[Home Assistant](https://www.home-assistant.io) rocks", "Home Assistant rocks"),
        ("_kitchen_lamp_ is on", "kitchen lamp is on"),
        ("Il fait 21 °C", "Il fait 21 °C"),
        ("😊 👍", ""),
        ("  ---  ", ""),
    ],
)
def test_speakable(text: str, expected: str) -> None:
    assert speakable(text) == expected
