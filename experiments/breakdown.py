"""How a lift report breaks people down into segments: which value of whom names a person's segment.

The statistics never see this: they get one row of sufficient statistics per (segment, arm), and
the SQL that groups the exposures lives with them in `personalization.selectors`. New kinds of
breakdown (behavior clusters, rule segments) plug in here and there as one more kind.

    "exposure:segment"   the segment recorded at exposure, in every arm (per-segment bandits)
    "attribute:<name>"   a profile attribute (device, channel, plan …)

People with no value fall into MISSING_LABEL, which `exclude_missing` leaves out of the report
(its totals and its multiple-testing family).
"""

import re
from dataclasses import dataclass

from personalization.selectors import MISSING_SEGMENT as MISSING_LABEL

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

__all__ = ["MISSING_LABEL", "Breakdown", "BreakdownError"]


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
        if kind == "exposure" and name == "segment":
            return cls("exposure", "segment", exclude_missing)
        if kind == "attribute" and _NAME.match(name):
            return cls("attribute", name, exclude_missing)
        raise BreakdownError(
            f"segment_by={raw!r} is not supported; use exposure:segment or attribute:<name>"
            " (letters, digits and _.- only)"
        )

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def label(self) -> str:
        return "segment at exposure" if self.kind == "exposure" else self.name
