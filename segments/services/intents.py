"""Named intents: saving them (checked, refused on sensitive categories), scoring people after each drain,
publishing the scores to decide, and the editor's preview.

Scoring runs in the worker after a drain step (the events_drained signal, beside the fold-in), never in
decide or the events request: a person's new search is in their "pi" field within seconds. The texts
are encoded through the text cache (segments/services/meaning.py), so a repeated query costs a lookup.
People who may not be profiled are never scored: personalization's selectors leave their events out,
and their rows and field are deleted when they are next seen, on opt-out and on objection.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import lru_cache

import numpy as np
from django.db import transaction
from django.utils import timezone

from personalization import selectors as people
from personalization import services as personalization_services
from personalization.intent_fields import intents_pack
from segments import intents, meaning, sensitive, text_encoder
from segments.embedding import BehaviorEvent
from segments.models import Intent, ProfileIntent
from segments.services.clustering import SegmentsError
from segments.services.meaning import text_vectors

MAX_INTENTS = 50
CHUNK = 2_000
PREVIEW_EVENTS = 20_000
PREVIEW_NEAREST = 10
# The editor's count of people above the threshold reads at most this many people (a sample above it).
PREVIEW_PEOPLE = 1_000
_FIELDS = ("name", "key", "examples", "threshold")


def _clean_examples(examples: object) -> list[str]:
    if isinstance(examples, str):
        examples = examples.splitlines()
    if not isinstance(examples, list) or not all(isinstance(e, str) for e in examples):
        raise SegmentsError("examples", "give example phrases as a list of texts (or one per line)")
    cleaned = list(dict.fromkeys(" ".join(e.split()) for e in examples if e.strip()))
    if not intents.MIN_EXAMPLES <= len(cleaned) <= intents.MAX_EXAMPLES:
        raise SegmentsError(
            "examples",
            f"give {intents.MIN_EXAMPLES} to {intents.MAX_EXAMPLES} different example phrases"
            f" (got {len(cleaned)}), e.g. “visa rules for japan”, “travel insurance”, “hotel near the station”",
        )
    for i, example in enumerate(cleaned):
        if len(example) > intents.MAX_PHRASE_CHARS:
            raise SegmentsError(
                f"examples[{i}]", f"is {len(example)} characters; keep each phrase to {intents.MAX_PHRASE_CHARS}"
            )
        if not any(c.isalpha() for c in example) or any(not c.isprintable() for c in example):
            raise SegmentsError(f"examples[{i}]", "write words people would search for: letters, no control characters")
    return cleaned


def _clean(fields: dict, *, project_id: int, current: Intent | None) -> dict:
    unknown = set(fields) - set(_FIELDS)
    if unknown:
        raise SegmentsError(sorted(unknown)[0], f"is not a field of an intent; use {', '.join(_FIELDS)}")
    out: dict = {}
    if "name" in fields or current is None:
        name = fields.get("name")
        if not isinstance(name, str) or not name.strip():
            raise SegmentsError("name", "give the intent a name in plain words, e.g. “planning a trip”")
        name = " ".join(name.split())
        if len(name) > intents.MAX_NAME_CHARS or any(not c.isprintable() for c in name):
            raise SegmentsError("name", f"keep the name to {intents.MAX_NAME_CHARS} printable characters")
        out["name"] = name
    if current is None or "key" in fields:
        raw_key = fields.get("key") or intents.key_from_name(out.get("name") or current.name)
        if not isinstance(raw_key, str) or not intents.KEY_PATTERN.fullmatch(raw_key):
            raise SegmentsError(
                "key", "use 1 to 48 lowercase letters, digits and hyphens, not at either end, e.g. planning-a-trip"
            )
        taken = Intent.objects.filter(project_id=project_id, key=raw_key)
        if current is not None:
            taken = taken.exclude(pk=current.pk)
        if taken.exists():
            raise SegmentsError("key", f"“{raw_key}” is taken by another intent of this project; choose another key")
        out["key"] = raw_key
    if "examples" in fields or current is None:
        out["examples"] = _clean_examples(fields.get("examples"))
    if "threshold" in fields:
        threshold = fields["threshold"]
        if isinstance(threshold, str):
            try:
                threshold = float(threshold)
            except ValueError:
                threshold = None
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1:
            raise SegmentsError(
                "threshold", f"give a score between 0 and 1, e.g. {intents.DEFAULT_THRESHOLD:g} (the default)"
            )
        out["threshold"] = round(float(threshold), 2)
    return out


def _sensitive_check(name: str, examples: Sequence[str], encoder: text_encoder.TextEncoder) -> None:
    finding = sensitive.sensitive_finding([name, *examples], encoder.encode)
    if finding is not None:
        field = "name" if finding.text == name else f"examples[{list(examples).index(finding.text)}]"
        raise SegmentsError(field, finding.message())


def intent_create(*, project_id: int, by=None, **fields) -> Intent:
    """Save a new intent (SegmentsError naming the field when it cannot be used) and score everyone."""
    if Intent.objects.filter(project_id=project_id).count() >= MAX_INTENTS:
        raise SegmentsError("name", f"a project holds at most {MAX_INTENTS} intents; delete one you no longer use")
    clean = _clean(fields, project_id=project_id, current=None)
    encoder = text_encoder.encoder_load()
    _sensitive_check(clean["name"], clean["examples"], encoder)
    model = intents.intent_model(
        key=clean["key"], name=clean["name"], examples=clean["examples"], encode=encoder.encode, encoder=encoder.name
    )
    with transaction.atomic():
        intent = Intent.objects.create(
            project_id=project_id,
            encoder=encoder.name,
            prototype=model.prototype,
            rule=intents.RULE,
            created_by=by,
            **clean,
        )
        personalization_services.audit_record(
            project_id=project_id, actor=by, action="create", object_type="intent", object_key=intent.key, changes=clean
        )
        transaction.on_commit(lambda: _rescore_later(project_id))
    return intent


def intent_update(*, intent: Intent, by=None, **fields) -> Intent:
    """Change an intent's name, key, examples or threshold; everyone is scored again when the meaning
    changed. Targeting that names the old key stops matching: the page says so before a key change."""
    clean = _clean(fields, project_id=intent.project_id, current=intent)
    changed = {k: v for k, v in clean.items() if getattr(intent, k) != v}
    if not changed:
        return intent
    encoder = text_encoder.encoder_load()
    name, examples = changed.get("name", intent.name), changed.get("examples", intent.examples)
    rescore = "name" in changed or "examples" in changed
    if rescore:
        _sensitive_check(name, examples, encoder)
        model = intents.intent_model(
            key=intent.key, name=name, examples=examples, encode=encoder.encode, encoder=encoder.name
        )
        intent.prototype, intent.encoder, intent.rule = model.prototype, encoder.name, intents.RULE
    with transaction.atomic():
        for field, value in changed.items():
            setattr(intent, field, value)
        intent.save()
        personalization_services.audit_record(
            project_id=intent.project_id,
            actor=by,
            action="update",
            object_type="intent",
            object_key=intent.key,
            changes=changed,
        )
        if rescore or "key" in changed:
            transaction.on_commit(lambda: _rescore_later(intent.project_id))
    return intent


def intent_delete(*, intent: Intent, by=None) -> None:
    """Delete an intent and its scores; decide's field loses it at the rescore that follows."""
    project_id, key = intent.project_id, intent.key
    with transaction.atomic():
        ProfileIntent.objects.filter(intent=intent).delete()
        intent.delete()
        personalization_services.audit_record(
            project_id=project_id, actor=by, action="delete", object_type="intent", object_key=key
        )
        transaction.on_commit(lambda: _rescore_later(project_id))


def _rescore_later(project_id: int) -> None:
    from segments.tasks import intents_rescore_task  # circular: tasks imports services

    intents_rescore_task.delay(project_id)


@lru_cache(maxsize=64)
def _models_cached(project_id: int, stamp: tuple) -> tuple[intents.IntentModel, ...]:
    rows = Intent.objects.filter(project_id=project_id).order_by("key").values_list("key", "encoder", "prototype")
    out = []
    for key, encoder, vector in rows:
        low, high = intents.SCALE.get(encoder, intents.SCALE[text_encoder.DEFAULT_ENCODER])
        out.append(intents.IntentModel(key=key, prototype=np.asarray(vector, dtype=np.float32), low=low, high=high))
    return tuple(out)


def intents_reencode(*, project_id: int) -> int:
    """Encode again the project's intents whose prototype was made by another rule or encoder than the
    current ones (saved before an upgrade), so one project's scores never mix old and new prototypes.
    Returns how many were encoded; the caller scores everyone again when it is not already doing so."""
    current = text_encoder.DEFAULT_ENCODER
    stale = list(Intent.objects.filter(project_id=project_id).exclude(rule=intents.RULE, encoder=current))
    if not stale:
        return 0  # the usual case, after each drain: one query, no encoder loaded
    encoder, count = text_encoder.encoder_load(current), 0
    for intent in stale:
        model = intents.intent_model(
            key=intent.key, name=intent.name, examples=intent.examples, encode=encoder.encode, encoder=encoder.name
        )
        # Only if still stale: a save in between (an edit, another worker) already made it by this rule.
        updated = Intent.objects.filter(pk=intent.pk, rule=intent.rule, encoder=intent.encoder).update(
            prototype=model.prototype, encoder=encoder.name, rule=intents.RULE, updated_at=timezone.now()
        )
        count += updated
        if not updated:
            continue
        personalization_services.audit_record(
            project_id=project_id,
            actor=None,
            action="update",
            object_type="intent",
            object_key=intent.key,
            changes={"prototype": f"encoded again by rule “{intents.RULE}” ({encoder.name})"},
        )
    return count


def intent_models(*, project_id: int) -> tuple[intents.IntentModel, ...]:
    """The project's intents ready to score, read again only when one changed (a count and newest edit)."""
    rows = Intent.objects.filter(project_id=project_id)
    stamp = (rows.count(), max(rows.values_list("updated_at", flat=True), default=None))
    return _models_cached(project_id, stamp) if stamp[0] else ()


def intents_score(*, project_id: int, profile_ids: Iterable[int], now: datetime | None = None) -> dict:
    """Score these profiles on every intent of the project from their recent texts, store the scores
    with the phrases that drove them and publish field "pi" to decide. Profiles that may not be profiled
    (or have no recent event) lose their scores. Returns {"scored", "removed"}."""
    wanted = sorted(set(profile_ids))
    if intents_reencode(project_id=project_id):
        # Everyone else still holds a score from the old prototypes: score them all again.
        transaction.on_commit(lambda: _rescore_later(project_id))
    models = intent_models(project_id=project_id)
    if not wanted or not models:
        return {"scored": 0, "removed": 0}
    now = now or people.behavior_clock(project_id=project_id)
    since = now - timedelta(days=intents.HALF_LIFE_DAYS * intents.MAX_AGE_HALF_LIVES)
    texts: dict[int, list[intents.WeightedText]] = {}
    for profile_id, rows in people.profiles_behavior(project_id=project_id, since=since, profile_ids=wanted):
        events = [BehaviorEvent(etype, ts, properties or {}) for etype, ts, properties, _ in rows]
        texts[profile_id] = intents.recent_texts(events, now=now)
    vectors = text_vectors(texts=[t.text for person in texts.values() for t in person])
    keys = {m.key: m for m in models}
    ids_by_key = dict(Intent.objects.filter(project_id=project_id, key__in=keys).values_list("key", "pk"))
    batch = intents.profiles_scores(list(texts.values()), vectors, models)
    rows, fields = [], {}
    for row, profile_id in enumerate(texts):
        scores = batch.person(row)
        fields[profile_id] = intents_pack(
            {key: score for key, (score, _) in scores.items()},
            why={key: phrases[0] for key, (_, phrases) in scores.items() if phrases},
        )
        # No row for a score of 0: nothing of the intent in their words (the field still says 0).
        rows += [
            ProfileIntent(
                project_id=project_id,
                profile_id=profile_id,
                intent_id=ids_by_key[key],
                score=score,
                phrases=phrases,
                scored_at=now,
            )
            for key, (score, phrases) in scores.items()
            if key in ids_by_key and score > 0
        ]
    gone = [pid for pid in wanted if pid not in texts]
    with transaction.atomic():
        ProfileIntent.objects.filter(project_id=project_id, profile_id__in=wanted).delete()
        ProfileIntent.objects.bulk_create(rows, batch_size=CHUNK)
    personalization_services.unit_intents_publish(project_id=project_id, intents={**fields, **dict.fromkeys(gone)})
    return {"scored": len(texts), "removed": len(gone)}


def intents_rescore(*, project_id: int) -> int:
    """Score everyone with a recent event again (after an intent was saved or deleted, nightly), in chunks,
    with intents saved under an older rule encoded again first."""
    intents_reencode(project_id=project_id)
    now = people.behavior_clock(project_id=project_id)
    since = now - timedelta(days=intents.HALF_LIFE_DAYS * intents.MAX_AGE_HALF_LIVES)
    if not intent_models(project_id=project_id):
        stale = list(ProfileIntent.objects.filter(project_id=project_id).values_list("profile_id", flat=True))
        ProfileIntent.objects.filter(project_id=project_id).delete()
        personalization_services.unit_intents_publish(project_id=project_id, intents=dict.fromkeys(set(stale)))
        return 0
    scored, chunk = 0, []
    previously = set(ProfileIntent.objects.filter(project_id=project_id).values_list("profile_id", flat=True))
    for profile_id, _ in people.profiles_behavior(project_id=project_id, since=since):
        chunk.append(profile_id)
        if len(chunk) >= CHUNK:
            scored += intents_score(project_id=project_id, profile_ids=chunk, now=now)["scored"]
            previously.difference_update(chunk)
            chunk = []
    previously.difference_update(chunk)
    if chunk or previously:
        scored += intents_score(project_id=project_id, profile_ids=[*chunk, *previously], now=now)["scored"]
    return scored


def intents_rescore_all() -> int:
    """intents_rescore for every project that has an intent; returns the people scored."""
    # order_by(): the model's ordering by name would make DISTINCT keep one row per intent, not per project.
    projects = Intent.objects.order_by().values_list("project_id", flat=True).distinct()
    return sum(intents_rescore(project_id=project_id) for project_id in projects)


def intents_delete(*, project_id: int, profile_ids: Sequence[int]) -> None:
    """Delete these profiles' intent scores, here and in decide's hash (opt-out, objection)."""
    ProfileIntent.objects.filter(project_id=project_id, profile_id__in=list(profile_ids)).delete()
    personalization_services.unit_intents_publish(project_id=project_id, intents=dict.fromkeys(profile_ids))


def intents_opted_out_receiver(sender, *, project_id: int, profile_ids: list[int], **kwargs) -> None:
    """Someone may no longer be profiled: their intent scores go, here and in decide's hash."""
    intents_delete(project_id=project_id, profile_ids=profile_ids)


def intent_preview(*, project_id: int, name: object, examples: object, threshold: object = None) -> dict:
    """What an intent being written would find, before it is saved: the project's real texts nearest to
    it (newest PREVIEW_EVENTS events) and how many people would score at or above the threshold on
    their recent texts. SegmentsError naming the field for an unusable draft, refusals included."""
    clean = _clean(
        {"name": name, "examples": examples, **({"threshold": threshold} if threshold not in (None, "") else {})},
        project_id=project_id,
        current=Intent(project_id=project_id, key="preview", name="preview"),
    )
    limit = clean.get("threshold", intents.DEFAULT_THRESHOLD)
    encoder = text_encoder.encoder_load()
    _sensitive_check(clean["name"], clean["examples"], encoder)
    model = intents.intent_model(
        key="preview", name=clean["name"], examples=clean["examples"], encode=encoder.encode, encoder=encoder.name
    )
    found: dict[str, None] = {}
    for properties in people.events_properties_recent(project_id=project_id, limit=PREVIEW_EVENTS):
        for text, role in meaning.event_texts(properties or {}):
            if role >= 1.0:
                found.setdefault(text)
    texts = list(found)
    vectors = text_vectors(texts=texts, encoder=encoder)
    scores = model.scores(np.stack([vectors[t] for t in texts])) if texts else np.zeros(0)
    order = np.argsort(-scores, kind="stable")[:PREVIEW_NEAREST]
    nearest = [{"text": texts[i], "score": round(float(scores[i]), 2)} for i in order]
    above, sampled, population = _people_above(project_id=project_id, model=model, threshold=limit)
    return {
        "nearest": nearest,
        "texts_searched": len(texts),
        "people_above": above,
        "people_sampled": sampled,
        "people_estimated": sampled < population,
        "threshold": limit,
    }


def _people_above(*, project_id: int, model: intents.IntentModel, threshold: float) -> tuple[int, int, int]:
    """(people whose recent texts give this draft intent a score at or above the threshold, people read,
    people in all). Over PREVIEW_PEOPLE a sample is read and the count scaled to everyone: reading
    everyone's events took ~1.3 CPU s per 1,000 people, minutes at a million, in a web request."""
    now = people.behavior_clock(project_id=project_id)
    since = now - timedelta(days=intents.HALF_LIFE_DAYS * intents.MAX_AGE_HALF_LIVES)
    sample, population = people.profiles_recent_sample(project_id=project_id, since=since, size=PREVIEW_PEOPLE)
    people_texts = []
    for _, rows in people.profiles_behavior(project_id=project_id, since=since, profile_ids=sample):
        events = [BehaviorEvent(etype, ts, properties or {}) for etype, ts, properties, _ in rows]
        people_texts.append(intents.recent_texts(events, now=now))
    vectors = text_vectors(texts=[t.text for person in people_texts for t in person])
    above = int((intents.profiles_scores(people_texts, vectors, [model]).best[:, 0] >= threshold).sum())
    if len(sample) < population:
        above = round(above * population / len(sample))
    return above, len(sample), population
