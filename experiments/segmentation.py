"""How a lift report splits people into segments, as a piece of SQL over the exposure table `x`.

The statistics never see this: they get one row of sufficient statistics per (segment, arm). New
kinds of segments (behavior clusters, rule segments) plug in here as one more kind.

    "exposure:segment"   the segment recorded at exposure time (per-segment bandits)
    "attribute:<name>"   a profile attribute (device, channel, plan …)
    "demo:intent"        the demo's planted intent (demo data only)
"""

import re
from dataclasses import dataclass

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
NONE_LABEL = "(none)"


class SegmentationError(ValueError):
    """The segment_by value cannot be used; the message says what is accepted."""


@dataclass(frozen=True)
class Segmentation:
    kind: str
    name: str = ""

    @classmethod
    def parse(cls, raw: str) -> "Segmentation":
        kind, _, name = (raw or "").partition(":")
        if kind == "exposure" and name == "segment":
            return cls("exposure", "segment")
        if kind == "attribute" and _NAME.match(name):
            return cls("attribute", name)
        if kind == "demo" and name == "intent":
            return cls("demo", "intent")
        raise SegmentationError(
            f"segment_by={raw!r} is not supported; use exposure:segment, attribute:<name> or demo:intent"
        )

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def label(self) -> str:
        return {"exposure": "segment at exposure", "demo": "planted intent (demo)"}.get(self.kind, self.name)

    def sql(self) -> tuple[str, str, list]:
        """(join clause, segment expression, parameters of the expression)."""
        if self.kind == "exposure":
            return "", f"coalesce(nullif(x.segment, ''), '{NONE_LABEL}')", []
        join = "JOIN personalization_profile p ON p.id = x.profile_id"
        if self.kind == "demo":
            return join, f"coalesce(nullif(p.demo_intent, ''), '{NONE_LABEL}')", []
        return join, f"coalesce(p.attributes ->> %s, '{NONE_LABEL}')", [self.name]
