"""Migrating an experience to a newer clustering run: the overlap proposal, the confirm step (keys,
bandit source, version, audit, decide's snapshot), and that nothing changes without it."""

import random

import orjson
import pytest

from personalization import redis_client, rkeys, services
from personalization.decide import engine
from personalization.models import AuditEntry, Experience
from segments import selectors as segments_selectors
from segments import services as segments_services
from tests import factories

VARIANTS = [{"key": "control", "is_control": True}, {"key": "b"}]


def _experience(project, key="hero", **fields) -> Experience:
    experience = services.experience_create(
        project=project, key=key, name=key.title(), touchpoint="home", variants=VARIANTS, **fields
    )
    return services.experience_start(experience=experience)


@pytest.fixture
def people(project):
    return factories.profiles_make(project=project, count=40)


@pytest.fixture
def old_run(project, people):
    # three segments: 0–14, 15–29, 30–39
    return factories.clustering_run_make(
        project=project, members=[people[:15], people[15:30], people[30:]], names=["Trail", "Yoga", "Gifts"]
    )


@pytest.fixture
def new_run(project, people, old_run):
    # re-cut: "Yoga'" takes most of Yoga and a bit of Trail; "Trail'" most of Trail; "Gifts'" Gifts and the rest
    return factories.clustering_run_make(
        project=project,
        members=[people[18:30] + people[12:15], people[:12], people[30:] + people[15:18]],
        names=["Yoga new", "Trail new", "Gifts new"],
    )


def _snapshot_bytes(project) -> bytes:
    return orjson.dumps(services.snapshot_compile(project_id=project.pk), option=orjson.OPT_SORT_KEYS)


def test_overlap__known_memberships__jaccard_per_pair_and_best_first(project, people, old_run, new_run):
    old_keys = [f"b{old_run.pk}.0", f"b{old_run.pk}.1", f"b{old_run.pk}.2"]
    proposal = segments_selectors.segments_overlap(project_id=project.pk, old_keys=old_keys, run_id=new_run.pk)
    # Trail (0–14) vs Trail new (0–11): 12 shared, 15 in either
    trail = proposal[old_keys[0]]
    assert trail[0]["key"] == f"b{new_run.pk}.1"
    assert trail[0]["jaccard"] == pytest.approx(12 / 15) and trail[0]["share_of_old"] == pytest.approx(12 / 15)
    # Trail vs Yoga new (12–14, 18–29): 3 shared, 15 + 15 - 3 in either
    assert trail[1]["key"] == f"b{new_run.pk}.0" and trail[1]["jaccard"] == pytest.approx(3 / 27)
    assert trail[2]["jaccard"] == 0 and trail[2]["both"] == 0
    assert proposal[old_keys[1]][0]["key"] == f"b{new_run.pk}.0"  # Yoga → Yoga new
    assert proposal[old_keys[2]][0]["key"] == f"b{new_run.pk}.2"  # Gifts → Gifts new
    assert proposal[old_keys[2]][0]["jaccard"] == pytest.approx(10 / 13)


def test_overlap__random_memberships__matches_set_arithmetic(project):
    rng = random.Random(5)
    ids = factories.profiles_make(project=project, count=300)
    old_groups = [rng.sample(ids, rng.randrange(10, 120)) for _ in range(4)]
    new_groups = [rng.sample(ids, rng.randrange(10, 120)) for _ in range(5)]
    old = factories.clustering_run_make(project=project, members=old_groups)
    new = factories.clustering_run_make(project=project, members=new_groups)
    keys = [f"b{old.pk}.{i}" for i in range(4)]
    proposal = segments_selectors.segments_overlap(project_id=project.pk, old_keys=keys, run_id=new.pk)
    for i, key in enumerate(keys):
        a = set(old_groups[i])
        expected = sorted(
            ((len(a & set(g)) / len(a | set(g)), j) for j, g in enumerate(new_groups)), key=lambda t: (-t[0], t[1])
        )
        got = [(row["jaccard"], int(row["key"].rsplit(".", 1)[1])) for row in proposal[key]]
        assert [j for _, j in got] == [j for _, j in expected]
        assert [v for v, _ in got] == pytest.approx([v for v, _ in expected])


def test_new_run__alone__leaves_targeting_and_snapshot_byte_identical(project, people, old_run):
    experience = _experience(
        project, targeting={"segments": [f"b{old_run.pk}.0", f"b{old_run.pk}.2"]}, policy="segment_bandit",
        segment_attribute=f"run:{old_run.pk}",
    )  # fmt: skip
    before_row = Experience.objects.filter(pk=experience.pk).values().get()
    before_snapshot = _snapshot_bytes(project)
    new = factories.clustering_run_make(project=project, members=[people[:20], people[20:]])
    assert Experience.objects.filter(pk=experience.pk).values().get() == before_row
    assert _snapshot_bytes(project) == before_snapshot
    # ... and the experience now says a newer run exists
    due = services.experience_migration_due(experience=experience, latest_run_id=new.pk)
    assert due == {"runs": [old_run.pk], "target": new.pk}


def test_migrate__confirm__rewrites_keys_bumps_version_audits_and_publishes(
    project, old_run, new_run, django_capture_on_commit_callbacks
):
    user = factories.user_make()
    targeting = {
        "attributes": [{"attribute": "device", "op": "in", "values": ["mobile"]}],
        "segments": [f"b{old_run.pk}.0", f"b{old_run.pk}.1"],
    }
    experience = _experience(project, targeting=targeting)
    with django_capture_on_commit_callbacks(execute=True):
        services.snapshot_publish(project_id=project.pk)
    version = experience.version
    with django_capture_on_commit_callbacks(execute=True):
        services.experience_segments_migrate(
            experience=experience,
            run_id=new_run.pk,
            mapping={f"b{old_run.pk}.0": f"b{new_run.pk}.1", f"b{old_run.pk}.1": f"b{new_run.pk}.0"},
            expected_version=version,
            by=user,
        )
    experience.refresh_from_db()
    assert experience.targeting == {
        "attributes": targeting["attributes"],
        "segments": [f"b{new_run.pk}.1", f"b{new_run.pk}.0"],
    }
    assert experience.version == version + 1
    entry = AuditEntry.objects.filter(object_key="hero").order_by("-pk").first()
    assert entry.action == "migrate" and entry.actor_id == user.pk
    assert entry.changes["migration"]["mapping"] == {
        f"b{old_run.pk}.0": f"b{new_run.pk}.1",
        f"b{old_run.pk}.1": f"b{new_run.pk}.0",
    }
    published = orjson.loads(redis_client.worker().get(rkeys.snapshot(project.pk)))
    assert published["experiences"]["hero"]["targeting"]["segments"] == [f"b{new_run.pk}.1", f"b{new_run.pk}.0"]
    assert published["experiences"]["hero"]["version"] == version + 1
    assert services.experience_migration_due(experience=experience, latest_run_id=new_run.pk) is None


def test_migrate__drop_one_and_keep_other_kinds__only_behavior_keys_of_old_run_change(
    project, people, old_run, new_run
):
    segments_services.rule_segment_save(
        project=project,
        key="pro-plan",
        name="Pro",
        definition={"attributes": [{"attribute": "plan", "op": "eq", "value": "pro"}], "events": []},
    )
    experience = _experience(project, targeting={"segments": ["pro-plan", f"b{old_run.pk}.0", f"b{old_run.pk}.2"]})
    services.experience_segments_migrate(
        experience=experience,
        run_id=new_run.pk,
        mapping={f"b{old_run.pk}.0": "", f"b{old_run.pk}.2": f"b{new_run.pk}.2"},
    )
    experience.refresh_from_db()
    assert experience.targeting["segments"] == ["pro-plan", f"b{new_run.pk}.2"]


def test_migrate__segment_bandit_source__moves_run_and_engine_reads_new_keys(project, old_run, new_run):
    experience = _experience(project, policy="segment_bandit", segment_attribute=f"run:{old_run.pk}")
    services.experience_segments_migrate(experience=experience, run_id=new_run.pk, mapping={})
    experience.refresh_from_db()
    assert experience.segment_attribute == f"run:{new_run.pk}"
    compiled = services.snapshot_compile(project_id=project.pk)["experiences"]["hero"]
    assert compiled["segment_field"] == f"segs:b{new_run.pk}."
    # A unit still in both runs' segments is keyed on the new run's one (and not on a run whose id starts alike).
    user = {"segs": f"b{old_run.pk}.0 b{new_run.pk}1.4 b{new_run.pk}.1"}
    assert engine.unit_segment(compiled, user, {}) == f"b{new_run.pk}.1"


@pytest.mark.parametrize("status", ["running", "failed", "queued"])
def test_migrate__target_not_finished__refused_and_nothing_changes(project, people, old_run, status):
    experience = _experience(project, targeting={"segments": [f"b{old_run.pk}.0"]})
    pending = factories.clustering_run_make(project=project, members=[people], status=status)
    before = Experience.objects.filter(pk=experience.pk).values().get()
    with pytest.raises(services.ExperienceError) as err:
        services.experience_segments_migrate(experience=experience, run_id=pending.pk, mapping={})
    assert err.value.field == "run" and status in err.value.message
    assert Experience.objects.filter(pk=experience.pk).values().get() == before
    # ... nor is it offered: the notice names the newest finished run only
    latest = segments_selectors.run_latest_done(project_id=project.pk)
    assert latest.pk == old_run.pk


@pytest.mark.parametrize(
    ("mapping", "field", "words"),
    [
        ({"{old}.0": "", "{old}.1": ""}, "mapping", "everyone"),
        ({"{old}.0": "{new}.0"}, "mapping.{old}.1", "choose a segment"),
        ({"{old}.0": "{old}.2", "{old}.1": "{new}.0"}, "mapping.{old}.0", "not a segment of run"),
        ({"{old}.0": "{new}.0", "{old}.1": "{new}.0", "{old}.2": "{new}.0"}, "mapping", "not an old segment"),
    ],
)
def test_migrate__bad_mapping__names_the_field_and_changes_nothing(project, old_run, new_run, mapping, field, words):
    experience = _experience(project, targeting={"segments": [f"b{old_run.pk}.0", f"b{old_run.pk}.1"]})
    old, new = f"b{old_run.pk}", f"b{new_run.pk}"
    mapping = {k.format(old=old, new=new): v.format(old=old, new=new) for k, v in mapping.items()}
    before = Experience.objects.filter(pk=experience.pk).values().get()
    with pytest.raises(services.ExperienceError) as err:
        services.experience_segments_migrate(experience=experience, run_id=new_run.pk, mapping=mapping)
    assert err.value.field == field.format(old=old) and words in err.value.message
    assert Experience.objects.filter(pk=experience.pk).values().get() == before


def test_migrate__edited_since_the_proposal__refused(project, old_run, new_run):
    experience = _experience(project, targeting={"segments": [f"b{old_run.pk}.0"]})
    shown = experience.version
    services.experience_update(experience=experience, name="Renamed")
    with pytest.raises(services.ExperienceError) as err:
        services.experience_segments_migrate(
            experience=experience, run_id=new_run.pk, mapping={f"b{old_run.pk}.0": f"b{new_run.pk}.1"},
            expected_version=shown,
        )  # fmt: skip
    assert err.value.field == "version"
    experience.refresh_from_db()
    assert experience.targeting["segments"] == [f"b{old_run.pk}.0"]


def test_targeting__unknown_or_unfinished_segment__refused_naming_the_field(project, people, old_run):
    with pytest.raises(services.ExperienceError) as err:
        _experience(project, targeting={"segments": ["no-such-segment"]})
    assert err.value.field == "targeting.segments" and "no-such-segment" in err.value.message
    running = factories.clustering_run_make(project=project, members=[people], status="running")
    with pytest.raises(services.ExperienceError) as err:
        _experience(project, key="bandit", policy="segment_bandit", segment_attribute=f"run:{running.pk}")
    assert err.value.field == "segment_attribute" and "running" in err.value.message
    assert not Experience.objects.filter(project=project).exists()


def test_migrate__segment_bandit__new_segments_start_from_the_global_posterior(project, old_run, new_run):
    from django.utils import timezone

    from personalization.models import BanditWeights

    experience = _experience(project, policy="segment_bandit", segment_attribute=f"run:{old_run.pk}")
    now = timezone.now()
    BanditWeights.objects.bulk_create(
        [
            BanditWeights(experience=experience, segment="", computed_at=now, weights={"control": 0.3, "b": 0.7},
                          stats={"control": [500, 20], "b": [500, 45]}),
            BanditWeights(experience=experience, segment=f"b{old_run.pk}.0", computed_at=now,
                          weights={"control": 0.9, "b": 0.1}, stats={"control": [200, 30], "b": [200, 5]}),
        ]
    )  # fmt: skip
    user = {"segs": f"b{old_run.pk}.0 b{new_run.pk}.1"}
    before = services.snapshot_compile(project_id=project.pk)["experiences"]["hero"]
    assert engine.unit_segment(before, user, {}) == f"b{old_run.pk}.0"
    assert engine.decide_unit({"experiences": {"hero": before}, "holdout": {"salt": "s", "share": 0}}, "u1", user, {}
                              ).assignments["hero"]["reason"] == "segment_bandit"  # fmt: skip

    services.experience_segments_migrate(experience=experience, run_id=new_run.pk, mapping={})
    after = services.snapshot_compile(project_id=project.pk)["experiences"]["hero"]
    # the old segment's posterior is not carried to the new key: the unit is served the global weights
    assert engine.unit_segment(after, user, {}) == f"b{new_run.pk}.1"
    assert f"b{new_run.pk}.1" not in after["weights"] and after["weights"][""] == [0.3, 0.7]
    decision = engine.decide_unit(
        {"experiences": {"hero": after}, "holdout": {"salt": "s", "share": 0}}, "u1", user, {}
    )
    assert decision.assignments["hero"]["reason"] == "bandit"
    assert decision.exposures[0]["segment"] == f"b{new_run.pk}.1"  # the new segment starts collecting its own data
    assert BanditWeights.objects.filter(experience=experience, segment=f"b{old_run.pk}.0").exists()  # history kept


@pytest.mark.parametrize("source", ["run:99999999999999999999999", "run:0"])
def test_segment_source__run_id_out_of_range__refused_naming_the_field(project, source):
    with pytest.raises(services.ExperienceError) as err:
        _experience(project, policy="segment_bandit", segment_attribute=source)
    assert err.value.field == "segment_attribute" and "does not exist" in err.value.message


def test_migrate__keys_of_two_old_runs__both_mapped_to_the_target(project, people, old_run, new_run):
    third = factories.clustering_run_make(project=project, members=[people[:25], people[25:]])
    experience = _experience(project, targeting={"segments": [f"b{old_run.pk}.1", f"b{new_run.pk}.2"]})
    due = services.experience_migration_due(experience=experience, latest_run_id=third.pk)
    assert due == {"runs": [old_run.pk, new_run.pk], "target": third.pk}
    services.experience_segments_migrate(
        experience=experience,
        run_id=third.pk,
        mapping={f"b{old_run.pk}.1": f"b{third.pk}.0", f"b{new_run.pk}.2": f"b{third.pk}.1"},
    )
    experience.refresh_from_db()
    assert experience.targeting["segments"] == [f"b{third.pk}.0", f"b{third.pk}.1"]
    assert AuditEntry.objects.filter(action="migrate").get().changes["migration"]["from_runs"] == [
        old_run.pk,
        new_run.pk,
    ]


def test_bandit_update__after_migration__weights_only_for_the_new_runs_segments(project, people, old_run, new_run):
    from django.utils import timezone

    from personalization.models import Exposure

    experience = _experience(project, policy="segment_bandit", segment_attribute=f"run:{old_run.pk}")
    now = timezone.now()
    rows = [(people[i], f"b{old_run.pk}.0", "b", i % 3 == 0) for i in range(10)]
    rows += [(people[10 + i], f"b{new_run.pk}.1", "control", i % 4 == 0) for i in range(10)]
    Exposure.objects.bulk_create(
        Exposure(project=project, profile_id=p, experience_key="hero", variant_key=v, segment=s, exposed_at=now,
                 converted=c)
        for p, s, v, c in rows
    )  # fmt: skip
    assert set(services.bandit_update(experience_id=experience.pk)) == {"", f"b{old_run.pk}.0"}
    services.experience_segments_migrate(experience=experience, run_id=new_run.pk, mapping={})
    weights = services.bandit_update(experience_id=experience.pk)
    assert set(weights) == {"", f"b{new_run.pk}.1"}
    from personalization.models import BanditWeights

    latest_global = BanditWeights.objects.filter(experience=experience, segment="").order_by("-pk").first()
    assert latest_global.stats == {"control": [10, 3], "b": [10, 4]}  # every exposure still counts globally
