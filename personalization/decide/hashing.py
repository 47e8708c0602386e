"""Deterministic bucketing for the decide hot path.

Pure Python with no Django import: decide calls this once per request, so it must stay
cheap (about a microsecond) and be testable without a database.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

# 53 bits is a float's full mantissa: more bits would round 2**64 - 1 up to exactly 1.0.
_MANTISSA_BITS = 53
_SCALE = 2.0**-_MANTISSA_BITS


def unit_bucket(salt: str, unit: str) -> float:
    """Return a uniform float in [0, 1) fixed by (salt, unit).

    The same unit always lands in the same bucket for a salt, so a visitor sees a stable
    variant; a different salt (one per experiment) gives an unrelated bucket, so being in the
    top 10 % of one experiment says nothing about another. blake2b is a cryptographic hash,
    hence uniform and independent across salts, and it is the fastest one in hashlib.

    "a:b" + "c" and "a" + "b:c" hash alike; that only aliases *different* units across two
    salts, never the same unit, so it cannot correlate one unit's buckets.
    """
    digest = hashlib.blake2b(f"{salt}:{unit}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest) >> (64 - _MANTISSA_BITS)) * _SCALE


def pick_index(weights: Sequence[float], u: float) -> int:
    """Return the index whose cumulative-weight interval contains `u` (in [0, 1)).

    `u` is scaled by the weights' total, so weights that sum to 0.9999999 or 1.0000001 after
    rounding still pick in proportion. If rounding still carries `u` past the end, the last
    arm with positive weight wins: a zero-weight arm must never be served.
    """
    if not weights:
        raise ValueError("weights is empty: pass at least one arm weight.")
    target = u * sum(weights)
    cumulative = 0.0
    for index, weight in enumerate(weights):
        cumulative += weight
        if target < cumulative:
            return index
    for index in range(len(weights) - 1, -1, -1):
        if weights[index] > 0:
            return index
    raise ValueError("weights are all zero: at least one arm needs a positive weight.")


def subject_digest(key: bytes, project_id: int, identifier: str) -> str:
    """HMAC-SHA256 of one of a person's identifiers, keyed with the privacy secret (never stored in
    the database): what the suppression list and audit entries keep instead of the identifier."""
    return hmac.new(key, f"{project_id}:{identifier}".encode(), hashlib.sha256).hexdigest()
