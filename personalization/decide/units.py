"""The unit hash decide reads for each visitor id: profiles' attributes and do-not-personalize flag,
sticky assignments carried over at login, and segment memberships (the one way another app reaches
what decide reads)."""

from collections.abc import Iterable, Mapping

import orjson

from personalization import redis_client, rkeys
from personalization.decide.engine import HOLDOUT_EXPERIENCE_MARK, HOLDOUT_GLOBAL_MARK
from personalization.intent_fields import UNIT_INTENTS_FIELD
from personalization.models import Profile, ProfileIdentity
from personalization.people import live_session
from personalization.rkeys import UNIT_TTL_SECONDS
from personalization.score_fields import UNIT_SCORES_FIELD


def unit_segments_publish(*, project_id: int, memberships: Mapping[int, list[str]], chunk: int = 2000) -> int:
    """Set field "segs" (space-separated segment keys) on the hash of every id of each profile.

    `memberships` maps profile id → every segment key it is in now (an empty list clears it).
    Returns the number of hashes written.
    """
    profile_ids = list(memberships)
    if not profile_ids:
        return 0
    client = redis_client.worker()
    # MULTI/EXEC per chunk: a profile's ids (anonymous and user) are in one chunk, so a writer killed
    # mid-publish never leaves one of its hashes with the new segments and another with the old.
    pipe = client.pipeline(transaction=True)
    written = 0
    for start in range(0, len(profile_ids), chunk):
        part = profile_ids[start : start + chunk]
        identities = ProfileIdentity.objects.filter(project_id=project_id, profile_id__in=part)
        for profile_id, value in identities.values_list("profile_id", "value").iterator(chunk_size=chunk):
            key = rkeys.unit(project_id, value)
            pipe.hset(key, "segs", " ".join(sorted(set(memberships[profile_id]))))
            pipe.expire(key, UNIT_TTL_SECONDS)
            written += 1
        pipe.execute()
    return written


def unit_scores_publish(*, project_id: int, scores: Mapping[int, str | None], chunk: int = 2000) -> int:
    """Set field "ps" (predictive scores, personalization/score_fields.py) on the hash of every id of
    each profile; None deletes it. Returns the number of hashes written."""
    return _unit_field_publish(project_id, UNIT_SCORES_FIELD, scores, chunk)


def unit_intents_publish(*, project_id: int, intents: Mapping[int, str | None], chunk: int = 2000) -> int:
    """Set field "pi" (intent scores, personalization/intent_fields.py) on the hash of every id of each
    profile; None deletes it. Returns the number of hashes written."""
    return _unit_field_publish(project_id, UNIT_INTENTS_FIELD, intents, chunk)


def _unit_field_publish(project_id: int, name: str, values: Mapping[int, str | None], chunk: int) -> int:
    profile_ids = list(values)
    client = redis_client.worker()
    written = 0
    for start in range(0, len(profile_ids), chunk):
        pipe = client.pipeline(transaction=False)
        part = profile_ids[start : start + chunk]
        identities = ProfileIdentity.objects.filter(project_id=project_id, profile_id__in=part)
        for profile_id, value in identities.values_list("profile_id", "value").iterator(chunk_size=chunk):
            key = rkeys.unit(project_id, value)
            field = values[profile_id]
            if field is None:
                pipe.hdel(key, name)
                continue
            pipe.hset(key, name, field)
            pipe.expire(key, UNIT_TTL_SECONDS)
            written += 1
        pipe.execute()
    return written


def profiles_publish(*, project_id: int, profile_ids: list[int] | None = None, chunk: int = 2000) -> int:
    """Write profiles' attributes and do-not-personalize flag to the Redis hash of each of their ids."""
    profiles = Profile.objects.filter(project_id=project_id)
    if profile_ids is not None:
        profiles = profiles.filter(pk__in=profile_ids)
    identities = ProfileIdentity.objects.filter(profile__in=profiles).values_list("profile_id", "value")
    units: dict[int, list[str]] = {}
    for profile_id, value in identities.iterator(chunk_size=chunk):
        units.setdefault(profile_id, []).append(value)
    client = redis_client.worker()
    written = 0
    pipe = client.pipeline(transaction=False)
    rows = profiles.values_list("pk", "attributes", "do_not_personalize", "consent")
    for pk, attributes, dnp, consent in rows.iterator(chunk_size=chunk):
        opted_out = dnp or (consent or {}).get("personalization") is False
        mapping = {f"attr:{name}": str(value) for name, value in (attributes or {}).items()}
        mapping["dnp"] = "1" if opted_out else "0"
        mapping["consent"] = "1" if (consent or {}).get("personalization") is True else "0"
        for unit_id in units.get(pk, []):
            key = rkeys.unit(project_id, unit_id)
            pipe.hset(key, mapping=mapping)
            if opted_out:
                # At once, not at the visitor's next event or retrain: an opted-out visitor keeps no
                # live state, no predictive scores and no intent scores.
                pipe.hdel(key, *rkeys.UNIT_LIVE_FIELDS, UNIT_SCORES_FIELD, UNIT_INTENTS_FIELD)
            pipe.expire(key, UNIT_TTL_SECONDS)
            written += 1
        if len(pipe) >= chunk:
            pipe.execute()
    pipe.execute()
    return written


def units_stitch(*, project_id: int, pairs: list[tuple[str, str]]) -> None:
    """Carry an anonymous id's decide hash over to its user id at login, so a visitor who logs in
    keeps seeing what they saw and keeps their session: sticky assignments are copied where the
    user has none yet, and the live state is merged (`live_session.live_state_merge`), unless the
    user opted out or has not consented where the project requires consent (as the project's
    published snapshot says; without one, no state is written: it is not known to be allowed)."""
    client = redis_client.worker()
    pipe = client.pipeline(transaction=False)
    pipe.get(rkeys.snapshot(project_id))
    for anonymous_id, user_id in pairs:
        pipe.hgetall(rkeys.unit(project_id, anonymous_id))
        pipe.hmget(rkeys.unit(project_id, user_id), rkeys.UNIT_LIVE_FIELDS)
    snapshot, *replies = pipe.execute()
    states: list[tuple[str, dict, dict]] = []
    for (_, user_id), fields, user_state in zip(pairs, replies[0::2], replies[1::2], strict=True):
        key = rkeys.unit(project_id, user_id)
        for name, value in fields.items():
            if name.startswith(b"a:"):
                pipe.hsetnx(key, name, value)
        pipe.expire(key, UNIT_TTL_SECONDS)
        anonymous = {name.decode(): value.decode() for name, value in fields.items()}
        user = {
            name: value.decode()
            for name, value in zip(rkeys.UNIT_LIVE_FIELDS, user_state, strict=True)
            if value is not None
        }
        states.append((key, anonymous, user))
    pipe.execute()
    if snapshot is not None:
        privacy = orjson.loads(snapshot).get("privacy") or {}
        _live_states_stitch(client, states, require_consent=bool(privacy.get("require_consent")))


_HOLDOUT_MARKS = {"holdout_global": HOLDOUT_GLOBAL_MARK, "holdout_experience": HOLDOUT_EXPERIENCE_MARK}


def unit_assignments_publish(
    *, project_id: int, assignments: Iterable[tuple[str, str, str, str]], chunk: int = 2000
) -> int:
    """Set decide's sticky assignments from a loaded history: each (unit id, experience key, arm,
    variant key) as decide would have stored it, so a returning visitor keeps the variant the history
    shows and is not exposed twice. Held-out units get decide's holdout mark, not the control's key.
    Returns the number of unit hashes written."""
    by_unit: dict[str, dict[str, str]] = {}
    for unit, experience_key, arm, variant_key in assignments:
        by_unit.setdefault(unit, {})["a:" + experience_key] = _HOLDOUT_MARKS.get(arm, variant_key)
    pipe = redis_client.worker().pipeline(transaction=False)
    for unit, fields in by_unit.items():
        key = rkeys.unit(project_id, unit)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, UNIT_TTL_SECONDS)
        if len(pipe) >= chunk:
            pipe.execute()
    pipe.execute()
    return len(by_unit)


_STITCH_ATTEMPTS = 3


def _live_states_stitch(client, states: list[tuple[str, dict, dict]], *, require_consent: bool) -> None:
    """Merge each anonymous live state into its user's, written only over the state it was merged
    from; where an events request changed the user's state meanwhile, read it again and merge again."""
    fields = rkeys.UNIT_LIVE_FIELDS
    pending = [(key, anonymous, user) for key, anonymous, user in states if anonymous.get(fields[0])]
    for _ in range(_STITCH_ATTEMPTS):
        writes = []
        for key, anonymous, user in pending:
            before = live_session.live_state_parse(user)
            merged = live_session.live_state_merge(live_session.live_state_parse(anonymous), before)
            if merged is not None and merged != before:
                writes.append((key, anonymous, user, merged))
        if not writes:
            return
        pipe = client.pipeline(transaction=False)
        for key, _, user, merged in writes:
            written = [x for pair in live_session.live_state_fields(merged).items() for x in pair]
            # EVAL as a raw command: redis-py's Redis Cluster pipeline has no eval().
            pipe.execute_command(
                "EVAL", live_session.LIVE_STITCH_LUA, 1, key, int(require_consent), user.get(fields[0], ""), *written
            )
        raced = [write for write, reply in zip(writes, pipe.execute(), strict=True) if reply == -1]
        if not raced:
            return
        pipe = client.pipeline(transaction=False)
        for key, *_ in raced:
            pipe.hmget(key, fields)
        pending = [
            (key, anonymous, {name: v.decode() for name, v in zip(fields, now, strict=True) if v is not None})
            for (key, anonymous, _, _), now in zip(raced, pipe.execute(), strict=True)
        ]
