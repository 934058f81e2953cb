"""The stage-1 gate over a corpus: what it drops, what it lets through, how fast.

    python -m devtools.bench_gate [--corpus FILE] [--scripts Latin,Cyrillic]

The corpus is YAML with two lists of strings: `hallucinations:` (all should be
dropped) and `genuine:` (none should be). Misses go to stdout, one per line, then the
last line is a JSON object: {"bench": "gate", "dropped_hallucinations": D,
"hallucinations": H, "dropped_genuine": G, "genuine": N, "median_us": T}, where T is
the median over the corpus items of the time `screen_rules` takes on one item.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
import statistics
import time
from typing import Any

import yaml

from custom_components.majordome.metacognition import (
    DEFAULT_SCRIPTS,
    SCRIPTS,
    Verdict,
    screen_rules,
)
from devtools.bench_common import print_summary

DEFAULT_CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "gate.yaml"
REPETITIONS = 200  # timed calls per item; the per-call mean is that item's time
WARMUP = 20  # untimed calls per item first: caches filled, code paths hot


class CorpusError(ValueError):
    """The corpus file is not YAML with `hallucinations` and `genuine` string lists."""


def load_corpus(path: Path) -> tuple[list[str], list[str]]:
    """Return the (hallucinations, genuine) lists of a corpus file.

    BaseLoader keeps every scalar a string: unquoted `yes`, `no`, `on` or `21` stay
    the words they are instead of becoming booleans and numbers, and an empty item
    is "".
    """
    with path.open(encoding="utf-8") as file:
        data = yaml.load(file, Loader=yaml.BaseLoader)
    if not isinstance(data, dict):
        raise CorpusError(f"{path}: expected a mapping with `hallucinations` and `genuine`")
    lists: list[list[str]] = []
    for key in ("hallucinations", "genuine"):
        items = data.get(key)
        if items is None or items == "":
            items = []
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise CorpusError(f"{path}: `{key}` must be a list of strings")
        lists.append(items)
    return lists[0], lists[1]


def time_item(text: str, allowed: frozenset[str], repetitions: int = REPETITIONS) -> float:
    """Return the mean time of one `screen_rules` call on `text`, in microseconds."""
    for _ in range(WARMUP):
        screen_rules(text, allowed)
    start = time.perf_counter_ns()
    for _ in range(repetitions):
        screen_rules(text, allowed)
    return (time.perf_counter_ns() - start) / repetitions / 1000


Misses = dict[str, list[tuple[str, Verdict]]]


def evaluate(corpus_path: Path, allowed_scripts: frozenset[str]) -> tuple[dict[str, Any], Misses]:
    """Run stage 1 over the corpus: the summary, and the misses with their verdicts."""
    hallucinations, genuine = load_corpus(corpus_path)
    verdicts_h = [screen_rules(text, allowed_scripts) for text in hallucinations]
    verdicts_g = [screen_rules(text, allowed_scripts) for text in genuine]
    times = [time_item(text, allowed_scripts) for text in [*hallucinations, *genuine]]
    summary = {
        "bench": "gate",
        "dropped_hallucinations": sum(v.ignore for v in verdicts_h),
        "hallucinations": len(hallucinations),
        "dropped_genuine": sum(v.ignore for v in verdicts_g),
        "genuine": len(genuine),
        "median_us": round(statistics.median(times), 2) if times else 0.0,
    }
    misses: Misses = {
        "passed_hallucinations": [
            (t, v) for t, v in zip(hallucinations, verdicts_h, strict=True) if not v.ignore
        ],
        "dropped_genuine": [(t, v) for t, v in zip(genuine, verdicts_g, strict=True) if v.ignore],
    }
    return summary, misses


def run_gate(
    corpus_path: Path, allowed_scripts: frozenset[str] = DEFAULT_SCRIPTS
) -> dict[str, Any]:
    """Run stage 1 over the corpus and return the summary the JSON line holds."""
    return evaluate(corpus_path, allowed_scripts)[0]


def _print_misses(misses: Misses) -> None:
    """Print each miss with the rule that decided it."""
    for title, key in (
        ("Hallucinations that passed", "passed_hallucinations"),
        ("Genuine requests dropped", "dropped_genuine"),
    ):
        items = misses[key]
        print(f"{title}: {len(items)}")
        for text, verdict in items:
            detail = f" ({verdict.detail})" if verdict.detail else ""
            print(f"  {text!r}: {verdict.reason}{detail}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the gate bench and print its report; misses are reported, not an error."""
    parser = argparse.ArgumentParser(prog="bench gate", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="YAML corpus")
    parser.add_argument(
        "--scripts",
        default=",".join(sorted(DEFAULT_SCRIPTS)),
        help=f"allowed scripts, comma-separated, among {', '.join(SCRIPTS)}",
    )
    args = parser.parse_args(argv)
    allowed = frozenset(name.strip() for name in args.scripts.split(",") if name.strip())
    try:
        summary, misses = evaluate(args.corpus, allowed)
    except (OSError, yaml.YAMLError, CorpusError) as err:
        parser.error(str(err))
    _print_misses(misses)
    print_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
