"""Where the cascade's rule (routing.py) sends each turn of a suite: no model, no house.

    python -m devtools.route_suite [--suite benchmarks/commands.yaml] [--list]

The names are the demo house's (devtools/house.py): its exposed devices and its areas
with their aliases, as Home Assistant's registries hold them once the house is set up.
A follow-up turn is routed after a reply that asked nothing ("Done.").
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from custom_components.majordome import routing
from devtools.house import house_devices

DEFAULT_SUITE = Path(__file__).resolve().parent.parent / "benchmarks" / "commands.yaml"


def demo_house_names() -> list[list[str]]:
    """The demo house's names as routing.house_names reads them from the registries."""
    areas, devices = house_devices("demo")
    names = [device.name for device in devices if device.exposed]
    for area in areas:
        names += [area.name, *area.aliases]
    return [routing.words(name) for name in names]


def route_suite(cases: list[dict[str, Any]]) -> list[tuple[str, str, routing.Route]]:
    """(category, the turn's text, its route) for every turn of every case."""
    names = demo_house_names()
    routed = []
    for case in cases:
        turns = case["say"] if isinstance(case["say"], list) else [case["say"]]
        for index, text in enumerate(turns):
            route = routing.route(text, "Done." if index else None, names)
            routed.append((case.get("category", "command"), text, route))
    return routed


def main(argv: list[str] | None = None) -> int:
    """Print the share of each category's turns the rule gives the fast model."""
    parser = argparse.ArgumentParser(prog="devtools.route_suite", description=__doc__)
    parser.add_argument("--suite", type=Path, default=DEFAULT_SUITE, help="YAML suite file")
    parser.add_argument("--list", action="store_true", help="print every turn and its route")
    args = parser.parse_args(argv)
    cases = yaml.safe_load(args.suite.read_text(encoding="utf-8"))
    routed = route_suite(cases)
    turns = Counter(category for category, _, _ in routed)
    fast = Counter(category for category, _, route in routed if route is routing.Route.FAST)
    if args.list:
        for category, text, route in routed:
            print(f"{route:<14} {category:<11} {text}")
    for category in sorted(turns):
        print(f"{category:<11} {fast[category]:>3} / {turns[category]:<3} to the fast model")
    why = Counter(str(route) for _, _, route in routed)
    print(f"{'all':<11} {sum(fast.values()):>3} / {len(routed):<3} ({dict(why)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
