"""Seconds each test file took in a whole run, kept in tests/durations.json: `make test` hands the files
out longest first (tests/conftest.py), so that no long file is left for the end while the other worker has
nothing to do.

Refresh after a change that makes a file much slower or faster (a stale figure only costs a worse order):
    make test-suite PYTEST_ARGS="--durations=0" | .venv/bin/python -m tests.durations
"""

import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path

FILE = Path(__file__).with_name("durations.json")
_LINE = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s+(?:setup|call|teardown)\s+([^\s:]+)::")


def durations_parse(lines: Iterable[str]) -> dict[str, float]:
    """{test file: seconds} from pytest's `--durations=0` report (setup, call and teardown added)."""
    seconds: dict[str, float] = {}
    for line in lines:
        match = _LINE.match(line)
        if match:
            seconds[match[2]] = seconds.get(match[2], 0.0) + float(match[1])
    return {path: round(total, 1) for path, total in sorted(seconds.items())}


def durations_load() -> dict[str, float]:
    try:
        return json.loads(FILE.read_text())
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    measured = durations_parse(sys.stdin)
    if not measured:
        sys.exit("no `--durations=0` lines on stdin: run pytest with --durations=0")
    FILE.write_text(json.dumps(measured, indent=1) + "\n")
    print(f"{len(measured)} files, {sum(measured.values()):.0f} s in {FILE}")
