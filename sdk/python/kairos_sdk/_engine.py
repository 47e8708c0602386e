"""Decide's engine, as the SDK runs it: `personalization.decide.engine` and `.live` themselves.

From a Kairos checkout (or wherever Kairos is importable) they are imported from there; an
installed wheel carries the same files, copied unchanged at build time, under _vendor/, which is
then appended to sys.path (appended: a Kairos on the path wins, and it is the same code)."""

import sys
from pathlib import Path

try:
    from personalization.decide import engine, live
except ImportError:
    _vendor = Path(__file__).resolve().parent / "_vendor"
    if not (_vendor / "personalization" / "decide" / "engine.py").is_file():
        raise
    sys.path.append(str(_vendor))
    from personalization.decide import engine, live

__all__ = ["engine", "live"]
