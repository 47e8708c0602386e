"""Migrating an experience to a newer clustering run in a real browser: a second run appears, the
list and the experience page say so, the migrate screen proposes matches by overlap, and after the
confirm the experience targets the new run's segments. Also the segment picker of the form."""

import re

import pytest
from playwright.sync_api import Page, expect

from personalization import services
from personalization.models import Experience, Role
from tests import factories

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_migrate__second_run__notice__proposal__confirm__new_targeting(page: Page, browser_log, log_in, screenshot):
    project = factories.project_make(name="Trail shop")
    admin = factories.member_make(project=project, role=Role.ADMIN)
    people = factories.profiles_make(project=project, count=60)
    old = factories.clustering_run_make(
        project=project,
        members=[people[:20], people[20:40], people[40:]],
        names=["Trail runners", "Yoga", "Gift buyers"],
    )
    experience = services.experience_create(
        project=project,
        key="hero",
        name="Homepage hero",
        touchpoint="homepage",
        variants=[{"key": "control", "is_control": True}, {"key": "trail", "payload": {"headline": "Trail season"}}],
        targeting={"segments": [f"b{old.pk}.0", f"b{old.pk}.2"]},
    )
    services.experience_start(experience=experience)
    log_in(admin.username)

    page.goto("/experiences/hero/")
    expect(page.locator("#migration-notice")).to_have_count(0)

    # A second run: the trail runners are re-cut (16 of 20 stay together), gift buyers stay whole.
    new = factories.clustering_run_make(
        project=project,
        members=[people[16:40], people[:16], people[40:]],
        names=["Yoga and more", "Trail runners (new)", "Gift buyers (new)"],
    )
    page.goto("/experiences/")
    badge = page.locator("#experience-hero .migration-badge")
    expect(badge).to_contain_text(f"run #{new.pk} is newer")
    screenshot("migration-list-badge")

    page.goto("/experiences/hero/")
    notice = page.locator("#migration-notice")
    expect(notice).to_contain_text(f"Targets segments of run #{old.pk}; run #{new.pk} is newer.")
    screenshot("migration-notice")
    before = Experience.objects.get(pk=experience.pk)
    notice.get_by_role("link", name=f"Migrate to run #{new.pk}").click()

    expect(page.get_by_role("heading", name=f"Migrate Homepage hero to run #{new.pk}")).to_be_visible()
    trail = page.get_by_label(f"New segment for b{old.pk}.0")
    expect(trail).to_have_value(f"b{new.pk}.1")
    expect(page.locator("#mapping-table")).to_contain_text("80 % overlap")  # 16 ÷ (20 + 16 − 16)
    gifts = page.get_by_label(f"New segment for b{old.pk}.2")
    expect(gifts).to_have_value(f"b{new.pk}.2")
    screenshot("migration-proposal")
    # Viewing the proposal changed nothing.
    assert Experience.objects.get(pk=experience.pk).targeting == before.targeting

    gifts.select_option("")  # the marketer drops the gift buyers
    page.get_by_role("button", name="Confirm migration").click()

    expect(page.locator(".messages")).to_contain_text(f"now uses run #{new.pk}")
    expect(page.locator("#migration-notice")).to_have_count(0)
    expect(page.locator("dl.facts")).to_contain_text(f"in segment Trail runners (new) (b{new.pk}.1)")
    expect(page.locator("body")).to_contain_text(
        f"migrated to clustering run #{new.pk}: b{old.pk}.0 → b{new.pk}.1, b{old.pk}.2 dropped"
    )
    screenshot("migration-done")
    after = Experience.objects.get(pk=experience.pk)
    assert after.targeting == {"segments": [f"b{new.pk}.1"]} and after.version == before.version + 1

    page.goto("/experiences/hero/edit")
    picker = page.locator("#segment-picker-field")
    expect(picker).to_contain_text(f"Clustering run #{new.pk} (newest)")
    expect(page.get_by_role("checkbox", name=re.compile(rf"b{new.pk}\.1\b"))).to_be_checked()
    expect(page.get_by_role("checkbox", name=re.compile(rf"b{new.pk}\.0\b"))).not_to_be_checked()
    screenshot("experience-segment-picker")
    assert browser_log.console_errors == [] and browser_log.external_requests == []
