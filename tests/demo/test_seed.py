"""demo.seed and the demo_seed command: the demo written through personalization's services."""

import json
import os
import stat
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection

from demo import seed as demo_services
from demo import world as demo
from personalization import redis_client, rkeys, services
from personalization.decide import engine
from personalization.models import Event, Experience, Exposure, Membership, Profile, ProfileIdentity
from personalization.workspace import auth
from segments.models import ClusteringRun


@pytest.mark.django_db
def test_demo_seed__small_demo__everything_in_place(tmp_path, django_capture_on_commit_callbacks):
    keys_file = tmp_path / "keys.json"
    with django_capture_on_commit_callbacks(execute=True):
        project = demo_services.demo_seed(profiles=500, days=2, seed=7, keys_path=keys_file)

    profiles = Profile.objects.filter(project=project)
    assert profiles.count() == 500
    planted = list(profiles.values_list(f"attributes__{demo.PLANTED_ATTRIBUTE}", flat=True))
    assert planted and set(planted) <= set(demo.INTENTS)  # every profile has one, and only planted ones
    with_user = profiles.exclude(external_id=None).count()
    assert 0.2 < with_user / 500 < 0.47
    assert ProfileIdentity.objects.filter(project=project).count() == 500 + with_user
    assert ProfileIdentity.objects.filter(project=project, kind="anon", value="d0").exists()
    events = Event.objects.filter(project=project)
    assert events.values("profile_id").distinct().count() == 500
    assert events.count() > 500 * 4
    assert not profiles.filter(first_seen__gt=datetime.now(UTC)).exists()

    keys = json.loads(keys_file.read_text())
    assert stat.S_IMODE(os.stat(keys_file).st_mode) == 0o600
    assert auth.api_key_lookup(keys["public_key"]).kind == "public"
    assert auth.api_key_lookup(keys["secret_key"]).kind == "secret"
    assert (keys["profiles"], keys["seed"]) == (500, 7)
    roles = dict(Membership.objects.filter(project=project).values_list("user__username", "role"))
    assert roles == {"demo": "admin", "marketer": "marketer", "analyst": "analyst",
                     "compliance": "compliance", "developer": "developer"}  # fmt: skip
    assert get_user_model().objects.get(username="compliance").check_password("kairos-demo")

    experiences = Experience.objects.filter(project=project)
    assert {e.status for e in experiences} == {"running"}
    assert {e.policy for e in experiences} == {"fixed", "bandit", "segment_bandit"}
    assert all(e.started_at < datetime.now(UTC) - timedelta(days=1) for e in experiences)

    # Exposures: one per profile and experience seen, split by the same hashing as decide.
    exposures = Exposure.objects.filter(project=project)
    staged = {spec.key for spec in demo.EXPERIENCES if spec.stages}
    untargeted = len(demo.EXPERIENCES) - len(staged)
    # 2 days: every visit is after every start; a stage-targeted experience only where a visit reached its stages.
    assert exposures.exclude(experience_key__in=staged).count() == 500 * untargeted
    for key in staged:
        stages = {row.live["stage"] for row in exposures.filter(experience_key=key)}
        assert stages and stages <= set(demo.EXPERIENCE_BY_KEY[key].stages)
    assert not exposures.filter(live__isnull=True).exists(), "every exposure keeps the live state at exposure"
    snapshot = services.snapshot_compile(project_id=project.pk)
    anon = dict(ProfileIdentity.objects.filter(project=project, kind="anon").values_list("profile_id", "value"))
    for row in exposures:
        decision = engine.decide_unit(
            snapshot, anon[row.profile_id], {}, {}, [row.experience_key], live=lambda row=row: row.live
        )
        expected = decision.exposures[0]
        assert (row.arm, row.variant_key) == (expected["arm"], expected["variant"])
    held_out = exposures.filter(experience_key="homepage-hero", arm="holdout_global").count()
    assert held_out / 500 == pytest.approx(project.global_holdout_share, abs=0.05)
    arms_per_profile = Counter(exposures.filter(arm="holdout_global").values_list("profile_id", flat=True))
    assert {untargeted} <= set(arms_per_profile.values()) <= {untargeted, len(demo.EXPERIENCES)}, (
        "the global holdout spans every experience"
    )
    segments = set(exposures.filter(experience_key="homepage-hero", arm="variant").values_list("segment", flat=True))
    assert segments <= set(demo.INTENTS) and len(segments) > 4

    # Outcomes as the drain computes them: purchases within the attribution window after exposure.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM personalization_exposure x WHERE x.project_id = %s AND x.conversions <> ("
            " SELECT count(*) FROM personalization_event e WHERE e.profile_id = x.profile_id AND e.type = x.goal"
            " AND e.ts >= x.exposed_at AND e.ts < x.exposed_at + x.window_hours * interval '1 hour')",
            [project.pk],
        )
        assert cursor.fetchone()[0] == 0
    assert exposures.filter(converted=True).exists()

    # Redis: attributes for decide, and the history's arms as sticky assignments.
    unit = redis_client.worker().hgetall(rkeys.unit(project.pk, "d0"))
    fields = {k.decode(): v.decode() for k, v in unit.items()}
    assert fields["attr:intent"] in demo.INTENTS
    assert {f"a:{spec.key}" for spec in demo.EXPERIENCES if not spec.stages} <= set(fields)

    # make run calls --if-empty on every start: nothing happens when the demo exists.
    call_command("demo_seed", "--if-empty", "--keys-file", str(keys_file))
    assert Profile.objects.filter(project=project).count() == 500
    assert json.loads(keys_file.read_text())["public_key"] == keys["public_key"]
    with pytest.raises(CommandError, match="--reset"):
        call_command("demo_seed", "--keys-file", str(keys_file))
    stream = redis_client.worker()
    stream.xadd(rkeys.EVENTS_STREAM, {"p": project.pk, "d": b"[]", "r": "x"})
    other = stream.xadd(rkeys.EVENTS_STREAM, {"p": project.pk + 1000, "d": b"[]", "r": "x"})
    with django_capture_on_commit_callbacks(execute=True):
        call_command("demo_seed", "--reset", "--profiles", "50", "--days", "1", "--keys-file", str(keys_file))
    assert [entry_id for entry_id, _ in stream.xrange(rkeys.EVENTS_STREAM)] == [other], "the old demo's batches go"
    assert Profile.objects.filter(project__slug="demo-shop").count() == 50
    assert ClusteringRun.objects.filter(project__slug="demo-shop", status="queued").count() == 1, "first segments"
    assert not Profile.objects.filter(project_id=project.pk).exists()
    auth.cache_clear()
    assert auth.api_key_lookup(keys["public_key"]) is None


@pytest.mark.django_db
def test_demo_seed__long_term_with_a_short_history__refused_naming_the_days(tmp_path):
    with pytest.raises(ValueError, match=f"days: the long-term story needs at least {demo.LONG_TERM_MIN_DAYS} days"):
        demo_services.demo_seed(profiles=10, days=14, long_term=True, keys_path=tmp_path / "keys.json")
    with pytest.raises(CommandError, match=f"--days must be between {demo.LONG_TERM_MIN_DAYS} and 120"):
        call_command("demo_seed", "--long-term", "--days", "30", "--keys-file", str(tmp_path / "keys.json"))
    assert demo_services.demo_project_get() is None, "nothing written"
