"""Rule segments: attribute and event-count conditions, for when the marketer knows the rule."""

import re

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from personalization import selectors as people
from personalization.ingest.schema import MAX_DEPTH, FieldError, json_limits_check
from segments.models import Segment, SegmentKind, SegmentMembership
from segments.services.clustering import SegmentsError
from segments.services.memberships import memberships_publish_on_commit

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_KEY = re.compile(r"^[a-z0-9][a-z0-9\-]{0,62}$")
# A rule is a few conditions, rewritten into SQL on every refresh: as large as an experience's
# targeting may be. A longer list of values belongs in a profile attribute.
MAX_DEFINITION_CHARS = 16 * 1024


def rule_validate(definition: dict) -> dict:
    """{"attributes": [{"attribute", "op": eq|ne|in, "value"|"values"}],
    "events": [{"type", "op": ">="|"<="|"=", "count", "days"}]} — at least one condition."""
    if not isinstance(definition, dict):
        raise SegmentsError("definition", 'use {"attributes": [...], "events": [...]}')
    attributes, events = definition.get("attributes") or [], definition.get("events") or []
    if not isinstance(attributes, list) or not isinstance(events, list) or not (attributes or events):
        raise SegmentsError("definition", "add at least one condition, e.g. purchased ≥ 2 in 30 days or plan = pro")
    clean_attributes, clean_events = [], []
    for n, cond in enumerate(attributes):
        where = f"attributes[{n}]"
        if not isinstance(cond, dict) or not _NAME.match(str(cond.get("attribute", ""))):
            raise SegmentsError(f"{where}.attribute", "name a profile attribute: letters, digits, _ . - only")
        op = cond.get("op", "eq")
        if op not in {"eq", "ne", "in"}:
            raise SegmentsError(f"{where}.op", "use eq, ne or in")
        if op == "in":
            values = cond.get("values")
            if not isinstance(values, list) or not values:
                raise SegmentsError(f"{where}.values", "give a non-empty list of values")
            clean_attributes.append({"attribute": cond["attribute"], "op": op, "values": [str(v) for v in values]})
        else:
            if "value" not in cond or isinstance(cond["value"], dict | list):
                raise SegmentsError(f"{where}.value", "give the value to compare with, e.g. pro")
            clean_attributes.append({"attribute": cond["attribute"], "op": op, "value": str(cond["value"])})
    for n, cond in enumerate(events):
        where = f"events[{n}]"
        if not isinstance(cond, dict) or not _NAME.match(str(cond.get("type", ""))):
            raise SegmentsError(f"{where}.type", "name an event type, e.g. purchase")
        if cond.get("op", ">=") not in {">=", "<=", "="}:
            raise SegmentsError(f"{where}.op", "use >=, <= or =")
        try:
            count, days = int(cond.get("count", 1)), int(cond.get("days", 30))
        except (TypeError, ValueError):
            raise SegmentsError(f"{where}.count", "count and days must be whole numbers") from None
        if not 0 <= count <= 1_000_000:
            raise SegmentsError(f"{where}.count", "count must be between 0 and 1,000,000")
        if not 1 <= days <= 365:
            raise SegmentsError(f"{where}.days", "days must be between 1 and 365")
        clean_events.append({"type": cond["type"], "op": cond.get("op", ">="), "count": count, "days": days})
    clean = {"attributes": clean_attributes, "events": clean_events}
    try:
        json_limits_check(clean, "conditions", max_depth=MAX_DEPTH, max_chars=MAX_DEFINITION_CHARS)
    except FieldError as exc:
        raise SegmentsError(exc.field, exc.message) from None
    return clean


def rule_segment_save(*, project, key: str, name: str, definition: dict, by: AbstractBaseUser | None = None) -> Segment:
    """Create or replace a rule segment and compute its members now."""
    if not _KEY.match(key or ""):
        raise SegmentsError("key", "use lowercase letters, digits and hyphens, e.g. repeat-buyers")
    if not (name or "").strip():
        raise SegmentsError("name", "give the segment a name")
    clean = rule_validate(definition)
    existing = Segment.objects.filter(project=project, key=key).first()
    if existing is not None and existing.kind != SegmentKind.RULE:
        raise SegmentsError("key", f"“{key}” is taken by a {existing.kind} segment; choose another key")
    with transaction.atomic():
        segment, _ = Segment.objects.update_or_create(
            project=project,
            key=key,
            defaults={"kind": SegmentKind.RULE, "name": name.strip(), "definition": clean, "created_by": by},
        )
        rule_segment_refresh(segment=segment)
    return segment


def rule_segment_refresh(*, segment: Segment) -> int:
    """Recompute a rule segment's members; decide sees who joined and who left."""
    members = people.profiles_matching_rule(
        project_id=segment.project_id,
        attributes=segment.definition.get("attributes", []),
        events=segment.definition.get("events", []),
        now=people.behavior_clock(project_id=segment.project_id),
    )
    with transaction.atomic():
        before = set(SegmentMembership.objects.filter(segment=segment).values_list("profile_id", flat=True))
        SegmentMembership.objects.filter(segment=segment).delete()
        SegmentMembership.objects.bulk_create(
            [SegmentMembership(segment=segment, profile_id=pid) for pid in members], batch_size=5000
        )
        Segment.objects.filter(pk=segment.pk).update(size=len(members))
        memberships_publish_on_commit(project_id=segment.project_id, profile_ids=before ^ set(members))
    return len(members)


def rule_segments_refresh_all() -> int:
    count = 0
    for segment in Segment.objects.filter(kind=SegmentKind.RULE):
        rule_segment_refresh(segment=segment)
        count += 1
    return count
