"""The experience form: parse the posted fields and repeating rows (targeting conditions, variants)
into what `experience_create` / `experience_update` take, with an error per field or row."""

import json
import math
import re
from dataclasses import dataclass, field

from django import forms

from personalization import hooks, services
from personalization.experiences.limits import PAYLOAD_MAX_DEPTH
from personalization.models import Experience, Policy

TARGET_OPS = [("in", "is one of"), ("not_in", "is not one of"), ("exists", "is set")]
FIELD_LABELS = {
    "key": "Key",
    "name": "Name",
    "touchpoint": "Touchpoint",
    "policy": "Policy",
    "bandit_floor": "Floor",
    "bandit_burn_in": "Burn-in",
    "segment_attribute": "Segment attribute",
    "goal_event": "Goal event",
    "attribution_hours": "Attribution window",
    "holdout_share": "Experience holdout",
    "targeting": "Targeting",
    "segments": "Only in segments",
    "conditions": "Live conditions",
    "variants": "Variants",
    "status": "Status",
    "global_holdout_share": "Global holdout",
}
_SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")
EXAMPLE_PAYLOAD = '{"headline": "Free shipping today", "image": "/img/hero-b.jpg"}'


class ExperienceForm(forms.Form):
    """The single-valued fields; targeting and variants are repeating rows, parsed below."""

    key = forms.SlugField(max_length=64)
    name = forms.CharField(max_length=120)
    touchpoint = forms.CharField(max_length=120)
    policy = forms.ChoiceField(choices=Policy.choices)
    bandit_floor = forms.FloatField(min_value=0, max_value=1)
    bandit_burn_in = forms.IntegerField(min_value=0, max_value=1_000_000)
    segment_attribute = forms.CharField(max_length=64, required=False)
    goal_event = forms.CharField(max_length=64)
    attribution_hours = forms.IntegerField(min_value=1, max_value=24 * 365)
    holdout_share = forms.FloatField(min_value=0, max_value=1)


@dataclass
class ParsedForm:
    values: dict
    variant_rows: list[dict]
    condition_rows: list[dict]
    errors: dict[str, str] = field(default_factory=dict)
    fields: dict = field(default_factory=dict)
    variants: list[dict] = field(default_factory=list)

    @property
    def problems(self) -> list[tuple[str, str]]:
        """Every error with the label of its field, for the summary above the form."""
        found = [(FIELD_LABELS.get(name, name), message) for name, message in self.errors.items()]
        found += [("Targeting", row["error"]) for row in self.condition_rows if row["error"]]
        found += [("Variants", row["error"]) for row in self.variant_rows if row["error"]]
        return found


def _at(values: list[str], i: int) -> str:
    return values[i].strip() if i < len(values) else ""


def _parse_variants(post, parsed: ParsedForm) -> None:
    keys, names = post.getlist("variant-key"), post.getlist("variant-name")
    payloads, weights = post.getlist("variant-payload"), post.getlist("variant-weight")
    control = post.get("variant-control", "")
    for i in range(max(len(keys), len(names), len(payloads), len(weights))):
        key, name, payload_text = _at(keys, i), _at(names, i), _at(payloads, i)
        weight_text = _at(weights, i) or "1"
        if not (key or name or payload_text):
            continue  # an unused blank row
        row = {"key": key, "name": name, "payload": payload_text, "weight": weight_text, "error": ""}
        row["is_control"] = control == str(i)
        label = f"“{key}”" if key else f"#{len(parsed.variant_rows) + 1}"
        payload, weight = {}, 1.0
        if not _SLUG.match(key):
            row["error"] = f"variant {label}: give it a key of letters, numbers, - or _ (at most 64), e.g. b"
        elif len(name) > 120:
            row["error"] = f"variant {label}: the name is {len(name)} characters; keep it to 120"
        else:
            try:
                payload = json.loads(payload_text) if payload_text else {}
            except json.JSONDecodeError as exc:
                row["error"] = (
                    f"payload of variant {label} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                    f"column {exc.colno}. Example: {EXAMPLE_PAYLOAD}"
                )
            except RecursionError:  # deeper than Python's reader follows; the service names shallower ones
                row["error"] = (
                    f"payload of variant {label} (variants[{len(parsed.variant_rows)}].payload) is nested too"
                    f" deep to read; keep objects and lists at most {PAYLOAD_MAX_DEPTH} levels deep"
                )
            try:
                weight = float(weight_text)
                if not math.isfinite(weight):
                    raise ValueError(weight_text)
            except ValueError:
                row["error"] = row["error"] or f"weight of variant {label} must be a number such as 1 or 0.5"
        parsed.variant_rows.append(row)
        if not row["error"]:
            parsed.variants.append(
                {"key": key, "name": name or key, "payload": payload, "is_control": row["is_control"], "weight": weight}
            )


def _parse_targeting(post, parsed: ParsedForm) -> dict:
    attributes, ops, value_lists = post.getlist("cond-attribute"), post.getlist("cond-op"), post.getlist("cond-values")
    valid_ops = {op for op, _ in TARGET_OPS}
    conditions = []
    for i in range(max(len(attributes), len(ops), len(value_lists))):
        attribute, op, values_text = _at(attributes, i), _at(ops, i) or "in", _at(value_lists, i)
        if not (attribute or values_text):
            continue
        row = {"attribute": attribute, "op": op, "values": values_text, "error": ""}
        values = [v.strip() for v in values_text.split(",") if v.strip()]
        if not attribute:
            row["error"] = f"condition #{len(parsed.condition_rows) + 1}: name the profile attribute, e.g. country"
        elif op not in valid_ops:
            row["error"] = f"condition on “{attribute}”: choose is one of, is not one of, or is set"
        elif op != "exists" and not values:
            row["error"] = f"condition on “{attribute}”: list at least one value, separated by commas"
        parsed.condition_rows.append(row)
        if not row["error"]:
            conditions.append({"attribute": attribute, "op": op, **({"values": values} if op != "exists" else {})})
    segments = form_segment_keys(post)
    targeting: dict = {}
    if conditions:
        targeting["attributes"] = conditions
    if segments:
        targeting["segments"] = segments
    text = post.get("targeting-conditions", "").strip()
    if text:
        targeting["conditions"] = text
    return targeting


def form_segment_keys(post) -> list[str]:
    """The ticked segments of the picker; a value may also list keys separated by commas (older
    clients, scripts), duplicates once, in order."""
    keys: list[str] = []
    for value in post.getlist("targeting-segments"):
        for key in (part.strip() for part in value.split(",")):
            if key and key not in keys:
                keys.append(key)
    return keys


def segment_picker(*, project_id: int, selected: list[str]) -> dict:
    """The picker's groups (clustering runs newest first, rules, lookalikes) and the selected keys
    that name no saved segment any more (shown ticked, so the marketer can untick them)."""
    groups = hooks.segments().segment_picker_groups(project_id=project_id)
    listed = set()
    for group in groups:
        keys = {s.key for s in group["segments"]}
        listed |= keys
        group["selected"] = len(keys.intersection(selected))
    return {"groups": groups, "stale": [key for key in selected if key not in listed]}


def form_parse(post, *, creating: bool) -> ParsedForm:
    form = ExperienceForm(post)
    if not creating:
        del form.fields["key"]
    parsed = ParsedForm(
        values={name: post.get(name, "").strip() for name in ExperienceForm.base_fields},
        variant_rows=[],
        condition_rows=[],
    )
    parsed.values["segments"] = form_segment_keys(post)
    parsed.values["conditions"] = post.get("targeting-conditions", "").strip()
    form.is_valid()
    parsed.errors.update({name: errors[0] for name, errors in form.errors.items()})
    targeting = _parse_targeting(post, parsed)
    _parse_variants(post, parsed)
    parsed.fields = {name: value for name, value in form.cleaned_data.items() if name != "key"}
    parsed.fields["targeting"] = targeting
    return parsed


_VARIANT_FIELD = re.compile(r"^variants\[(\d+)\]\.(\w+)")


def service_error_place(parsed: ParsedForm, exc: services.ExperienceError) -> None:
    """Put a service error next to the field it names ("variants.key" belongs to the variants,
    "variants[1].payload" to the second variant's row)."""
    row = _VARIANT_FIELD.match(exc.field)
    if row and int(row[1]) < len(parsed.variant_rows):
        variant = parsed.variant_rows[int(row[1])]
        label = f"“{variant['key']}”" if variant["key"] else f"#{int(row[1]) + 1}"
        variant["error"] = f"{row[2]} of variant {label} ({exc.field}) {exc.message}"
        return
    slot = {"targeting.segments": "segments", "targeting.conditions": "conditions"}.get(
        exc.field, exc.field.split(".")[0]
    )
    slot = slot if slot in FIELD_LABELS else "form"
    parsed.errors[slot] = exc.message


def form_values(experience: Experience | None) -> ParsedForm:
    if experience is None:
        defaults = {
            name: Experience._meta.get_field(name).get_default()
            for name in ExperienceForm.base_fields
            if name not in {"key", "name", "touchpoint"}
        }
        return ParsedForm(
            values={"key": "", "name": "", "touchpoint": "", "segments": [], "conditions": "", **defaults},
            variant_rows=[
                {"key": "control", "name": "Control", "payload": "{}", "weight": "1", "is_control": True, "error": ""},
                {"key": "", "name": "", "payload": "", "weight": "1", "is_control": False, "error": ""},
            ],
            condition_rows=[],
        )
    targeting = experience.targeting or {}
    return ParsedForm(
        values={
            **{name: getattr(experience, name) for name in ExperienceForm.base_fields},
            "segments": list(targeting.get("segments", [])),
            "conditions": targeting.get("conditions") or "",
        },
        variant_rows=[
            {
                "key": v.key,
                "name": v.name,
                "payload": json.dumps(v.payload, indent=2, ensure_ascii=False),
                "weight": f"{v.weight:g}",
                "is_control": v.is_control,
                "error": "",
            }
            for v in experience.variants.all()
        ],
        condition_rows=[
            {
                "attribute": c.get("attribute", ""),
                "op": c.get("op", "in"),
                "values": ", ".join(c.get("values", [])),
                "error": "",
            }
            for c in targeting.get("attributes", [])
        ],
    )


def current_variants(experience: Experience) -> list[dict]:
    return [
        {"key": v.key, "name": v.name, "payload": v.payload, "is_control": v.is_control, "weight": v.weight}
        for v in experience.variants.all()
    ]
