"""The translation files: complete, consistent, and covering every key the code uses."""

from __future__ import annotations

import ast
import json
from pathlib import Path
import re
from typing import Any

import pytest

from custom_components.majordome import config_flow
from custom_components.majordome.backend import ErrorKind
from custom_components.majordome.const import LLM_API_ASSIST, LLM_API_NONE, SUBENTRY_AGENT

COMPONENT = Path(config_flow.__file__).parent
STRINGS = COMPONENT / "strings.json"
TRANSLATIONS = COMPONENT / "translations"


def load(path: Path) -> dict[str, Any]:
    """Read a JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))


def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to {"a.b.c": value}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(leaves(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def flow_error_keys() -> set[str]:
    """Every error string the config flow source can put in a form's `errors`."""
    tree = ast.parse(Path(config_flow.__file__).read_text(encoding="utf-8"))
    keys: set[str] = set(config_flow._ERRORS.values()) | set(config_flow._FAST_ERRORS.values())
    for node in ast.walk(tree):
        # {"base": "x"} / {CONF_URL: "x"} returned as errors
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                is_error_key = (isinstance(key, ast.Constant) and key.value == "base") or (
                    isinstance(key, ast.Name) and key.id == "CONF_URL"
                )
                if is_error_key and isinstance(value, ast.Constant):
                    keys.add(value.value)
        # errors["base"] = "x"
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            target = node.targets[0]
            if (
                isinstance(target, ast.Subscript)
                and isinstance(target.value, ast.Name)
                and target.value.id == "errors"
                and isinstance(node.value.value, str)
            ):
                keys.add(node.value.value)
        # _ERRORS.get(kind, "unknown")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "_ERRORS"
        ):
            keys.update(
                arg.value
                for arg in node.args
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            )
    return keys


def test_english_is_strings() -> None:
    assert load(TRANSLATIONS / "en.json") == load(STRINGS)


def test_french_has_the_same_keys() -> None:
    english = leaves(load(TRANSLATIONS / "en.json"))
    french = leaves(load(TRANSLATIONS / "fr.json"))
    assert set(french) == set(english)


def test_french_is_translated_and_keeps_placeholders() -> None:
    english = leaves(load(TRANSLATIONS / "en.json"))
    french = leaves(load(TRANSLATIONS / "fr.json"))
    placeholder = re.compile(r"\{\w+\}")
    for key, value in french.items():
        assert isinstance(value, str), key
        assert value.strip(), key
        if key in english:
            assert sorted(placeholder.findall(value)) == sorted(
                placeholder.findall(english[key])
            ), key


@pytest.mark.parametrize(
    "key",
    sorted(
        {kind.value for kind in ErrorKind} | {"action_failed", "iteration_limit", "template_error"}
    ),
)
@pytest.mark.parametrize("file", ["en.json", "fr.json"])
def test_every_spoken_error_has_a_message(file: str, key: str) -> None:
    exceptions = load(TRANSLATIONS / file)["exceptions"]
    assert isinstance(exceptions[key]["message"], str)
    assert exceptions[key]["message"].strip()


def test_flow_error_keys_found_in_the_source() -> None:
    # Guards the source scan below: it must see every error the flow is known to give.
    assert flow_error_keys() >= {
        "cannot_connect",
        "timeout",
        "invalid_auth",
        "invalid_url",
        "no_models",
        "model_required",
        "unknown",
    }


@pytest.mark.parametrize("file", ["en.json", "fr.json"])
def test_every_flow_error_is_translated(file: str) -> None:
    strings = load(TRANSLATIONS / file)
    # One source file for the three flows: an error is the setup's, the options' or an agent's.
    agent = strings["config_subentries"][SUBENTRY_AGENT]
    errors = {**strings["config"]["error"], **strings["options"]["error"], **agent["error"]}
    missing = flow_error_keys() - set(errors)
    assert not missing
    # The model step is shared by the setup and the agents: both say its errors.
    assert {"no_models", "model_required"} <= set(agent["error"])


@pytest.mark.parametrize("file", ["en.json", "fr.json"])
def test_abort_reasons_are_translated(file: str) -> None:
    strings = load(TRANSLATIONS / file)
    assert {"already_configured", "reconfigure_successful"} <= set(strings["config"]["abort"])
    # An agent's flow aborts when the entry is not loaded, or with the listing's error.
    listing_errors = set(config_flow._ERRORS.values()) | {"unknown"}
    assert {"entry_not_loaded", "reconfigure_successful"} | listing_errors <= set(
        strings["config_subentries"][SUBENTRY_AGENT]["abort"]
    )


def test_flow_steps_and_option_fields_are_translated() -> None:
    strings = load(STRINGS)
    steps = strings["config"]["step"]
    assert {"user", "reconfigure", "model"} <= set(steps)
    for step in ("user", "reconfigure"):
        fields = {str(key) for key in config_flow.SERVER_SCHEMA.schema}
        assert fields <= set(steps[step]["data"]), step
    household = {str(key) for key in config_flow.HOUSEHOLD_SCHEMA.schema}
    assert household == set(strings["options"]["step"]["init"]["data"])
    agent = strings["config_subentries"][SUBENTRY_AGENT]
    assert agent["entry_type"].strip()
    assert set(agent["initiate_flow"]) == {"user", "reconfigure"}
    assert set(agent["step"]["model"]["data"]) == {"model"}
    options = {str(key) for key in config_flow.AGENT_SCHEMA.schema}
    assert options == set(agent["step"]["agent"]["data"])
    assert set(strings["selector"]["llm_hass_api"]["options"]) == {LLM_API_ASSIST, LLM_API_NONE}
