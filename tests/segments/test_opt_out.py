"""Acceptance: profiles that are opted out or erased never appear in a segment, a map or a lookalike.

People opt out (do-not-personalize, as an objection or restriction sets it; or consent to
personalization withdrawn by a consent event) or are erased (a real erasure request) at every stage:
before the embedding, after a clustering run committed but before it was published to decide,
between a lookalike's preview and its save, and after a rule refresh. At the end none of them is in
any membership row, map sample, vector, lookalike, or decide's "segs" field.
"""

import pytest

from personalization import redis_client, rkeys
from personalization.models import Profile, ProfileIdentity
from personalization.people.subjects import profiles_consent_set, profiles_personalization_set
from privacy import services as privacy_services
from segments import selectors, services
from segments.models import MapPoint, MembershipPublish, ProfileEmbedding, ProfileMeaning, Segment, SegmentMembership
from tests.factories import privacy_request_make
from tests.segments.conftest import DEMO_END


class People:
    """The people taken out along the way, with every unit id they had (erasure deletes the ids).
    Each opt-out and erasure commits on its own, as it does in production (its on_commit work runs)."""

    def __init__(self, project, committed):
        self.project = project
        self.committed = committed
        self.units: dict[int, list[str]] = {}
        self.erased: set[int] = set()

    def remember(self, profile_ids):
        for pid, value in ProfileIdentity.objects.filter(profile_id__in=profile_ids).values_list("profile_id", "value"):
            self.units.setdefault(pid, []).append(value)

    def opt_out(self, profile_ids: list[int], *, how: str = "both") -> None:
        """Half do-not-personalize, half consent withdrawn (or all one way: how)."""
        assert profile_ids
        self.remember(profile_ids)
        half = {"both": len(profile_ids) // 2, "do_not_personalize": len(profile_ids), "consent": 0}[how]
        with self.committed(execute=True):
            profiles_personalization_set(
                project_id=self.project.pk, profile_ids=profile_ids[:half], do_not_personalize=True
            )
        with self.committed(execute=True):
            profiles_consent_set(
                project_id=self.project.pk, consents={pid: {"personalization": False} for pid in profile_ids[half:]}
            )

    def erase(self, profile_ids: list[int]) -> None:
        assert profile_ids
        self.remember(profile_ids)
        self.erased |= set(profile_ids)
        for pid in profile_ids:
            anon = ProfileIdentity.objects.filter(profile_id=pid, kind="anon").values_list("value", flat=True)[0]
            request = privacy_request_make(project=self.project, kind="erasure", anonymous_id=anon)
            with self.committed(execute=True):
                assert privacy_services.subject_erase(request=request)["complete"]

    def assert_nowhere(self) -> None:
        ids = list(self.units)
        assert ids
        assert not SegmentMembership.objects.filter(profile_id__in=ids).exists()
        assert not ProfileEmbedding.objects.filter(profile_id__in=ids).exists()
        assert not ProfileMeaning.objects.filter(profile_id__in=ids).exists()
        assert not MapPoint.objects.filter(profile_id__in=ids).exists()
        client = redis_client.worker()
        for pid, units in self.units.items():
            for unit in units:
                assert not client.hget(rkeys.unit(self.project.pk, unit), "segs"), f"profile {pid} ({unit})"


def _members(segment) -> set[int]:
    return set(SegmentMembership.objects.filter(segment=segment).values_list("profile_id", flat=True))


def _run_members(run) -> set[int]:
    return set(SegmentMembership.objects.filter(segment__run=run).values_list("profile_id", flat=True))


def _take(pool: list[int], n: int) -> list[int]:
    taken, pool[:] = pool[:n], pool[n:]
    return taken


@pytest.mark.slow
def test_opted_out_or_erased_at_every_stage__in_no_segment_map_lookalike_or_decide_hash(
    demo_flow, django_capture_on_commit_callbacks
):
    # Who is taken out, at each stage: the small demo has all the stages (a trail segment to seed a
    # lookalike from, people on and off the map) at a fraction of the refits' and runs' cost.
    project, committed = demo_flow, django_capture_on_commit_callbacks
    gone = People(project, committed)
    pool = list(Profile.objects.filter(project=project).order_by("pk").values_list("pk", flat=True))[::3]

    # 1. Before the embedding.
    gone.opt_out(_take(pool, 20))
    gone.erase(_take(pool, 3))
    with committed(execute=True):
        services.embeddings_refit(project_id=project.pk, now=DEMO_END)
    assert not ProfileEmbedding.objects.filter(profile_id__in=list(gone.units)).exists()
    assert not ProfileMeaning.objects.filter(profile_id__in=list(gone.units)).exists()
    assert ProfileMeaning.objects.filter(project=project).exists()  # the others have one

    # 2. A clustering run has committed; its publish to decide has not run yet. People who opted out
    # in that window (their opt-out found no rows to delete yet) are swept out by the publish.
    with committed(execute=False) as run_callbacks:
        run = services.clustering_run_execute(run_id=services.clustering_run_request(project=project, k=8).pk)
    run_members = _run_members(run)
    in_run = [pid for pid in pool if pid in run_members]
    on_map = set(MapPoint.objects.filter(run=run).values_list("profile_id", flat=True))
    window = [pid for pid in in_run if pid in on_map][:10] + [pid for pid in in_run if pid not in on_map][:10]
    gone.remember(window)
    Profile.objects.filter(pk__in=window[:10]).update(do_not_personalize=True)
    Profile.objects.filter(pk__in=window[10:]).update(consent={"personalization": False})
    pool = [pid for pid in pool if pid not in window]
    with committed(execute=True):
        for callback in run_callbacks:
            callback()
    assert not MembershipPublish.objects.exists()
    gone.assert_nowhere()
    assert len(selectors.run_map_points(run=run)) == MapPoint.objects.filter(run=run).count() > 0

    # After the run and its publish: opt-outs and erasures take people off it at once.
    run_members = _run_members(run)
    members = [pid for pid in pool if pid in run_members]
    gone.opt_out(members[:10])
    gone.erase(members[10:12])
    pool = [pid for pid in pool if pid not in members[:12]]
    gone.assert_nowhere()

    # 3. Between a lookalike's preview and its save. The seed list itself carries duplicates,
    # unknown ids, and ids of people opted out and erased.
    trail = next(s for s in Segment.objects.filter(run=run) if "trail" in s.name.lower())
    seed_ids = sorted(_members(trail))[:150]
    anon = dict(ProfileIdentity.objects.filter(profile_id__in=seed_ids, kind="anon").values_list("profile_id", "value"))
    gone_units = [u for units in gone.units.values() for u in units][:5]
    text = "\n".join([*(anon[p] for p in seed_ids), anon[seed_ids[0]], anon[seed_ids[1]], "nobody-1", *gone_units])
    seed = services.seed_from_ids(project_id=project.pk, text=text)
    assert set(seed.weights) <= set(seed_ids) | set(gone.units) and "nobody-1" in seed.missing
    preview = services.lookalike_preview(project_id=project.pk, seed=seed)
    with committed(execute=True):
        probe = services.lookalike_build(project=project, seed=seed, size=150, name="Probe")
    likely = [pid for pid in sorted(_members(probe)) if pid in pool]
    gone.opt_out(likely[:30])
    gone.erase(likely[30:32])
    point = next(p for p in preview["curve"] if p["share"] == 0.05)
    with committed(execute=True):
        saved = services.lookalike_build(project=project, seed=seed, size=point["size"], name="Trail lookalike")
    assert saved.size == len(_members(saved)) > 0
    assert not _members(saved) & set(seed.weights), "the seed is never in its own lookalike"
    gone.assert_nowhere()

    # 4. After a rule refresh.
    with committed(execute=True):
        rule = services.rule_segment_save(
            project=project,
            key="recent-viewers",
            name="Recent viewers",
            definition={"events": [{"type": "page_view", "op": ">=", "count": 1, "days": 30}]},
        )
    ruled = [pid for pid in sorted(_members(rule)) if pid in pool and pid not in gone.units]
    gone.opt_out(ruled[:10])
    gone.erase(ruled[10:12])
    gone.assert_nowhere()
    with committed(execute=True):
        assert services.rule_segment_refresh(segment=rule) == len(_members(rule)) > 0

    # And a fold-in or a new run later brings none of them back.
    with committed(execute=True):
        services.embeddings_fold_in(project_id=project.pk, profile_ids=list(gone.units), now=DEMO_END)
        again = services.clustering_run_execute(run_id=services.clustering_run_request(project=project, k=8).pk)
    assert again.profiles == SegmentMembership.objects.filter(segment__run=again).count() > 0
    gone.assert_nowhere()
    assert len(gone.units) >= 80
    assert Profile.objects.filter(pk__in=list(gone.units)).count() == len(gone.units) - len(gone.erased)


@pytest.mark.parametrize("how", ["do_not_personalize", "consent"])
def test_opt_out__rule_segment_member__taken_out_of_it_and_decide_at_once(
    demo_flow, django_capture_on_commit_callbacks, how
):
    people = People(demo_flow, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        rule = services.rule_segment_save(
            project=demo_flow, key="viewers", name="Viewers", definition={"events": [{"type": "page_view"}]}
        )
    member = min(_members(rule))
    people.remember([member])
    assert redis_client.worker().hget(rkeys.unit(demo_flow.pk, people.units[member][0]), "segs") == b"viewers"
    size = Segment.objects.get(pk=rule.pk).size
    people.opt_out([member], how=how)
    people.assert_nowhere()
    assert Segment.objects.get(pk=rule.pk).size == size - 1 == len(_members(rule))
