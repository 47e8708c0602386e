"""The migrate screen, the notice and list badge, and the experience form's segment picker, through
Django's test client."""

import re

import pytest

from personalization import services
from personalization.models import Experience, Role
from tests import factories

pytestmark = pytest.mark.django_db

VARIANTS = [{"key": "control", "is_control": True}, {"key": "b"}]


@pytest.fixture
def admin_client(client, project):
    client.force_login(factories.member_make(project=project, role=Role.ADMIN))
    return client


@pytest.fixture
def people(project):
    return factories.profiles_make(project=project, count=30)


@pytest.fixture
def old_run(project, people):
    return factories.clustering_run_make(project=project, members=[people[:10], people[10:]], names=["Trail", "Yoga"])


@pytest.fixture
def hero(project, old_run):
    experience = services.experience_create(
        project=project,
        key="hero",
        name="Hero",
        touchpoint="home",
        variants=VARIANTS,
        targeting={"segments": [f"b{old_run.pk}.0"]},
    )
    return services.experience_start(experience=experience)


@pytest.fixture
def new_run(project, people, hero):
    # Yoga new: 8–29 ; Trail new: 0–7
    return factories.clustering_run_make(
        project=project, members=[people[8:], people[:8]], names=["Yoga new", "Trail new"]
    )


def test_detail__newer_run__notice_with_migrate_action(admin_client, hero, old_run, new_run):
    page = admin_client.get("/experiences/hero/").content.decode()
    assert f"Targets segments of run #{old_run.pk}; run #{new_run.pk} is newer." in page
    assert f'href="/experiences/hero/migrate?run={new_run.pk}"' in page
    assert f"Migrate to run #{new_run.pk}" in page


def test_detail__no_newer_run__no_notice(admin_client, hero):
    page = admin_client.get("/experiences/hero/").content.decode()
    assert "is newer" not in page and 'id="migration-notice"' not in page


def test_list__newer_run__badge_links_to_migrate(admin_client, hero, old_run, new_run):
    page = admin_client.get("/experiences/").content.decode()
    assert "migration-badge" in page and f"run #{new_run.pk} is newer" in page


def test_list__analyst__badge_without_link(client, project, hero, new_run):
    client.force_login(factories.member_make(project=project, role=Role.ANALYST))
    page = client.get("/experiences/").content.decode()
    assert "migration-badge" in page and "/experiences/hero/migrate" not in page


def test_migrate_page__proposes_best_overlap_with_percent(admin_client, hero, old_run, new_run):
    response = admin_client.get(f"/experiences/hero/migrate?run={new_run.pk}")
    assert response.status_code == 200
    page = response.content.decode()
    # Trail (0–9) vs Trail new (0–7): 8 of 10 → 80 %; vs Yoga new (8–29): 2 of 30 → 7 %
    selected = re.search(rf'name="map-b{old_run.pk}.0".*?</select>', page, re.S).group(0)
    assert re.search(
        rf'<option value="b{new_run.pk}.1" selected>Trail new \(b{new_run.pk}.1\) — 80 % overlap', selected
    )
    assert f"Yoga new (b{new_run.pk}.0) — 7 % overlap" in selected
    assert "Drop: stop targeting it" in selected
    assert "80 %</strong> overlap" in page and "Confirm migration" in page


def test_migrate_page__get__changes_nothing(admin_client, hero, new_run):
    before = Experience.objects.filter(pk=hero.pk).values().get()
    admin_client.get(f"/experiences/hero/migrate?run={new_run.pk}")
    assert Experience.objects.filter(pk=hero.pk).values().get() == before


def test_migrate_page__confirm__rewrites_and_shows_new_targeting(admin_client, hero, old_run, new_run):
    data = {"run": new_run.pk, "version": hero.version, f"map-b{old_run.pk}.0": f"b{new_run.pk}.0"}
    response = admin_client.post("/experiences/hero/migrate", data)
    assert response.status_code == 302 and response["Location"] == "/experiences/hero/"
    hero_after = Experience.objects.get(pk=hero.pk)
    assert hero_after.targeting == {"segments": [f"b{new_run.pk}.0"]} and hero_after.version == hero.version + 1
    page = admin_client.get("/experiences/hero/").content.decode()
    assert f"Yoga new (b{new_run.pk}.0)" in page and "is newer" not in page
    assert f"migrated to clustering run #{new_run.pk}: b{old_run.pk}.0 → b{new_run.pk}.0" in page


def test_migrate_page__running_run__400_and_not_offered(admin_client, project, people, hero, old_run):
    running = factories.clustering_run_make(project=project, members=[people], status="running")
    response = admin_client.get(f"/experiences/hero/migrate?run={running.pk}")
    assert response.status_code == 400 and "not a finished clustering run" in response.content.decode()
    post = admin_client.post("/experiences/hero/migrate", {"run": running.pk, f"map-b{old_run.pk}.0": ""})
    assert post.status_code == 400
    assert Experience.objects.get(pk=hero.pk).targeting == {"segments": [f"b{old_run.pk}.0"]}
    page = admin_client.get("/experiences/hero/migrate").content.decode()
    assert f'<option value="{running.pk}"' not in page


def test_migrate_page__drop_every_segment__400_names_the_field(admin_client, hero, old_run, new_run):
    response = admin_client.post(
        "/experiences/hero/migrate", {"run": new_run.pk, "version": hero.version, f"map-b{old_run.pk}.0": ""}
    )
    assert response.status_code == 400
    assert "mapping: dropping every segment would show the experience to everyone" in response.content.decode()
    assert Experience.objects.get(pk=hero.pk).version == hero.version


def test_migrate_page__analyst__refused(client, project, hero, new_run):
    client.force_login(factories.member_make(project=project, role=Role.ANALYST))
    assert client.get("/experiences/hero/migrate").status_code == 403


# --- the segment picker ------------------------------------------------------------------------


def test_form__picker__groups_runs_newest_first_then_rules_with_name_key_size(admin_client, project, people, old_run):
    from segments import services as segments_services

    newer = factories.clustering_run_make(project=project, members=[people[:5], people[5:]], names=["A", "B"])
    segments_services.rule_segment_save(
        project=project,
        key="pro-plan",
        name="Pro plan",
        definition={"attributes": [{"attribute": "plan", "op": "eq", "value": "pro"}], "events": []},
    )
    page = admin_client.get("/experiences/new").content.decode()
    picker = page[
        page.index('id="segment-picker-field"') : page.index("</fieldset>", page.index("segment-picker-field"))
    ]
    order = [picker.index(f"Clustering run #{newer.pk} (newest)"), picker.index(f"Clustering run #{old_run.pk}"),
             picker.index("Rule segments")]  # fmt: skip
    assert order == sorted(order)
    assert re.search(
        rf'value="b{newer.pk}.1".*?B</span> <code>b{newer.pk}.1</code> <span class="muted">25 people', picker, re.S
    )
    assert picker.count('type="checkbox" name="targeting-segments"') == 5
    # older runs fold away (nothing of them ticked); the newest run and the rules stay open
    groups = re.findall(r'<details class="seg-group" ?(open)?>\s*<summary><strong>([^<]+)', picker)
    assert groups == [("open", f"Clustering run #{newer.pk} (newest)"), ("", f"Clustering run #{old_run.pk}"),
                      ("open", "Rule segments")]  # fmt: skip


def test_form__picker__no_segments__says_what_to_do(admin_client):
    page = admin_client.get("/experiences/new").content.decode()
    assert "No saved segments yet" in page and 'href="/segments/"' in page


def test_form__ticked_segments__saved_as_targeting(admin_client, project, old_run):
    data = factories.experience_form_data(**{"targeting-segments": [f"b{old_run.pk}.1", f"b{old_run.pk}.0"]})
    response = admin_client.post("/experiences/new", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    experience = Experience.objects.get(key="hero")
    assert experience.targeting["segments"] == [f"b{old_run.pk}.1", f"b{old_run.pk}.0"]
    page = admin_client.get("/experiences/hero/edit").content.decode()
    assert len(re.findall(r'name="targeting-segments" value="b\d+\.\d+" checked', page)) == 2


def test_form__unknown_segment_key__form_error_names_the_field_and_nothing_saved(admin_client, project, old_run):
    response = admin_client.post(
        "/experiences/new", factories.experience_form_data(**{"targeting-segments": ["ghosts", f"b{old_run.pk}.0"]})
    )
    page = response.content.decode()
    assert "Nothing was saved" in page and "<strong>Only in segments:</strong> no segment “ghosts”" in page
    assert 'id="err-segments"' in page and "pick saved segments" in page
    assert not Experience.objects.filter(key="hero").exists()


def test_form__edit_keeps_a_deleted_segment_until_unticked(admin_client, project, hero, old_run):
    from segments import services as segments_services

    gone = f"b{old_run.pk}.0"
    segments_services.clustering_run_delete(run=old_run)
    page = admin_client.get("/experiences/hero/edit").content.decode()
    assert "No longer saved" in page and f'value="{gone}" checked' in page
    # saving another change keeps it (only what the edit adds is checked) ...
    data = factories.experience_form_data(
        name="Hero 2", **{"targeting-segments": [gone], "cond-attribute": ["", ""], "cond-values": ["", ""]}
    )
    data.pop("key")
    response = admin_client.post("/experiences/hero/edit", data)
    assert response.status_code == 302, re.findall(r"<li>.*?</li>", response.content.decode())
    assert Experience.objects.get(pk=hero.pk).name == "Hero 2"
    assert Experience.objects.get(pk=hero.pk).targeting["segments"] == [gone]


def test_bandit_on_old_run__notice__and_migrate_moves_the_source(admin_client, project, people, old_run):
    experience = services.experience_create(
        project=project,
        key="recs",
        name="Recs",
        touchpoint="home",
        variants=VARIANTS,
        policy="segment_bandit",
        segment_attribute=f"run:{old_run.pk}",
    )
    new = factories.clustering_run_make(project=project, members=[people[:15], people[15:]])
    page = admin_client.get("/experiences/recs/").content.decode()
    assert f"Its per-segment bandit learns on run #{old_run.pk}; run #{new.pk} is newer." in page
    proposal = admin_client.get("/experiences/recs/migrate").content.decode()
    assert 'id="mapping-table"' not in proposal and 'name="move_bandit" checked' in proposal
    assert "starts from the experience's global posterior" in proposal
    response = admin_client.post(
        "/experiences/recs/migrate", {"run": new.pk, "version": experience.version, "move_bandit": "on"}
    )
    assert response.status_code == 302
    assert Experience.objects.get(pk=experience.pk).segment_attribute == f"run:{new.pk}"
    # unticking the bandit with nothing else to move changes nothing and says so
    again = admin_client.post("/experiences/recs/migrate", {"run": old_run.pk, "version": experience.version + 1})
    assert again.status_code == 400 and "nothing to migrate" in again.content.decode()
    assert Experience.objects.get(pk=experience.pk).segment_attribute == f"run:{new.pk}"


def test_segments_page__runs_table__names_the_experiences_each_run_serves(admin_client, hero, old_run, new_run):
    page = admin_client.get("/segments/").content.decode()
    rows = {int(n): row for n, row in re.findall(r'<tr><td><a href="\?run=(\d+)">.*?</td>(.*?)</tr>', page, re.S)}
    assert 'href="/experiences/hero/">Hero</a>' in rows[old_run.pk]
    assert "/experiences/hero/" not in rows[new_run.pk]
