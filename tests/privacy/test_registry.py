"""The registry is complete: every model pointing at a person and every PERSONAL Redis key has a location."""

import ast
import inspect

from django.apps import apps

from personalization import rkeys
from personalization.models import Profile
from privacy import registry

# Columns that hold a person's raw identifier without a foreign key.
PERSON_ID_COLUMNS = {"user_id", "anonymous_id", "unit_id", "external_id", "profile_id", "profile_ids"}


def _refers_to_a_person(field) -> bool:
    if getattr(field, "related_model", None) is Profile:
        return field.many_to_one or field.one_to_one
    return getattr(field, "column", None) in PERSON_ID_COLUMNS and not field.is_relation


def test_registry__every_model_pointing_at_a_person__is_listed():
    pointing = {
        model._meta.label
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if _refers_to_a_person(field)
    }
    assert {"personalization.Event", "personalization.Exposure"} <= pointing, "the check must see the known tables"
    missing = pointing - registry.personal_models()
    assert not missing, f"declare these in privacy/registry.py with table(...): {sorted(missing)}"


def _personal_rkeys() -> set[str]:
    """Builders whose docstring starts with PERSONAL, and constants whose comment does."""
    source = inspect.getsource(rkeys)
    lines = source.splitlines()
    found = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and (ast.get_docstring(node) or "").startswith("PERSONAL"):
            found.add(node.name)
        elif isinstance(node, ast.Assign) and "# PERSONAL" in lines[node.lineno - 1]:
            found.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return found


def test_registry__every_personal_redis_key__is_listed():
    personal = _personal_rkeys()
    assert {"unit", "EVENTS_STREAM"} <= personal, "the check must see the known keys"
    missing = personal - registry.personal_redis_keys()
    assert not missing, f"declare these Redis keys in privacy/registry.py: {sorted(missing)}"


def test_registry__every_location_names_purpose_retention_and_handlers():
    for location in registry.locations():
        assert location.category and location.purpose and location.retention and location.mechanism
        assert callable(location.export) and callable(location.erase) and callable(location.verify)
        assert location.store in {"PostgreSQL", "Redis", "files"}


def test_registry__every_redis_key_builder__says_whether_it_is_personal():
    """A new builder without a docstring could hide a personal key from the guard above."""
    undocumented = [
        name
        for name, fn in inspect.getmembers(rkeys, inspect.isfunction)
        if fn.__module__ == rkeys.__name__ and not fn.__doc__
    ]
    assert undocumented == []


def test_registry__dead_letters__found_by_the_ids_they_hold():
    from personalization.models import DeadLetter

    location = registry.location("dead_letters")
    assert location.model == "personalization.DeadLetter"
    fields = {f.name for f in DeadLetter._meta.get_fields()}
    assert {"user_id", "anonymous_id"} <= fields and "user_id" in location.columns


def test_registry__publish_outbox__erasure_takes_the_person_out_and_keeps_the_position(project):
    from django.utils import timezone

    from segments.models import MembershipPublish

    row = MembershipPublish.objects.create(
        project=project, profile_ids=[1, 7, 2, 7, 3], done=3, heartbeat_at=timezone.now()
    )
    subject = registry.Subject(project_id=project.pk, profile_ids=(7,), unit_ids=())
    location = registry.location("segment_publish_outbox")
    assert location.verify(subject) == 1 and len(list(location.export(subject))) == 1
    assert location.erase(subject, lambda n: None) == 1
    row.refresh_from_db()
    assert row.profile_ids == [1, 2, 3] and row.done == 2 and location.verify(subject) == 0


def test_registry__lookalike_build_in_flight__seed_exported_erased_and_merged(project):
    from segments.models import LookalikeBuild

    build = LookalikeBuild.objects.create(
        project=project, name="Like the buyers", size=100, seed_weights={"7": 1.0, "8": 0.5, "9": 0.25}
    )
    done = LookalikeBuild.objects.create(project=project, name="Done", size=100, seed_weights={})
    subject = registry.Subject(project_id=project.pk, profile_ids=(7,), unit_ids=())
    location = registry.location("lookalike_build_seeds")
    assert location.verify(subject) == 1
    assert [row["lookalike"] for row in location.export(subject)] == ["Like the buyers"]
    assert location.erase(subject, lambda n: None) == 1
    build.refresh_from_db()
    assert build.seed_weights == {"8": 0.5, "9": 0.25} and location.verify(subject) == 0

    location.merge(8, 9)  # the merged person stays in the seed once, under the profile that remains
    build.refresh_from_db()
    done.refresh_from_db()
    assert build.seed_weights == {"9": 0.5} and done.seed_weights == {}
