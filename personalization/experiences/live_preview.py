"""Who would match an experience's targeting right now: the experience page's live preview.

Counts the visitors with an event in the last hour (the active index, people/live_activity.py) whose
unit hash passes the experience's targeting as decide would check it now: the attribute and segment
conditions on what the hash holds, then the live conditions on the facts of their state. Holdouts
are not applied (the question is who is targeted, not who would see a variant).

What the preview cannot know: attributes a site passes only in the decide call's context, and the
two facts of a request (device, referrer). Those read as unknown, which makes their comparison false,
as in decide; the page names them.
"""

import time
from dataclasses import dataclass

from personalization import rkeys
from personalization.decide.engine import targeting_matches
from personalization.experiences.conditions import condition_fields, condition_function
from personalization.people.live_activity import ActiveUnits, live_active_units, live_facts, live_settings_of

# Facts decide takes from the request, not from the state.
REQUEST_FACTS = ("device", "referrer")


@dataclass(frozen=True, slots=True)
class Preview:
    matching: int
    with_state: int  # of the visitors read, those with live state (opted-out visitors keep none)
    active: ActiveUnits
    request_facts: tuple[str, ...]  # facts the conditions read that only a request knows
    has_conditions: bool


def experience_live_preview(*, experience, now: float | None = None) -> Preview:
    now = time.time() if now is None else now
    targeting = experience.targeting or {}
    attributes = sorted({c["attribute"] for c in targeting.get("attributes", ())})
    fields = (*rkeys.UNIT_LIVE_FIELDS, "dnp", "segs", *(f"attr:{name}" for name in attributes))
    active = live_active_units(project_id=experience.project_id, fields=fields, now=now)
    settings = live_settings_of(experience.project)
    matches = condition_function(experience.conditions)
    matching = with_state = 0
    for _, user in active.units:
        found = live_facts(user, settings=settings, now=now)
        if found is None or user.get("dnp") == "1":
            continue
        with_state += 1
        if targeting_matches(targeting, user, {}) and matches(found[2]):
            matching += 1
    used = condition_fields(experience.conditions)
    return Preview(
        matching=matching,
        with_state=with_state,
        active=active,
        request_facts=tuple(f for f in REQUEST_FACTS if f in used),
        has_conditions=experience.conditions is not None,
    )
