"""Truthful endings: "Done" only when Home Assistant reports a change; the date and time
from the clock, never from the model's memory.

The house is real (the demo house: template entities backed by helpers), so a change
is a real state change; the model is the scripted server.
"""

from __future__ import annotations

from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.majordome import truth
from custom_components.majordome.config_flow import DEFAULT_OPTIONS
from custom_components.majordome.const import CONF_LOCAL_INTENTS, CONF_MEMORY_EVERY
from custom_components.majordome.memory import Onboarding
from custom_components.majordome.metacognition import normalize, read_list
from custom_components.majordome.tools import spoken_date, spoken_time
from devtools.house import async_setup_house
from devtools.scripted_server import Reply, ScriptedServer, text, tool_calls
from homeassistant.core import Context, HomeAssistant, State
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util

from .helpers import CLOCK_TOOL, converse, speech
from .test_heard import heard

KITCHEN = "light.kitchen_light"
TOWEL_RAIL = "switch.seche_serviettes"

NOT_DONE = {
    "en": "I have not done it: nothing changed.",
    "fr": "Je ne l'ai pas fait : rien n'a changé.",
}
ALREADY_ON = {
    "en": "Nothing changed: Kitchen Light was already on.",
    "fr": "Rien n'a changé : Kitchen Light était déjà en marche.",
}
DONE = {"en": "Done.", "fr": "C'est fait."}


@pytest.fixture
def entry_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The model takes every turn (the local stage off), no background memory summary."""
    return {
        **DEFAULT_OPTIONS,
        CONF_MEMORY_EVERY: 0,
        CONF_LOCAL_INTENTS: False,
        **getattr(request, "param", {}),
    }


@pytest.fixture(autouse=True)
async def house(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """The demo house; the household was introduced already (no question is added)."""
    entry.runtime_data.memory.update(onboarding=Onboarding.DONE)
    assert await async_setup_component(hass, "homeassistant", {})
    await async_setup_house(hass, "demo")


async def turn_on_the_kitchen_light(hass: HomeAssistant) -> None:
    await hass.services.async_call("light", "turn_on", {"entity_id": KITCHEN}, blocking=True)
    await hass.async_block_till_done()
    assert hass.states.get(KITCHEN).state == "on"


async def answer_to(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, said: str, reply: str
) -> str:
    """What the user hears when the model answers `reply` to `said`."""
    scripted.add(text(reply))
    return speech(await converse(hass, entry, said))


def assistant_history(scripted: ScriptedServer) -> list[str]:
    """What the last request to the model showed it of its own past replies."""
    return [
        str(m["content"])
        for m in scripted.chat_requests[-1]["messages"]
        if m["role"] == "assistant" and m.get("content")
    ]


# --- A claim without a change ----------------------------------------------------------

# The phrases these tests use; the data file (completion_claims.txt) is wider.
CLAIMS = [("fr", "C'est fait."), ("en", "Done!")]


@pytest.mark.parametrize(("language", "claim"), CLAIMS)
async def test_a_claim_without_a_call_is_not_heard(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, language: str, claim: str
) -> None:
    """The embedded model said "C'est fait." while nothing changed."""
    assert hass.states.get(TOWEL_RAIL).state == "on"
    scripted.add(text(claim), text("D'accord."))
    deltas: list[dict[str, Any]] = []

    result = await converse(
        hass,
        entry,
        "Coupe le sèche-serviettes de la salle de bain",
        language=language,
        deltas=deltas,
    )

    assert hass.states.get(TOWEL_RAIL).state == "on"
    assert speech(result) == NOT_DONE[language]
    assert heard(deltas, speech(result)) == NOT_DONE[language]
    # The history holds what the user heard, not the claim.
    await converse(hass, entry, "Et alors ?", result.conversation_id, language=language)
    assert assistant_history(scripted) == [NOT_DONE[language]]


@pytest.mark.parametrize(
    "paraphrase",
    [
        "J'ai éteint le sèche-serviettes de la salle de bain, bonne journée !",
        "Alright, the towel rail has been switched off for you.",
    ],
)
async def test_a_paraphrased_claim_is_not_heard_either(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, paraphrase: str
) -> None:
    scripted.add(text(paraphrase))

    result = await converse(hass, entry, "Coupe le sèche-serviettes", language="fr")

    assert hass.states.get(TOWEL_RAIL).state == "on"
    assert speech(result) == NOT_DONE["fr"]


async def test_a_reply_that_claims_nothing_is_kept(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    reply = "The towel rail is on, and it is 21 degrees in the bathroom."

    assert await answer_to(hass, entry, scripted, "is the towel rail on?", reply) == reply


# --- An action that changed nothing ------------------------------------------------------

# After the call, the model says "Done." or nothing: (language, its reply after the call).
ENDINGS = [
    pytest.param((language, after), id=f"{ending}-{language}")
    for after, ending in ((text("Done."), "says-done"), (Reply(), "silent"))
    for language in ("en", "fr")
]


@pytest.mark.parametrize("ending", ENDINGS)
async def test_turning_on_a_light_already_on_is_not_done(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, ending: tuple[str, Reply]
) -> None:
    language, after = ending
    await turn_on_the_kitchen_light(hass)
    scripted.add(tool_calls(("HassTurnOn", {"name": "Kitchen Light"})), after)

    result = await converse(hass, entry, "turn on the kitchen light", language=language)

    assert len(scripted.chat_requests) == 2  # the tool ran
    assert hass.states.get(KITCHEN).state == "on"
    assert speech(result) == ALREADY_ON[language]


@pytest.mark.parametrize("ending", ENDINGS)
async def test_a_real_change_is_still_done(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, ending: tuple[str, Reply]
) -> None:
    language, after = ending
    assert hass.states.get(KITCHEN).state == "off"
    if after.deltas:
        after = text(DONE[language])
    scripted.add(tool_calls(("HassTurnOn", {"name": "Kitchen Light"})), after)

    result = await converse(hass, entry, "turn on the kitchen light", language=language)

    assert hass.states.get(KITCHEN).state == "on"
    assert speech(result) == DONE[language]


@pytest.mark.parametrize("entry_options", [{CONF_LOCAL_INTENTS: True}], indirect=True)
async def test_the_local_stage_does_not_claim_a_change_that_did_not_happen(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """Home Assistant's own answer ("Turned on the light") is a claim too."""
    changed = await converse(hass, entry, "turn on the kitchen light")
    assert hass.states.get(KITCHEN).state == "on"
    assert speech(changed)
    assert speech(changed) != ALREADY_ON["en"]

    unchanged = await converse(hass, entry, "turn on the kitchen light")

    assert speech(unchanged) == ALREADY_ON["en"]
    assert scripted.chat_requests == []


# --- A state the device is not in -----------------------------------------------------------

BEDROOM_LAMP = "light.bedroom_lamp"


@pytest.mark.parametrize(
    "case",
    [
        (
            "fr",
            "Alors allume-la",
            "La lampe de la chambre est allumée.",
            "Bedroom Lamp est à l'arrêt.",
        ),
        ("en", "and the bedroom?", "The lamp in the bedroom is on now.", "Bedroom Lamp is off."),
        ("en", "Is the bedroom lamp on?", "Yes, the Bedroom Lamp is on.", "Bedroom Lamp is off."),
        ("en", "what about the kitchen", "Kitchen light: on", "Kitchen Light is off."),
    ],
)
async def test_a_reply_that_gives_a_device_a_state_it_is_not_in_is_not_heard(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    case: tuple[str, str, str, str],
) -> None:
    """The embedded model said the bedroom lamp was on, after "then turn it on", while
    nothing changed: the user hears the lamp's real state instead."""
    language, said, reply, truth_said = case
    assert hass.states.get(BEDROOM_LAMP).state == "off"
    assert hass.states.get(KITCHEN).state == "off"
    scripted.add(text(reply))

    result = await converse(hass, entry, said, language=language)

    assert speech(result) == truth_said


@pytest.mark.parametrize(
    "reply",
    [
        "The Bedroom Lamp is off.",  # true
        "The bedroom lamp is not on.",  # a negation: not judged
        "La lampe de la chambre n'est pas allumée.",
        "Bedroom Lamp is on or off, I cannot tell.",  # both states: not judged
        "La lumière du salon est allumée.",  # true: Lampe du salon is on
        "The kitchen light is off.",  # true
        "The lamp is on.",  # no device named
        "Shall I turn the bedroom lamp on? Just say so.",  # a question states nothing
        "Bedroom Lamp. On the other side, the blinds are open.",  # another sentence
    ],
)
async def test_a_true_or_unclear_state_is_kept(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, reply: str
) -> None:
    assert await answer_to(hass, entry, scripted, "is the bedroom lamp on?", reply) == reply


async def test_a_state_the_turn_just_set_is_true(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """The model turned the lamp on and says it is on: kept (the state is read after the
    turn's change)."""
    scripted.add(
        tool_calls(("HassTurnOn", {"name": "Bedroom Lamp"})),
        text("The Bedroom Lamp is now on."),
    )

    result = await converse(hass, entry, "turn on the bedroom lamp")

    assert hass.states.get(BEDROOM_LAMP).state == "on"
    assert speech(result) == "The Bedroom Lamp is now on."


@pytest.mark.parametrize(
    "case",
    [
        (
            "en",
            "How warm is it in the kitchen?",
            "The temperature in the kitchen is 25 degrees Celsius.",
            "Kitchen Temperature is 21.5 °C.",
        ),
        (
            "fr",
            "Quel est le taux d'humidité dans la chambre d'amis ?",
            "Le taux d'humidité dans la chambre d'amis est de 25 %.",
            "Humidité de la chambre d'amis : 48 %.",
        ),
        (
            "fr",
            "Il fait combien au salon ?",
            "La température du salon est de 23,5 degrés.",
            "Température du salon : 19 °C.",
        ),
    ],
)
async def test_a_sensor_value_the_model_made_up_is_not_heard(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    case: tuple[str, str, str, str],
) -> None:
    """The embedded model answered "25" for a humidity of 48, with no tool call: the
    user hears the sensor's value."""
    language, said, reply, truth_said = case
    scripted.add(text(reply))

    result = await converse(hass, entry, said, language=language)

    assert speech(result) == truth_said


@pytest.mark.parametrize(
    "reply",
    [
        "The kitchen temperature is 21.5 °C.",
        "It's about 22 degrees in the kitchen: the kitchen temperature is 22.",  # rounded
        "La température du salon est de 19 degrés.",
        "The temperature in the kitchen is not 30 degrees.",  # a negation
        "Set the temperature in the kitchen to 25 degrees?",  # no sensor named first
    ],
)
async def test_a_true_or_rounded_value_is_kept(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer, reply: str
) -> None:
    assert await answer_to(hass, entry, scripted, "how warm is it?", reply) == reply


def test_stated_numbers_read_decimals_and_stop_at_a_negation() -> None:
    names = {"sensor.t": ["kitchen temperature"], "sensor.h": ["humidité de la cuisine"]}
    assert truth.stated_numbers("The kitchen temperature is 21.5 °C", names) == {"sensor.t": 21.5}
    assert truth.stated_numbers("L'humidité de la cuisine est de 48,25 %", names) == {
        "sensor.h": 48.25
    }
    assert truth.stated_numbers("The kitchen temperature is not 30", names) == {}
    assert truth.stated_numbers("The kitchen temperature, as you asked, is 21", names) == {}
    assert truth.stated_numbers("Is the kitchen temperature 30? It is 21.5.", names) == {}
    assert truth.close_enough(22, 21.5)
    assert not truth.close_enough(25, 21.5)


def test_stated_states_need_the_name_then_the_state_nearby() -> None:
    names = {"light.a": ["Kitchen Light", "cooker lamp"], "switch.b": ["Sèche-serviettes"]}
    assert truth.stated_states("The cooker lamp is now on.", names) == {"light.a": "on"}
    assert truth.stated_states("Le sèche-serviettes est éteint.", names) == {"switch.b": "off"}
    assert truth.stated_states("On, the kitchen light.", names) == {}  # the state came first
    assert truth.stated_states("The kitchen light is in the kitchen, on the left.", names) == {}
    assert truth.stated_states("Kitchen light isn't on.", names) == {}


@pytest.mark.parametrize("name", ["state_words", "device_kinds"])
def test_the_word_lists_are_normalised(name: str) -> None:
    for entry in read_list(name):
        key, _, listed = entry.partition(":")
        assert key.strip(), entry
        assert listed.strip(), entry
        for part in listed.split("|"):
            assert normalize(part) == " ".join(part.split()), entry


# --- The date and the time come from the clock -------------------------------------------


YEAR_QUESTIONS = [
    ("en", "What year is it?", "It is 2023."),
    ("fr", "En quelle année sommes-nous ?", "Nous sommes à l'année 2023."),
    # Paraphrases: words and forms the tests do not otherwise use.
    ("en", "hey, do you know which year we're in", "Sure! We're in the year 2023."),
    ("fr", "Dis-moi la date", "Aujourd'hui c'est le lundi 6 mars 2023."),
]


@pytest.mark.parametrize(
    "case", YEAR_QUESTIONS, ids=[question for _, question, _ in YEAR_QUESTIONS]
)
async def test_the_year_comes_from_the_clock(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    scripted: ScriptedServer,
    case: tuple[str, str, str],
) -> None:
    language, question, reply = case
    before = dt_util.now()
    scripted.add(text(reply))

    result = await converse(hass, entry, question, language=language)

    after = dt_util.now()
    assert "2023" not in speech(result)
    assert str(after.year) in speech(result)
    assert speech(result) in {f"{spoken_date(moment, language)}." for moment in (before, after)}


async def test_the_time_comes_from_the_clock(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    before = dt_util.now()
    scripted.add(text("It's 3:45 pm right now."))

    result = await converse(hass, entry, "got the time?")

    after = dt_util.now()
    assert speech(result) in {f"It is {spoken_time(moment, 'en')}." for moment in (before, after)}


async def test_an_answer_from_the_clock_tool_is_kept(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    scripted.add(tool_calls((CLOCK_TOOL, {})), text("It is 10:30 in the morning."))

    result = await converse(hass, entry, "what time is it?")

    assert speech(result) == "It is 10:30 in the morning."


# --- The detection itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        "Done.",
        "C'est fait !",
        "I've switched off the hallway light.",
        "Les volets sont maintenant en marche.",
    ],
)
def test_claims_are_recognised(reply: str) -> None:
    assert truth.claims_done(reply)


@pytest.mark.parametrize(
    "reply",
    ["The light is on.", "La lampe est allumée.", "I cannot do that.", "Il fait 21 degrés."],
)
def test_statements_are_not_claims(reply: str) -> None:
    assert not truth.claims_done(reply)


async def test_a_time_that_is_not_the_time_now_is_kept(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    reply = "I cannot set alarms, but 7 o'clock is a fine time to wake up."

    assert (
        await answer_to(hass, entry, scripted, "wake me up at 7 o'clock tomorrow", reply) == reply
    )


@pytest.mark.parametrize("name", ["completion_claims", "clock_questions", "clock_statements"])
def test_the_phrase_lists_are_normalised_and_without_duplicates(name: str) -> None:
    entries = read_list(name)
    assert len(entries) >= 10
    assert len(set(entries)) == len(entries)
    for entry in entries:
        assert normalize(entry) == entry, entry


async def test_changes_are_the_turns_and_its_childrens_only(hass: HomeAssistant) -> None:
    """A script the turn starts runs in a child context: its changes are the turn's."""
    turn = Context()
    watch = truth.ChangeWatch(hass, turn)
    hass.states.async_set("light.elsewhere", "on", context=Context())
    hass.states.async_set("conversation.agent", "2026-12-03", context=turn)
    assert watch.changed == set()

    script = Context(parent_id=turn.id)
    hass.bus.async_fire("call_service", {"domain": "script"}, context=script)
    hass.states.async_set("light.hall", "on", context=Context(parent_id=script.id))
    watch.async_close()
    hass.states.async_set("light.porch", "on", context=turn)

    assert watch.changed == {"light.hall"}


@pytest.mark.parametrize(
    ("old", "new", "counts"),
    [
        (("heat", {"temperature": 20}), ("heat", {"temperature": 19}), True),  # a setting
        (("off", {}), ("on", {}), True),  # a state
        # A reading moving by itself, in another context, is no action's doing.
        (("heat", {"current_temperature": 19}), ("heat", {"current_temperature": 19.5}), False),
        (("playing", {"media_position": 10}), ("playing", {"media_position": 12}), False),
    ],
    ids=["setting", "state", "reading", "playback"],
)
def test_a_change_outside_the_turn_counts_only_when_a_setting_or_state_moved(
    old: tuple[str, dict[str, Any]], new: tuple[str, dict[str, Any]], counts: bool
) -> None:
    data = {
        "entity_id": "climate.x",
        "old_state": State("climate.x", old[0], old[1]),
        "new_state": State("climate.x", new[0], new[1]),
    }

    assert truth._settled_differently(data) is counts


async def test_an_intent_that_failed_on_every_entity_is_not_done(
    hass: HomeAssistant, entry: MockConfigEntry, scripted: ScriptedServer
) -> None:
    """Recorded from the 0.5B on 2025.4.4: HassTurnOn on the kitchen's temperature
    sensor; Home Assistant names the area as done and the sensor as failed."""
    scripted.add(
        tool_calls(("HassTurnOn", {"name": "Kitchen Temperature", "area": "Kitchen"})),
        text("Done."),
    )

    result = await converse(hass, entry, "It's pitch dark in the kitchen")

    assert speech(result) != "Done."
    assert hass.states.get(KITCHEN).state == "off"
