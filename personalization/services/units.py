"""Segment memberships into the decide unit hash: the one way another app reaches what decide reads."""

from collections.abc import Mapping

from personalization import redis_client, rkeys
from personalization.models import ProfileIdentity
from personalization.services.experiences import UNIT_TTL_SECONDS


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
