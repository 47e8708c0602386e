"""OpenFeature Remote Evaluation Protocol (OFREP v1) over decide: the request and answer shapes. No
Django, no I/O: the views hand the translated request to decide's runtime (the same call as
`POST /api/v1/decide`) and translate its answer back.

A Kairos experience is a flag whose key is the experience key. Its value is the variant's payload
when the variant has one (an object, or any JSON value: a payload of `true` makes a boolean flag),
and the variant key when its payload is empty (`{}` or null), so an experience without payloads
is a string flag. `variant` is always the variant key.

OpenFeature's reasons are coarser than Kairos's; the Kairos reason rides in the flag's metadata
(`kairosReason`):
    fixed_split, bandit, segment_bandit, sticky, holdout_global, holdout_experience -> SPLIT
        (a pseudorandom assignment from a hash of the unit; sticky keeps an earlier one)
    targeting_miss -> TARGETING_MATCH (a targeting rule chose the default)
    not_personalized -> DISABLED (personalization is off for this person)
    fallback -> UNKNOWN (a degraded answer: Redis away or no snapshot)
"""

import hashlib

import orjson

REASONS = {
    "fixed_split": "SPLIT",
    "bandit": "SPLIT",
    "segment_bandit": "SPLIT",
    "sticky": "SPLIT",
    "holdout_global": "SPLIT",
    "holdout_experience": "SPLIT",
    "targeting_miss": "TARGETING_MATCH",
    "not_personalized": "DISABLED",
    "fallback": "UNKNOWN",
}
EXAMPLE = '{"context": {"targetingKey": "user-123", "plan": "pro"}}'
_CONTEXT_HINT = f"send {EXAMPLE}"


class OfrepError(Exception):
    """An evaluation failure: its HTTP status, OpenFeature error code and details."""

    def __init__(self, status: int, code: str, details: str):
        super().__init__(f"{code}: {details}")
        self.status, self.code, self.details = status, code, details

    def body(self, key: str | None = None) -> dict:
        return {**({"key": key} if key is not None else {}), "errorCode": self.code, "errorDetails": self.details}


def decide_body(body, experiences: list[str] | None = None) -> dict:
    """The decide request for an OFREP request: the targeting key is the unit (recorded as
    user_id), every other context attribute is decide's context as it is (so `url`, `device`,
    `consent` and profile-attribute names mean what they mean to decide)."""
    if not isinstance(body, dict):
        raise OfrepError(400, "PARSE_ERROR", f"the body must be a JSON object; {_CONTEXT_HINT}")
    context = body.get("context")
    if not isinstance(context, dict):
        raise OfrepError(400, "INVALID_CONTEXT", f"context must be an object; {_CONTEXT_HINT}")
    unit = context.get("targetingKey")
    if unit is None or unit == "":
        raise OfrepError(400, "TARGETING_KEY_MISSING", f"context.targetingKey is missing; {_CONTEXT_HINT}")
    attributes = {name: value for name, value in context.items() if name != "targetingKey"}
    request = {"user_id": unit, "context": attributes}
    if experiences is not None:
        request["experiences"] = experiences
    return request


def input_error(field: str, message: str) -> OfrepError:
    """Decide's refusal of the translated request, in OFREP's terms."""
    if field == "user_id":
        return OfrepError(400, "INVALID_CONTEXT", f"context.targetingKey {message.replace('user_id', 'targetingKey')}")
    if field == "experiences":
        return OfrepError(400, "PARSE_ERROR", f"flag key {message}")
    return OfrepError(400, "INVALID_CONTEXT", f"{field} {message}")


def flag(key: str, assignment: dict) -> dict:
    """One evaluation: {key, value, reason, variant, metadata}; without a variant (no snapshot) no
    value, which tells the provider to use the code's default."""
    variant = assignment["variant"]
    metadata: dict = {"kairosReason": assignment["reason"]}
    if assignment.get("version") is not None:
        metadata["experienceVersion"] = assignment["version"]
    if variant is None:
        return {"key": key, "reason": REASONS["fallback"], "metadata": metadata}
    payload = assignment["payload"]
    return {
        "key": key,
        "value": variant if payload is None or payload == {} else payload,
        "reason": REASONS.get(assignment["reason"], "UNKNOWN"),
        "variant": variant,
        "metadata": metadata,
    }


def single(key: str, answer: dict) -> dict:
    """The answer for one flag from decide's answer; OfrepError(404) when it is no experience."""
    if key in answer["unknown_experiences"] or key not in answer["assignments"]:
        raise OfrepError(404, "FLAG_NOT_FOUND", f"no running experience has the key {key!r}")
    return flag(key, answer["assignments"][key])


def bulk(answer: dict) -> tuple[dict, str]:
    """The bulk answer and its ETag. The ETag is weak: it covers what a client acts on (values,
    variants, reasons, versions), not the Kairos reason, which turns from e.g. fixed_split to sticky
    on the second evaluation without changing any flag."""
    flags = [flag(key, assignment) for key, assignment in answer["assignments"].items()]
    body: dict = {"flags": flags}
    if answer["version"] is not None:
        body["metadata"] = {"version": str(answer["version"])}
    seen = [
        {k: v for k, v in f.items() if k != "metadata"} | {"v": f["metadata"].get("experienceVersion")} for f in flags
    ]
    digest = hashlib.sha256(orjson.dumps([answer["version"], seen], option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    return body, f'W/"{digest}"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match holds `*` or a list of tags, compared weakly (RFC 9110 §13.1.2)."""
    wanted = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False
