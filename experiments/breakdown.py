"""How a lift report breaks people down into segments: which value of whom names a person's segment.

The statistics never see this: they get one row of sufficient statistics per (segment, arm), and
the SQL that groups the exposures lives with them in `personalization.selectors`. New kinds of
breakdown (behavior clusters, rule segments) plug in here and there as one more kind.

    "exposure:segment"   the segment recorded at exposure, in every arm (per-segment bandits)
    "exposure:day"       the day of (first) exposure, in the project's time zone
    "attribute:<name>"   a profile attribute (device, channel, plan …)
    "run:<id>"           the behavior segment of a clustering run the person was in at exposure
    "segment:<key>"      in one (rule or lookalike) segment at exposure, or not
    "live:<field>"       what decide knew of the visitor's live state at exposure (LIVE_FIELDS):
                         the journey stage, the first-touch channel, the tenure cohort, the device class
    "intent:<key>"       whether the visitor's score on a named intent was 0.35 or more at exposure

People with no value fall into MISSING_LABEL, which `exclude_missing` leaves out of the report
(its totals and its multiple-testing family). For the behavior breakdowns that is an exposure
recorded before exposures kept their segments; one known to be in none is NO_SEGMENT. For the live
breakdowns MISSING_LABEL is an exposure recorded before live state was kept (or answered without
Redis), and NO_SEGMENT one whose state did not know the value.
"""

import re
from dataclasses import dataclass

from personalization.intent_fields import INTENT_KEY
from personalization.selectors import MISSING_SEGMENT as MISSING_LABEL
from personalization.selectors import NO_SEGMENT

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_RUN = re.compile(r"^[1-9][0-9]{0,17}$")

__all__ = ["LIVE_FIELDS", "MISSING_LABEL", "NO_SEGMENT", "Breakdown", "BreakdownError"]

# The live breakdowns: name after "live:" → what a report calls it.
LIVE_FIELDS = {
    "stage": "journey stage at exposure",
    "first_touch": "first-touch channel",
    "tenure": "tenure cohort",
    "device": "device class at exposure",
}


class BreakdownError(ValueError):
    """The segment_by value cannot be used; the message says what is accepted."""


@dataclass(frozen=True)
class Breakdown:
    kind: str
    name: str = ""
    exclude_missing: bool = False

    @classmethod
    def parse(cls, raw: str, *, exclude_missing: bool = False) -> "Breakdown":
        kind, _, name = (raw or "").partition(":")
        if kind == "exposure" and name in ("segment", "day"):
            return cls("exposure", name, exclude_missing)
        if kind == "attribute" and _NAME.match(name):
            return cls("attribute", name, exclude_missing)
        if kind == "run" and _RUN.match(name):
            return cls("run", name, exclude_missing)
        if kind == "segment" and _NAME.match(name):
            return cls("segment", name, exclude_missing)
        if kind == "live" and name in LIVE_FIELDS:
            return cls("live", name, exclude_missing)
        if kind == "intent" and INTENT_KEY.fullmatch(name):
            return cls("intent", name, exclude_missing)
        raise BreakdownError(
            f"segment_by={raw!r} is not supported; use exposure:segment, exposure:day, attribute:<name>,"
            " run:<clustering run id>, segment:<segment key> (names and keys: letters, digits and _.- only),"
            " or the live state at exposure:"
            " live:stage, live:first_touch, live:tenure or live:device, or a named intent: intent:<intent key>"
        )

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def label(self) -> str:
        if self.kind == "run":
            return f"behavior segment (run #{self.name})"
        if self.kind == "segment":
            return f"segment {self.name}"
        if self.kind == "live":
            return LIVE_FIELDS[self.name]
        if self.kind == "intent":
            return f"intent {self.name} at exposure"
        if self.kind == "exposure":
            return "day of first exposure" if self.name == "day" else "segment at exposure"
        return self.name
