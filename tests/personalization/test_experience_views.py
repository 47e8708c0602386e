"""Experiences pages through Django's test client: list, create/edit form, lifecycle, roles, detail charts."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from personalization import selectors, services
from personalization.models import (
    Arm,
    AuditEntry,
    BanditWeights,
    Experience,
    ExperienceStatus,
    Exposure,
    Profile,
    Role,
    Variant,
)
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(project):
    return factories.member_make(project=project, role=Role.ADMIN)


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


@pytest.fixture
def analyst_client(client, project):
    client.force_login(factories.member_make(project=project, role=Role.ANALYST))
    return client


def experience_make(project, key="hero", policy="fixed", start=False, **fields) -> Experience:
    experience = services.experience_create(
        project=project,
        key=key,
        name=key.title(),
        touchpoint="homepage hero",
        policy=policy,
        variants=[
            {"key": "control", "name": "Control", "payload": {"headline": "Welcome"}, "is_control": True},
            {"key": "b", "name": "Free shipping", "payload": {"headline": "Free shipping"}},
        ],
        **fields,
    )
    if start:
        experience = services.experience_start(experience=experience)
    return experience


def exposures_make(project, experience_key: str, arms: dict[tuple[str, str], tuple[int, int]], segment="") -> None:
    """(arm, variant key) → (people, converted), one new profile each, as the drain would store them."""
    now = timezone.now()
    for (arm, variant_key), (people, converted) in arms.items():
        for i in range(people):
            profile = Profile.objects.create(project=project, first_seen=now, last_seen=now)
            Exposure.objects.create(
                project=project,
                profile=profile,
                experience_key=experience_key,
                variant_key=variant_key,
                arm=arm,
                segment=segment,
                exposed_at=now - timedelta(hours=i % 5),
                converted=i < converted,
            )


# List


def test_list__no_experiences__explains_and_offers_to_create(admin_client):
    response = admin_client.get("/experiences/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "No experiences yet" in html
    assert "/experiences/new" in html


def test_list__experience_with_exposures__shows_counts_and_global_holdout(admin_client, project):
    experience_make(project, start=True, holdout_share=0.2)
    exposures_make(
        project,
        "hero",
        {
            (Arm.VARIANT, "control"): (3, 0),
            (Arm.VARIANT, "b"): (4, 1),
            (Arm.HOLDOUT_GLOBAL, "control"): (2, 0),
            (Arm.HOLDOUT_EXPERIENCE, "control"): (1, 0),
        },
    )
    response = admin_client.get("/experiences/")
    row = response.context["rows"][0]
    assert (row["users"], row["held_out"]) == (7, 3)
    assert row["experience"].variant_count == 2
    assert response.context["holdout"]["held_out"] == 2
    assert response.context["holdout"]["exposed"] == 10
    html = response.content.decode()
    assert "Running" in html and "20 %" in html
    assert 'id="holdout-users">2<' in html


# Create and edit


def test_new__valid_form__creates_experience_with_variants_and_targeting(admin_client, project, admin):
    response = admin_client.post("/experiences/new", factories.experience_form_data())
    assert response.status_code == 302
    assert response["Location"] == "/experiences/hero/"
    experience = Experience.objects.get(project=project, key="hero")
    assert experience.status == ExperienceStatus.DRAFT
    assert experience.holdout_share == 0.1
    assert experience.targeting == {"attributes": [{"attribute": "country", "op": "in", "values": ["DE", "AT"]}]}
    variants = list(experience.variants.values_list("key", "is_control", "weight", "payload"))
    assert variants == [("control", True, 1.0, {}), ("b", False, 3.0, {"headline": "Free shipping today"})]
    assert AuditEntry.objects.get(object_key="hero", action="create").actor == admin


def test_new__invalid_payload_json__error_names_the_variant_and_nothing_is_saved(admin_client, project):
    data = factories.experience_form_data(**{"variant-payload": ["{}", '{"headline": "Free shipping today",}', ""]})
    response = admin_client.post("/experiences/new", data)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Nothing was saved" in html
    assert "payload of variant “b” is not valid JSON" in html
    # What the user typed comes back, so they can fix it rather than retype it.
    assert "Free shipping today" in html
    assert not Experience.objects.filter(project=project).exists()
    assert not Variant.objects.exists()


def test_new__service_error__shown_next_to_the_named_field(admin_client, project):
    response = admin_client.post(
        "/experiences/new", factories.experience_form_data(policy="segment_bandit", segment_attribute="")
    )
    assert response.status_code == 200
    assert "segment_attribute" in response.context["errors"]
    assert 'id="err-segment_attribute"' in response.content.decode()
    assert not Experience.objects.filter(project=project).exists()


def test_new__two_controls__variants_error_and_nothing_saved(admin_client, project):
    data = factories.experience_form_data(**{"variant-control": "5"})  # no row is the control
    response = admin_client.post("/experiences/new", data)
    assert response.status_code == 200
    assert "exactly one variant as the control" in response.context["errors"]["variants"]
    assert not Experience.objects.filter(project=project).exists()


def test_new__key_not_a_slug__key_error(admin_client, project):
    response = admin_client.post("/experiences/new", factories.experience_form_data(key="home page hero"))
    assert response.status_code == 200
    assert "key" in response.context["errors"]
    assert not Experience.objects.filter(project=project).exists()


def test_new__key_taken__key_error(admin_client, project):
    experience_make(project, key="hero")
    response = admin_client.post("/experiences/new", factories.experience_form_data(key="hero"))
    assert response.status_code == 200
    assert "is taken" in response.context["errors"]["key"]


def test_new__condition_without_values__targeting_error(admin_client, project):
    data = factories.experience_form_data(**{"cond-attribute": ["country"], "cond-op": ["in"], "cond-values": [""]})
    response = admin_client.post("/experiences/new", data)
    assert response.status_code == 200
    assert "condition on “country”: list at least one value" in response.content.decode()
    assert not Experience.objects.filter(project=project).exists()


def test_edit__form_shows_current_values(admin_client, project):
    experience_make(project, targeting={"attributes": [{"attribute": "device", "op": "in", "values": ["mobile"]}]})
    response = admin_client.get("/experiences/hero/edit")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'value="device"' in html and 'value="mobile"' in html
    assert "&quot;headline&quot;: &quot;Free shipping&quot;" in html


def test_edit__changed_fields_and_variants__saved_new_version_and_audited(admin_client, project):
    experience = experience_make(project)
    data = factories.experience_form_data(
        name="Hero v2",
        policy="bandit",
        **{
            "variant-key": ["control", "b", "c"],
            "variant-name": ["Control", "Free shipping", "Ten percent off"],
            "variant-payload": ['{"headline": "Welcome"}', '{"headline": "Free shipping"}', '{"headline": "-10 %"}'],
            "variant-weight": ["1", "1", "1"],
        },
    )
    response = admin_client.post("/experiences/hero/edit", data)
    assert response.status_code == 302
    experience.refresh_from_db()
    assert (experience.name, experience.policy, experience.version) == ("Hero v2", "bandit", 2)
    assert list(experience.variants.values_list("key", flat=True)) == ["control", "b", "c"]
    entry = AuditEntry.objects.filter(object_key="hero", action="update").get()
    assert entry.changes["name"] == ["Hero", "Hero v2"]
    page = admin_client.get("/experiences/hero/").content.decode()
    assert "Name: Hero → Hero v2" in page
    assert "variants set to control (control), b, c" in page


def test_edit__nothing_changed__no_new_version(admin_client, project):
    experience_make(project)
    data = factories.experience_form_data(
        name="Hero",
        holdout_share="0",
        **{
            "cond-attribute": [],
            "cond-op": [],
            "cond-values": [],
            "variant-payload": ['{"headline": "Welcome"}', '{"headline": "Free shipping"}'],
            "variant-weight": ["1", "1"],
        },
    )
    response = admin_client.post("/experiences/hero/edit", data)
    assert response.status_code == 302
    assert Experience.objects.get(key="hero").version == 1
    assert not AuditEntry.objects.filter(action="update").exists()


def test_edit__invalid_payload__nothing_saved(admin_client, project):
    experience_make(project)
    data = factories.experience_form_data(**{"variant-payload": ["{oops", "{}"]})
    response = admin_client.post("/experiences/hero/edit", data)
    assert response.status_code == 200
    assert "payload of variant “control” is not valid JSON" in response.content.decode()
    experience = Experience.objects.get(key="hero")
    assert experience.version == 1
    assert experience.variants.get(key="control").payload == {"headline": "Welcome"}


# Lifecycle


def test_transition__start_then_pause__status_and_audit(admin_client, project, admin):
    experience_make(project)
    response = admin_client.post("/experiences/hero/start")
    assert response.status_code == 302 and response["Location"] == "/experiences/hero/"
    assert Experience.objects.get(key="hero").status == ExperienceStatus.RUNNING
    response = admin_client.post("/experiences/hero/pause", {"next": "/experiences/"})
    assert response["Location"] == "/experiences/"
    experience = Experience.objects.get(key="hero")
    assert experience.status == ExperienceStatus.PAUSED
    assert experience.started_at is not None
    actions = list(AuditEntry.objects.filter(object_key="hero").order_by("at").values_list("action", "actor"))
    assert actions == [("create", None), ("start", admin.pk), ("pause", admin.pk)]


def test_transition__htmx__returns_the_row_with_the_new_status(admin_client, project):
    experience_make(project)
    response = admin_client.post("/experiences/hero/start", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.strip().startswith('<tr id="experience-hero">')
    assert "status-running" in html and ">Pause<" in html and ">Start<" not in html


def test_transition__not_allowed__error_shown_nothing_changes(admin_client, project):
    experience_make(project)
    response = admin_client.post("/experiences/hero/pause", HTTP_HX_REQUEST="true")
    assert "cannot pause an experience that is draft" in response.content.decode()
    assert Experience.objects.get(key="hero").status == ExperienceStatus.DRAFT


def test_transition__unknown_action__404(admin_client, project):
    experience_make(project)
    assert admin_client.post("/experiences/hero/explode").status_code == 404


# Roles and projects


def test_analyst__reads_but_every_write_is_forbidden(analyst_client, project):
    experience_make(project)
    listing = analyst_client.get("/experiences/")
    assert listing.status_code == 200
    html = listing.content.decode()
    assert "New experience" not in html and ">Start<" not in html and "Save holdout" not in html
    assert analyst_client.get("/experiences/hero/").status_code == 200
    assert analyst_client.post("/experiences/new", factories.experience_form_data(key="other")).status_code == 403
    assert (
        analyst_client.post("/experiences/hero/edit", factories.experience_form_data(name="Hacked")).status_code == 403
    )
    assert analyst_client.post("/experiences/hero/start").status_code == 403
    assert analyst_client.post("/experiences/holdout", {"global_holdout_share": "0.2"}).status_code == 403
    assert analyst_client.get("/experiences/new").status_code == 403
    experience = Experience.objects.get(key="hero")
    assert (experience.name, experience.status) == ("Hero", ExperienceStatus.DRAFT)
    assert not Experience.objects.filter(key="other").exists()
    project.refresh_from_db()
    assert project.global_holdout_share == 0.05


def test_compliance_role__cannot_open_experiences(client, project):
    user = factories.user_make()
    services.membership_set(project=project, user=user, role=Role.COMPLIANCE)
    client.force_login(user)
    assert client.get("/experiences/").status_code == 403


def test_other_projects_experience__404(admin_client, other_project):
    experience_make(other_project, key="theirs")
    assert admin_client.get("/experiences/theirs/").status_code == 404
    assert admin_client.get("/experiences/theirs/edit").status_code == 404
    assert admin_client.get("/experiences/theirs/live").status_code == 404
    assert admin_client.post("/experiences/theirs/start").status_code == 404
    assert Experience.objects.get(key="theirs").status == ExperienceStatus.DRAFT


def test_logged_out__redirected_to_login(client):
    response = client.get("/experiences/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# Global holdout


def test_global_holdout__set__saved_and_audited(admin_client, project):
    response = admin_client.post("/experiences/holdout", {"global_holdout_share": "0.1"})
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.global_holdout_share == 0.1
    assert AuditEntry.objects.filter(object_type="global_holdout").exists()


@pytest.mark.parametrize("raw", ["0.7", "lots", "nan"])
def test_global_holdout__invalid__error_next_to_field(admin_client, project, raw):
    response = admin_client.post("/experiences/holdout", {"global_holdout_share": raw})
    assert response.status_code == 200
    assert 'id="holdout-error"' in response.content.decode()
    project.refresh_from_db()
    assert project.global_holdout_share == 0.05


# Detail and charts


def figures(response) -> dict:
    return json.loads(response.context["live"]["figures_json"])


def test_detail__no_exposures__empty_state_and_history(admin_client, project):
    experience_make(project, start=True)
    response = admin_client.get("/experiences/hero/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "No exposures yet: call decide from your site" in html
    assert '"experiences": ["hero"]' in html
    assert set(figures(response)) == {"chart-allocation"}  # the configured split needs no data
    assert "start" in [item["entry"].action for item in response.context["audit"]]


def test_detail__fixed_with_exposures__split_rate_posterior_and_counts(admin_client, project):
    experience_make(project, start=True)
    exposures_make(
        project,
        "hero",
        {
            (Arm.VARIANT, "control"): (20, 2),
            (Arm.VARIANT, "b"): (20, 6),
            (Arm.HOLDOUT_GLOBAL, "control"): (3, 0),
        },
    )
    response = admin_client.get("/experiences/hero/")
    figs = figures(response)
    assert set(figs) == {"chart-allocation", "chart-rate", "chart-posterior", "chart-arms"}
    assert figs["chart-allocation"]["data"][0]["x"] == [0.5, 0.5]
    rate_b = next(t for t in figs["chart-rate"]["data"] if t["name"] == "b")
    assert rate_b["y"][-1] == pytest.approx(0.3)
    posterior_names = [t["name"] for t in figs["chart-posterior"]["data"]]
    assert posterior_names == ["control", "b"]
    assert figs["chart-arms"]["data"][0]["x"] == [20, 20, 3, 0]
    live = response.context["live"]
    assert (live["in_variants"], live["converted"], live["held_global"]) == (40, 8, 3)
    assert live["table"][1]["rate_percent"] == pytest.approx(30.0)


def test_detail__bandit_with_updates__weights_history_and_latest_stats(admin_client, project):
    experience = experience_make(project, policy="bandit", start=True, bandit_burn_in=0)
    exposures_make(project, "hero", {(Arm.VARIANT, "control"): (30, 1), (Arm.VARIANT, "b"): (30, 12)})
    services.bandit_update(experience_id=experience.pk)
    services.bandit_update(experience_id=experience.pk)
    response = admin_client.get("/experiences/hero/")
    figs = figures(response)
    weights = {t["name"]: t["y"] for t in figs["chart-allocation"]["data"]}
    assert len(weights["b"]) == 2 and weights["b"][-1] > 0.9
    assert figs["chart-rate"]["data"][1]["y"][-1] == pytest.approx(0.4)
    assert response.context["live"]["has_history"] is True


def test_detail__segment_bandit__segment_selects_its_weights(admin_client, project):
    experience = experience_make(
        project, policy="segment_bandit", segment_attribute="device", start=True, bandit_burn_in=0
    )
    exposures_make(project, "hero", {(Arm.VARIANT, "control"): (10, 5), (Arm.VARIANT, "b"): (10, 0)}, segment="mobile")
    services.bandit_update(experience_id=experience.pk)
    response = admin_client.get("/experiences/hero/?segment=mobile")
    assert response.context["live"]["segments"] == ["", "mobile"]
    assert response.context["live"]["segment"] == "mobile"
    assert '<option value="mobile" selected>' in response.content.decode()
    unknown = admin_client.get("/experiences/hero/?segment=tablet")
    assert unknown.context["live"]["segment"] == ""


def test_live__htmx_poll__returns_only_the_partial(admin_client, project):
    experience_make(project, start=True)
    exposures_make(project, "hero", {(Arm.VARIANT, "b"): (2, 1)})
    response = admin_client.get("/experiences/hero/live", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html
    assert 'id="chart-rate"' in html and "hx-preserve" in html
    assert 'id="live-in-variants">2<' in html


def test_detail__variant_key_with_markup__escaped_in_page_and_figures(admin_client, project):
    # The services do not restrict variant keys, and they end up inside the figures' <script>.
    services.experience_create(
        project=project,
        key="xss",
        name="XSS",
        touchpoint="t",
        variants=[
            {"key": "control", "is_control": True},
            {"key": "</script><script>alert(1)</script>", "name": "<b>bold</b>"},
        ],
    )
    response = admin_client.get("/experiences/xss/")
    html = response.content.decode()
    assert "<script>alert(1)" not in html and "<b>bold</b>" not in html
    assert figures(response)["chart-allocation"]["data"][0]["y"][1] == "</script><script>alert(1)</script>"


def test_weight_history__many_updates__thinned_and_keeps_the_latest(project):
    experience = experience_make(project, policy="bandit", start=True)
    start = timezone.now() - timedelta(hours=10)
    BanditWeights.objects.bulk_create(
        BanditWeights(
            experience=experience,
            computed_at=start + timedelta(seconds=5 * i),
            weights={"control": 0.5, "b": 0.5},
            stats={"control": [i, 0], "b": [i, 0]},
        )
        for i in range(2000)
    )
    history = selectors.experience_weight_history(experience=experience, max_points=100)
    assert 50 <= len(history) <= 101
    assert history[-1].stats["b"] == [1999, 0]
    assert [h.computed_at for h in history] == sorted(h.computed_at for h in history)


def test_detail__bandit_before_first_update__rates_from_exposures_and_explains_weights(admin_client, project):
    experience_make(project, policy="bandit", start=True)
    empty = admin_client.get("/experiences/hero/")
    assert figures(empty) == {}
    assert "No bandit update yet" not in empty.content.decode()  # the no-exposures state says it all
    exposures_make(project, "hero", {(Arm.VARIANT, "control"): (4, 1), (Arm.VARIANT, "b"): (4, 2)})
    response = admin_client.get("/experiences/hero/")
    assert set(figures(response)) == {"chart-rate", "chart-posterior", "chart-arms"}
    assert "No bandit update yet" in response.content.decode()
    assert [row["weight_percent"] for row in response.context["live"]["table"]] == [50.0, 50.0]


def test_experience_new__assigned_outside__registered_external_never_served(admin_client, project):
    response = admin_client.post(
        "/experiences/new", {**factories.experience_form_data(key="spring-email"), "external": "1"}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    experience = Experience.objects.get(project=project, key="spring-email")
    assert experience.status == "external"
    detail = admin_client.get("/experiences/spring-email/").content.decode()
    assert "External (analysis only)" in detail and 'aria-label="Start' not in detail
    assert "spring-email" not in services.snapshot_compile(project_id=project.pk)["experiences"]
    assert admin_client.post("/experiences/spring-email/start").status_code in (302, 400)
    experience.refresh_from_db()
    assert experience.status == "external"  # it cannot be started: decide never serves it
