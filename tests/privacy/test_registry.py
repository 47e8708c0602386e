from django.apps import apps

from personalization import rkeys
from personalization.models import Profile
from privacy.registry import personal_data_locations


def test_registry__every_model_pointing_at_a_profile__is_listed():
    tables, _ = personal_data_locations()
    listed = {location.model for location in tables}
    pointing = {
        model._meta.label
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if getattr(field, "related_model", None) is Profile and field.many_to_one
    }
    assert pointing, "the check must see at least the known tables"
    assert pointing <= listed, f"add these to privacy.registry.TABLES: {sorted(pointing - listed)}"


def test_registry__redis_personal_keys__match_the_key_builders():
    _, redis_keys = personal_data_locations()
    built = set(rkeys.personal_key_patterns(7, "u-1"))
    registered = {location.pattern.format(project_id=7, unit_id="u-1") for location in redis_keys}
    assert built == registered


def test_registry__dead_letters__listed_with_the_ids_that_find_them():
    tables, _ = personal_data_locations()
    (location,) = [t for t in tables if t.model == "personalization.DeadLetter"]
    from personalization.models import DeadLetter

    fields = {f.name for f in DeadLetter._meta.get_fields()}
    assert location.id_fields and set(location.id_fields) <= fields
